"""Unit tests of chatroom/codec/lines.py and chatroom/codec/native.py over plain bytes: framing, command parsing, event formatting.

No sockets: every rule of docs/protocol.md that the sans-I/O layer owns is checked here.
"""

import pytest

from chatroom.codec import native
from chatroom.codec.lines import LineFramer, LineTooLong, NoLineEnd
from chatroom.codec.native import (
    Command,
    Event,
    ProtocolError,
    format_command,
    parse_command,
    parse_event,
)

#: Line limit of the framers in the splitting tests: small, so that overlong lines, lines of
#: exactly the limit and lines one over it all fit in a stream short enough to split everywhere.
SMALL_MAX = 16
#: Bytes without a line end a server stream tolerates: "more than 64 KiB" (docs/protocol.md).
#: Spelled out, not imported: the documented number is what is tested.
NO_LINE_END_LIMIT = 64 * 1024


def feed_all(framer, chunks):
    """Feed ``chunks`` in order; returns every emitted item, checking the memory bound at each step."""
    out = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
        assert framer.buffered <= framer.max_line + 1
    return out


def pieces(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def code_of(line):
    with pytest.raises(ProtocolError) as info:
        parse_command(line)
    return info.value.code


# -- commands ------------------------------------------------------------------------------------

COMMAND_CASES = [
    (b"SEND hi", Command("SEND", ("hi",))),
    (b"SEND Hello, Server!", Command("SEND", ("Hello, Server!",))),
    (b"SEND  two  spaces ", Command("SEND", (" two  spaces ",))),
    ("SEND h\u00e9llo \u4e16\u754c \U0001f600".encode(), Command("SEND", ("h\u00e9llo \u4e16\u754c \U0001f600",))),
    (b"TELL ann see you at 5", Command("TELL", ("ann", "see you at 5"))),
    (b"TELL 127.0.0.1:54321 hi", Command("TELL", ("127.0.0.1:54321", "hi"))),
    (b"NICK ann", Command("NICK", ("ann",))),
    (b"NICK  ann ", Command("NICK", ("ann",))),
    (b"JOIN dev", Command("JOIN", ("dev",))),
    (b"WHO", Command("WHO")),
    (b"ROOMS", Command("ROOMS")),
    (b"PING", Command("PING")),
    (b"PING 42", Command("PING", ("42",))),
    (b"PONG", Command("PONG")),
    (b"PONG 1732571234", Command("PONG", ("1732571234",))),
    (b"QUIT", Command("QUIT")),
    (b"QUIT gone fishing", Command("QUIT", ("gone fishing",))),
]


@pytest.mark.parametrize("line,expected", COMMAND_CASES, ids=lambda v: repr(v)[:40])
def test_every_command_parses(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize("name,args", [
    ("SEND", ("Hello, Server!",)),
    ("SEND", ("caf\u00e9 \u2603",)),
    ("TELL", ("ann", "see you at 5")),
    ("TELL", ("[::1]:5000", "hi there")),
    ("NICK", ("Ann_1-x",)),
    ("JOIN", ("dev",)),
    ("WHO", ()),
    ("ROOMS", ()),
    ("PING", ()),
    ("PING", ("42",)),
    ("PONG", ()),
    ("PONG", ("tok",)),
    ("QUIT", ()),
    ("QUIT", ("gone fishing",)),
])
def test_format_command_round_trips(name, args):
    data = format_command(name, *args)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    lines = LineFramer().feed(data)
    assert lines == [data[:-1]]
    assert parse_command(lines[0]) == Command(name, args)


def test_format_command_matches_docs_example():
    assert format_command("SEND", "hi") == b"SEND hi\n"


@pytest.mark.parametrize("line", [b"SEND", b"SEND ", b"TELL", b"TELL ", b"TELL ann", b"TELL ann ",
                                  b"TELL  hi", b"NICK", b"NICK ", b"NICK   ", b"JOIN", b"JOIN  "])
def test_missing_argument(line):
    assert code_of(line) == "missing-argument"


@pytest.mark.parametrize("line", [b"", b" SEND hi", b"HELLO", b"FOO bar", b"SEND\thi", b"\x1b[2J"])
def test_unknown_command(line):
    assert code_of(line) == "unknown-command"


def test_empty_line_is_unknown_command():
    with pytest.raises(ProtocolError) as info:
        parse_command(b"")
    assert info.value.code == "unknown-command"
    assert info.value.to_bytes().startswith(b"ERR unknown-command ")


@pytest.mark.parametrize("line,word", [(b"send hi", "send"), (b"Send hi", "Send"),
                                       (b"quit", "quit"), (b"who", "who"), (b"tell ann hi", "tell")])
def test_lowercase_command_gets_case_sensitive_hint(line, word):
    with pytest.raises(ProtocolError) as info:
        parse_command(line)
    assert info.value.code == "unknown-command"
    assert info.value.text == f"unknown command '{word}' (commands are case-sensitive)"


def test_docs_session_error_line_is_exact():
    with pytest.raises(ProtocolError) as info:
        parse_command(b"send hi")
    assert info.value.to_bytes() == b"ERR unknown-command unknown command 'send' (commands are case-sensitive)\n"


def test_unknown_command_has_no_hint_and_is_not_echoed_raw():
    with pytest.raises(ProtocolError) as info:
        parse_command(b"FROB\x1b[31m x")
    assert "case-sensitive" not in info.value.text
    assert "\x1b" not in info.value.text
    with pytest.raises(ProtocolError) as info:
        parse_command(b"X" * 5000)
    assert len(info.value.text) < 100  # the echoed word is cut short


@pytest.mark.parametrize("line", [b"SEND \xff", b"SEND \xc3", b"SEND \xc0\xaf", b"SEND \xed\xa0\x80",
                                  b"\xfe\xff", b"TELL ann \x80", b"NICK \xe9"])
def test_invalid_utf8(line):
    assert code_of(line) == "invalid-utf8"


BAD_TEXTS = [
    "\x1b[31mred",  # ANSI colour: an escape sequence
    "\x1b]0;title\x07",  # OSC: set the terminal title
    "a\x00b",  # NUL
    "bell\x07",  # BEL
    "back\x08space",  # BS
    "a\rb",  # a bare CR inside the line
    "a\x7fb",  # DEL
    "c1 \x9b31m",  # C1 CSI
    "c1 \x85",  # C1 NEL
    "\u202eevil",  # RIGHT-TO-LEFT OVERRIDE
    "\u202aembed",  # LEFT-TO-RIGHT EMBEDDING
    "\u2066isolate",  # LEFT-TO-RIGHT ISOLATE
    "\u2069pop",  # POP DIRECTIONAL ISOLATE
]


@pytest.mark.parametrize("text", BAD_TEXTS, ids=repr)
@pytest.mark.parametrize("template", ["SEND {}", "TELL ann {}"])
def test_control_characters_in_text_are_bad_text(template, text):
    assert code_of(template.format(text).encode()) == "bad-text"


@pytest.mark.parametrize("command", ["SEND", "TELL ann"])
def test_tab_in_text_is_bad_text(command):
    # The code treats TAB like every other C0 control character: refused, never relayed.
    assert code_of(f"{command} a\tb".encode()) == "bad-text"


@pytest.mark.parametrize("text", ["plain", "caf\u00e9", "\u4e16\u754c", "\U0001f600 emoji",
                                  "\u00a0nbsp", "\u200bzero width", "arrows \u2190\u2192", "  spaces  "])
def test_printable_text_is_accepted(text):
    assert parse_command(f"SEND {text}".encode()).args == (text,)
    assert native.check_text(text) == text


@pytest.mark.parametrize("command", ["PING", "PONG", "QUIT"])
def test_optional_argument_is_checked_too(command):
    assert code_of(f"{command} \x1b[2J".encode()) == "bad-text"


# -- names ---------------------------------------------------------------------------------------

VALID_NAMES = ["a", "Z", "0", "_", "ann", "Ann_1", "a-b", "_-_", "x" * 32, "A" * 31 + "-"]
INVALID_NAMES = ["-ann", "-", "x" * 33, "an n", "ann!", "a.b", "a:b", "\u00e9", "\u0430nn",
                 "a\tb", "ann\x1b", "#dev", "a/b"]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name):
    assert parse_command(f"NICK {name}".encode()) == Command("NICK", (name,))
    assert parse_command(f"JOIN {name}".encode()) == Command("JOIN", (name,))


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names(name):
    assert code_of(f"NICK {name}".encode()) == "nick-invalid"
    assert code_of(f"JOIN {name}".encode()) == "room-invalid"


def test_name_length_boundary():
    assert native.check_name("n" * 32, "nickname") == "n" * 32
    with pytest.raises(ProtocolError):
        native.check_name("n" * 33, "nickname")


# -- events --------------------------------------------------------------------------------------

#: Each event as the server formats it, the line that must come out, spelled out (the
#: protocol's wire text is pinned here, never taken from the code), and what it parses back to.
EVENT_CASES = [
    (native.format_hello("127.0.0.1:54321"), b"HELLO 127.0.0.1:54321 chatroom/1.0\n",
     Event("HELLO", ("127.0.0.1:54321", "chatroom/1.0"))),
    (native.format_hello("[::1]:54321"), b"HELLO [::1]:54321 chatroom/1.0\n",
     Event("HELLO", ("[::1]:54321", "chatroom/1.0"))),
    (native.format_msg("lobby", "127.0.0.1:54321", "Hello, Server!"),
     b"MSG lobby 127.0.0.1:54321 Hello, Server!\n",
     Event("MSG", ("lobby", "127.0.0.1:54321", "Hello, Server!"))),
    (native.format_msg("dev", "ann", "  lead and trail  "), b"MSG dev ann   lead and trail  \n",
     Event("MSG", ("dev", "ann", "  lead and trail  "))),
    (native.format_msg("dev", "ann", "caf\u00e9 \U0001f600"), "MSG dev ann caf\u00e9 \U0001f600\n".encode(),
     Event("MSG", ("dev", "ann", "caf\u00e9 \U0001f600"))),
    (native.format_tell("bob", "see you at 5"), b"TELL bob see you at 5\n",
     Event("TELL", ("bob", "see you at 5"))),
    (native.format_join("dev", "ann"), b"JOIN dev ann\n", Event("JOIN", ("dev", "ann"))),
    (native.format_part("lobby", "bob"), b"PART lobby bob\n", Event("PART", ("lobby", "bob"))),
    (native.format_part("lobby", "bob", "join"), b"PART lobby bob join\n",
     Event("PART", ("lobby", "bob", "join"))),
    (native.format_part("lobby", "bob", "quit: gone fishing"), b"PART lobby bob quit: gone fishing\n",
     Event("PART", ("lobby", "bob", "quit: gone fishing"))),
    (native.format_nick("127.0.0.1:54321", "ann"), b"NICK 127.0.0.1:54321 ann\n",
     Event("NICK", ("127.0.0.1:54321", "ann"))),
    (native.format_who("lobby", ["ann", "127.0.0.1:54400"]), b"WHO lobby ann 127.0.0.1:54400\n",
     Event("WHO", ("lobby", "ann", "127.0.0.1:54400"))),
    (native.format_who("dev", ["ann"]), b"WHO dev ann\n", Event("WHO", ("dev", "ann"))),
    (native.format_rooms([("lobby", 2), ("dev", 1)]), b"ROOMS lobby:2 dev:1\n",
     Event("ROOMS", ("lobby:2", "dev:1"))),
    (native.format_ping("1732571234"), b"PING 1732571234\n", Event("PING", ("1732571234",))),
    (native.format_pong("42"), b"PONG 42\n", Event("PONG", ("42",))),
    (native.format_pong(), b"PONG\n", Event("PONG", ())),
    (native.format_err("nick-taken", "nickname 'ann' is in use"),
     b"ERR nick-taken nickname 'ann' is in use\n",
     Event("ERR", ("nick-taken", "nickname 'ann' is in use"))),
    (native.format_bye("server-shutdown"), b"BYE server-shutdown\n", Event("BYE", ("server-shutdown",))),
]


@pytest.mark.parametrize("data,wire,expected", EVENT_CASES, ids=lambda v: repr(v)[:40])
def test_every_event_is_formatted_as_documented_and_parses_back(data, wire, expected):
    assert data == wire
    line = wire[:-1]
    assert parse_event(line) == expected
    assert parse_event(line.decode()) == expected


def test_protocol_error_to_bytes():
    assert ProtocolError("bad-text", "no escapes").to_bytes() == b"ERR bad-text no escapes\n"


# -- framing -------------------------------------------------------------------------------------

def test_lf_and_crlf_lines():
    f = LineFramer()
    assert f.feed(b"SEND a\nSEND b\r\nSEND c\n") == [b"SEND a", b"SEND b", b"SEND c"]
    assert f.buffered == 0


def test_cr_is_stripped_only_at_the_end():
    f = LineFramer()
    assert f.feed(b"a\rb\n\rc\n\r\r\n\r\n") == [b"a\rb", b"\rc", b"\r", b""]
    assert f.feed(b"SEND hi\r") == []  # a CR is no line end
    assert f.feed(b"\n") == [b"SEND hi"]


def test_empty_lines_are_emitted_and_refused_by_the_parser():
    assert LineFramer().feed(b"\n\r\n") == [b"", b""]
    assert code_of(b"") == "unknown-command"


def test_partial_line_waits_for_its_end():
    f = LineFramer()
    assert f.feed(b"SEND hel") == []
    assert f.buffered == len(b"SEND hel")
    assert f.feed(b"lo\nSEND x") == [b"SEND hello"]
    assert f.buffered == len(b"SEND x")


def test_eof_mid_line_returns_cut_size_and_emits_nothing():
    f = LineFramer()
    assert f.feed(b"SEND one\nSEND half") == [b"SEND one"]
    assert f.eof() == len(b"SEND half")
    assert f.buffered == 0
    assert f.eof() == 0


def test_eof_during_overlong_line_counts_discarded_bytes():
    f = LineFramer(max_line=10)
    assert f.feed(b"x" * 50) == []
    assert f.eof() == 50
    assert f.buffered == 0


def test_eof_at_line_boundary_is_zero():
    f = LineFramer()
    f.feed(b"SEND a\n")
    assert f.eof() == 0


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineFramer(0)


def test_line_of_exactly_max_line_passes_and_one_more_is_too_long():
    f = LineFramer(max_line=SMALL_MAX)
    ok, over = b"a" * SMALL_MAX, b"b" * (SMALL_MAX + 1)
    assert f.feed(ok + b"\n" + ok + b"\r\n" + over + b"\n" + ok + b"\n") == [ok, ok, LineTooLong(SMALL_MAX + 1), ok]


def test_line_of_exactly_max_line_with_crlf_in_single_bytes():
    f = LineFramer(max_line=SMALL_MAX)
    ok = b"a" * SMALL_MAX
    assert feed_all(f, pieces(ok + b"\r\n", 1)) == [ok]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100, 4096, 10**6])
def test_overlong_line_then_next_line_parses(chunk):
    f = LineFramer(max_line=100)
    data = b"x" * 1000 + b"\nSEND after\n"
    out = feed_all(f, pieces(data, chunk))
    assert len(out) == 2
    assert isinstance(out[0], LineTooLong)
    assert parse_command(out[1]) == Command("SEND", ("after",))
    assert f.buffered == 0


def test_overlong_line_memory_stays_bounded_under_a_stream_of_pieces():
    f = LineFramer(max_line=64)
    for _ in range(500):
        assert f.feed(b"y" * 37) == []
        assert f.buffered <= 65
    assert f.feed(b"z\nPING 1\n") == [LineTooLong(500 * 37 + 1), b"PING 1"]


# A stream with every kind of frame: short, empty, CRLF, exactly the limit (with and without CR),
# one over, far over, a CR inside, multi-byte UTF-8 (so some splits fall inside a character).
STREAM_LINES = [
    b"SEND hi",
    b"",
    b"SEND crlf\r",
    b"\r",
    b"a" * SMALL_MAX,
    b"b" * SMALL_MAX + b"\r",
    b"c" * (SMALL_MAX + 1),
    b"d" * (SMALL_MAX + 1) + b"\r",
    b"e" * (SMALL_MAX + 2),
    b"f" * 60,
    b"g" * 60 + b"\r",
    b"x\ry",
    "SEND \u4e16\u754c".encode(),
    b"SEND after",
    b"PING",
]
STREAM = b"\n".join(STREAM_LINES) + b"\n"


def kinds(items):
    """Items with each LineTooLong replaced by its type: what the server acts on."""
    return [LineTooLong if isinstance(x, LineTooLong) else x for x in items]


def whole():
    return LineFramer(max_line=SMALL_MAX).feed(STREAM)


def test_stream_whole_gives_expected_lines():
    assert kinds(whole()) == [
        b"SEND hi", b"", b"SEND crlf", b"", b"a" * SMALL_MAX, b"b" * SMALL_MAX, LineTooLong,
        LineTooLong, LineTooLong, LineTooLong, LineTooLong, b"x\ry", "SEND \u4e16\u754c".encode(),
        b"SEND after", b"PING",
    ]


@pytest.mark.parametrize("offset", range(len(STREAM) + 1))
def test_stream_split_at_every_offset(offset):
    f = LineFramer(max_line=SMALL_MAX)
    assert kinds(feed_all(f, [STREAM[:offset], STREAM[offset:]])) == kinds(whole())
    assert f.buffered == 0


def test_stream_split_at_every_pair_of_offsets():
    expected = kinds(whole())
    n = len(STREAM)
    for i in range(n + 1):
        for j in range(i, n + 1):
            f = LineFramer(max_line=SMALL_MAX)
            got = kinds(feed_all(f, [STREAM[:i], STREAM[i:j], STREAM[j:]]))
            assert got == expected, (i, j)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17])
def test_stream_fed_in_small_pieces(size):
    f = LineFramer(max_line=SMALL_MAX)
    assert kinds(feed_all(f, pieces(STREAM, size))) == kinds(whole())


def test_stream_repeated_many_times_in_odd_chunks():
    expected = kinds(whole()) * 200
    f = LineFramer(max_line=SMALL_MAX)
    assert kinds(feed_all(f, pieces(STREAM * 200, 97))) == expected


def test_line_too_long_size_does_not_depend_on_how_the_stream_is_split():
    """The size reported for an overlong line is the same whichever way its bytes arrive."""
    expected = whole()
    one_byte = feed_all(LineFramer(max_line=SMALL_MAX), pieces(STREAM, 1))
    assert one_byte == expected


# -- no line end ---------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [NO_LINE_END_LIMIT + 1, 65536, 4096, 1000, 7])
def test_no_line_end_after_64k(chunk):
    f = LineFramer()
    data = b"\x16\x03\x01" + b"\x00" * (NO_LINE_END_LIMIT + 10)  # TLS-hello-like junk
    out = []
    for piece in pieces(data, chunk):
        out.extend(f.feed(piece))
        assert f.buffered <= f.max_line + 1
        if f.closed:
            break
    assert len(out) == 1 and isinstance(out[0], NoLineEnd)
    assert out[0].size > NO_LINE_END_LIMIT
    assert f.closed
    # Everything after is ignored, lines included.
    assert f.feed(b"\nSEND hi\n") == []
    assert f.feed(b"SEND again\n") == []


def test_exactly_64k_without_line_end_is_still_allowed():
    f = LineFramer()
    assert f.feed(b"z" * NO_LINE_END_LIMIT) == []
    assert not f.closed
    assert f.feed(b"\nPING\n") == [LineTooLong(NO_LINE_END_LIMIT), b"PING"]


def test_no_line_end_counts_from_the_last_line_end():
    f = LineFramer()
    assert f.feed(b"PING\n" + b"z" * NO_LINE_END_LIMIT) == [b"PING"]
    assert not f.closed
    out = f.feed(b"z")
    assert len(out) == 1 and isinstance(out[0], NoLineEnd)


def test_no_line_end_with_large_max_line():
    f = LineFramer(max_line=10 * NO_LINE_END_LIMIT)
    out = feed_all(f, pieces(b"q" * (NO_LINE_END_LIMIT + 1), 1000))
    assert len(out) == 1 and isinstance(out[0], NoLineEnd)
    assert f.buffered == 0


@pytest.mark.parametrize("chunk", [NO_LINE_END_LIMIT + 100, 40000, 1000, 7, 1])
def test_no_line_end_does_not_depend_on_how_the_stream_is_split(chunk):
    """More than 64 KiB without a line end closes the stream even if the line end comes in the same read."""
    data = b"j" * (NO_LINE_END_LIMIT + 50) + b"\nSEND hi\n"
    f = LineFramer()
    out = []
    for piece in pieces(data, chunk):
        out.extend(f.feed(piece))
    assert len(out) == 1 and isinstance(out[0], NoLineEnd)
    assert f.closed


def test_framer_without_a_no_line_end_limit_skips_giant_lines_and_goes_on():
    """A client's framer (no_line_end_limit=None) never gives up: a giant line is one LineTooLong."""
    f = LineFramer(max_line=100, no_line_end_limit=None)
    out = []
    for _ in range(50):  # 50 x 4 KiB: far past the 64 KiB a server would tolerate
        out += f.feed(b"g" * 4096)
        assert f.buffered == 0 and f.unterminated > 0
    out += f.feed(b"\nSEND after\n")
    assert out == [LineTooLong(50 * 4096), b"SEND after"]
    assert not f.closed and f.unterminated == 0
    f.feed(b"half")
    assert f.unterminated == 4 and f.buffered == 4

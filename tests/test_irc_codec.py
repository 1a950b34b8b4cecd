"""Unit and property tests of chatroom/codec/irc.py over plain bytes: framing, parsing, formatting,
tag escaping, server-time, the text rules and the name mappings.

Expected wire bytes are written out literally, never built from the module's constants.
"""

import socket
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatroom.codec import irc, native, text
from chatroom.codec.irc import IrcError, IrcFramer, Message, format_message, parse
from chatroom.codec.lines import LineTooLong, NoLineEnd

EXAMPLES = 200
PROPERTY = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])

#: The formatting codes and CTCP's \x01, written out here rather than taken from the module.
FORMATTING = ["\x01", "\x02", "\x03", "\x0f", "\x11", "\x16", "\x1d", "\x1e", "\x1f"]


def error_code(line):
    with pytest.raises(IrcError) as info:
        parse(line)
    return info.value.code


# -- parsing: the ircdocs parser-tests vectors (msg-split.yaml, CC0) -----------------------------
# (input, tags, source, command, params); commands come out upper-cased.

SPLIT_CASES = [
    (b"foo bar baz asdf", {}, None, "FOO", ["bar", "baz", "asdf"]),
    (b":coolguy foo bar baz asdf", {}, "coolguy", "FOO", ["bar", "baz", "asdf"]),
    (b"foo bar baz :asdf quux", {}, None, "FOO", ["bar", "baz", "asdf quux"]),
    (b"foo bar baz :", {}, None, "FOO", ["bar", "baz", ""]),
    (b"foo bar baz ::asdf", {}, None, "FOO", ["bar", "baz", ":asdf"]),
    (b":coolguy foo bar baz :asdf quux", {}, "coolguy", "FOO", ["bar", "baz", "asdf quux"]),
    (b":coolguy foo bar baz :  asdf quux ", {}, "coolguy", "FOO", ["bar", "baz", "  asdf quux "]),
    (b":coolguy PRIVMSG bar :lol :) ", {}, "coolguy", "PRIVMSG", ["bar", "lol :) "]),
    (b":coolguy foo bar baz :", {}, "coolguy", "FOO", ["bar", "baz", ""]),
    (b":coolguy foo bar baz :  ", {}, "coolguy", "FOO", ["bar", "baz", "  "]),
    (b"@a=b;c=32;k;rt=ql7 foo", {"a": "b", "c": "32", "k": "", "rt": "ql7"}, None, "FOO", []),
    (b"@a=b\\\\and\\nk;c=72\\s45;d=gh\\:764 foo", {"a": "b\\and\nk", "c": "72 45", "d": "gh;764"},
     None, "FOO", []),
    (b"@c;h=;a=b :quux ab cd", {"c": "", "h": "", "a": "b"}, "quux", "AB", ["cd"]),
    (b":src JOIN #chan", {}, "src", "JOIN", ["#chan"]),
    (b":src JOIN :#chan", {}, "src", "JOIN", ["#chan"]),
    (b":src AWAY", {}, "src", "AWAY", []),
    (b":src AWAY ", {}, "src", "AWAY", []),
    (b":cool\tguy foo bar baz", {}, "cool\tguy", "FOO", ["bar", "baz"]),
    (b":coolguy!ag@net\x035w\x03ork.admin PRIVMSG foo :bar baz", {}, "coolguy!ag@net\x035w\x03ork.admin",
     "PRIVMSG", ["foo", "bar baz"]),
    (b":coolguy!~ag@n\x02et\x0305w\x0fork.admin PRIVMSG foo :bar baz", {},
     "coolguy!~ag@n\x02et\x0305w\x0fork.admin", "PRIVMSG", ["foo", "bar baz"]),
    (b"@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4= :irc.example.com COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""}, "irc.example.com",
     "COMMAND", ["param1", "param2", "param3 param3"]),
    (b":irc.example.com COMMAND param1 param2 :param3 param3", {}, "irc.example.com", "COMMAND",
     ["param1", "param2", "param3 param3"]),
    (b"@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4 COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""}, None, "COMMAND",
     ["param1", "param2", "param3 param3"]),
    (b"COMMAND", {}, None, "COMMAND", []),
    (b"@foo=\\\\\\\\\\:\\\\s\\s\\r\\n COMMAND", {"foo": "\\\\;\\s \r\n"}, None, "COMMAND", []),
    (b":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters", {}, "gravel.mozilla.org",
     "432", ["#momo", "Erroneous Nickname: Illegal characters"]),
    (b":gravel.mozilla.org MODE #tckk +n ", {}, "gravel.mozilla.org", "MODE", ["#tckk", "+n"]),
    (b":services.esper.net MODE #foo-bar +o foobar  ", {}, "services.esper.net", "MODE",
     ["#foo-bar", "+o", "foobar"]),
    (b"@tag1=value\\\\ntest COMMAND", {"tag1": "value\\ntest"}, None, "COMMAND", []),
    (b"@tag1=value\\1 COMMAND", {"tag1": "value1"}, None, "COMMAND", []),
    (b"@tag1=value1\\ COMMAND", {"tag1": "value1"}, None, "COMMAND", []),
    (b"@tag1=1;tag2=3;tag3=4;tag1=5 COMMAND", {"tag1": "5", "tag2": "3", "tag3": "4"}, None, "COMMAND", []),
    (b"@tag1=1;tag2=3;tag3=4;tag1=5;vendor/tag2=8 COMMAND",
     {"tag1": "5", "tag2": "3", "tag3": "4", "vendor/tag2": "8"}, None, "COMMAND", []),
    (b":SomeOp MODE #channel :+i", {}, "SomeOp", "MODE", ["#channel", "+i"]),
    (b":SomeOp MODE #channel +oo SomeUser :AnotherUser", {}, "SomeOp", "MODE",
     ["#channel", "+oo", "SomeUser", "AnotherUser"]),
]


@pytest.mark.parametrize("line,tags,source,command,params", SPLIT_CASES, ids=lambda v: repr(v)[:40])
def test_ircdocs_vectors_parse(line, tags, source, command, params):
    msg = parse(line)
    assert msg == Message(tags, source, command, params)
    assert (msg.tags, msg.source, msg.command, msg.params) == (tags, source, command, params)


@pytest.mark.parametrize("line", [case[0] for case in SPLIT_CASES], ids=lambda v: repr(v)[:40])
def test_ircdocs_vectors_survive_format_and_parse_again(line):
    msg = parse(line)
    again = format_message(msg.command, *msg.params, source=msg.source, tags=msg.tags)
    assert again.endswith(b"\r\n")
    assert parse(again[:-2]) == msg


@pytest.mark.parametrize("line,expected", [
    (b"privmsg #dev :hi", Message({}, None, "PRIVMSG", ["#dev", "hi"])),
    (b"PRIVMSG #dev :\x01ACTION waves\x01", Message({}, None, "PRIVMSG", ["#dev", "\x01ACTION waves\x01"])),
    ("PRIVMSG ann :caf\u00e9 \U0001f600".encode(), Message({}, None, "PRIVMSG", ["ann", "caf\u00e9 \U0001f600"])),
    (b"@+typing=active TAGMSG #dev", Message({"+typing": "active"}, None, "TAGMSG", ["#dev"])),
    (b"@+example.com/x=1 TAGMSG #dev", Message({"+example.com/x": "1"}, None, "TAGMSG", ["#dev"])),
    (b"@a;;b; PING", Message({"a": "", "b": ""}, None, "PING", [])),
    (b"@ PING x", Message({}, None, "PING", ["x"])),
    (b"@a=1   :src   PING   x", Message({"a": "1"}, "src", "PING", ["x"])),
    (b"001 ann :Welcome", Message({}, None, "001", ["ann", "Welcome"])),
    (b"PING ::", Message({}, None, "PING", [":"])),
    (b"PING a:b", Message({}, None, "PING", ["a:b"])),
    (b"PING \x1b[2J", Message({}, None, "PING", ["\x1b[2J"])),  # text rules are the caller's, per parameter
])
def test_parse_more_shapes(line, expected):
    assert parse(line) == expected


def test_parse_returns_fresh_containers():
    a, b = parse(b"PING"), parse(b"PING")
    a.tags["x"] = "1"
    a.params.append("y")
    assert b == Message({}, None, "PING", [])


# -- parameters: at most 15, the rest of the line in the 15th (RFC 2812) -------------------------

FOURTEEN = " ".join(str(n) for n in range(1, 15))


@pytest.mark.parametrize("rest,last", [
    ("fifteen", "fifteen"),
    ("15 16 17", "15 16 17"),
    ("a  b  ", "a  b  "),
    ("   spaced out", "spaced out"),
    (":trail ing", "trail ing"),
    ("::x", ":x"),
    ("x :y", "x :y"),
])
def test_fifteenth_parameter_takes_the_rest_of_the_line(rest, last):
    msg = parse(f"CMD {FOURTEEN} {rest}".encode())
    assert msg.params == [str(n) for n in range(1, 15)] + [last]


def test_fourteen_parameters_and_trailing_spaces_make_no_fifteenth():
    assert parse(f"CMD {FOURTEEN}    ".encode()).params == [str(n) for n in range(1, 15)]


def test_trailing_before_fifteen_ends_the_params():
    assert parse(b"CMD 1 2 :3 4 5").params == ["1", "2", "3 4 5"]


# -- parse errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [b"PRIVMSG #dev :\xff", b"PRIVMSG #dev :\xc3", b"\xc0\xaf",
                                  b"PRIVMSG \xed\xa0\x80 x", b"@a=\xe9 PING", b":\x80 PING"])
def test_invalid_utf8(line):
    assert error_code(line) == "INVALID_UTF8"


@pytest.mark.parametrize("line", [b"PRIVMSG #dev :a\x00b", b"\x00", b"PING a\rb", b"PING a\nb",
                                  b"@a=\x00 PING"])
def test_nul_cr_lf_inside_a_line(line):
    assert error_code(line) == "BAD_CHAR"


@pytest.mark.parametrize("line", [b"", b" ", b"   PING", b"@a=b", b"@a=b ", b"@a=b    ", b":src",
                                  b":src ", b"@a :src  "])
def test_no_command(line):
    assert error_code(line) == "NO_COMMAND"


@pytest.mark.parametrize("line,word", [(b"PRIV-MSG x", "PRIV-MSG"), (b"12 x", "12"), (b"1234", "1234"),
                                       (b"P1NG", "P1NG"), ("PR\u00cdVMSG x".encode(), "PR\u00cdVMSG"),
                                       (b"PING\tx", "PING\tx"), (b":src @a PING", "@a")])
def test_bad_command_keeps_the_word_for_an_unknown_command_reply(line, word):
    with pytest.raises(IrcError) as info:
        parse(line)
    assert info.value.code == "BAD_COMMAND"
    assert info.value.command == word


@pytest.mark.parametrize("line", [b"@=x PING", b"@a!b=c PING", b"@+ PING", b"@/a PING", b"@a/ PING",
                                  b"@a_b=1 PING", b"@a=1;=2 PING", b"@++a PING", "@\u00e9=1 PING".encode()])
def test_bad_tag_key(line):
    assert error_code(line) == "BAD_TAG"


@pytest.mark.parametrize("line", [b": PING", b":  PING", b"@a=1 : PING"])
def test_empty_source(line):
    assert error_code(line) == "BAD_SOURCE"


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.binary(max_size=120))
def test_parse_raises_only_irc_error(line):
    try:
        msg = parse(line)
    except IrcError as err:
        assert err.code in ("BAD_CHAR", "INVALID_UTF8", "BAD_TAG", "BAD_SOURCE", "NO_COMMAND", "BAD_COMMAND")
    else:
        assert msg.command and msg.command == msg.command.upper() and len(msg.params) <= 15


# -- tag escaping --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,value", [
    ("plain", "plain"),
    ("", ""),
    ("a\\:b", "a;b"),
    ("a\\sb", "a b"),
    ("a\\\\b", "a\\b"),
    ("a\\rb\\nc", "a\rb\nc"),
    ("\\\\n", "\\n"),  # char at a time: an escaped backslash, then a plain n
    ("a\\bc", "abc"),  # a backslash before anything else is dropped
    ("end\\", "end"),  # and so is a final one
    ("\\", ""),
    ("\\\\\\", "\\"),
    ("caf\u00e9\\s\u2603", "caf\u00e9 \u2603"),
])
def test_unescape_tag_value(raw, value):
    assert irc.unescape_tag_value(raw) == value


@pytest.mark.parametrize("value,raw", [
    ("plain", "plain"),
    ("a;b c", "a\\:b\\sc"),
    ("back\\slash", "back\\\\slash"),
    ("two\r\nlines", "two\\r\\nlines"),
    ("\\s", "\\\\s"),
    ("=", "="),
])
def test_escape_tag_value(value, raw):
    assert irc.escape_tag_value(value) == raw


@PROPERTY
@given(st.text(max_size=40))
def test_escaping_round_trips(value):
    raw = irc.escape_tag_value(value)
    assert not any(c in raw for c in " ;\r\n")
    assert irc.unescape_tag_value(raw) == value


# -- formatting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,wire", [
    (("001", "ann", "Welcome to chatroom"), {"source": "srv"}, b":srv 001 ann :Welcome to chatroom\r\n"),
    (("001", "ann", "Welcome"), {"source": "srv"}, b":srv 001 ann Welcome\r\n"),
    (("PRIVMSG", "#dev", "hi there"), {"source": "ann!ann@chatroom"}, b":ann!ann@chatroom PRIVMSG #dev :hi there\r\n"),
    (("PING",), {}, b"PING\r\n"),
    (("PONG", "srv", ""), {}, b"PONG srv :\r\n"),
    (("PRIVMSG", "#dev", ":)"), {}, b"PRIVMSG #dev ::)\r\n"),
    (("PRIVMSG", "#dev", "a:b"), {}, b"PRIVMSG #dev a:b\r\n"),
    (("PRIVMSG", "#dev", " lead"), {}, b"PRIVMSG #dev : lead\r\n"),
    (("PRIVMSG", "#dev", "caf\u00e9"), {}, "PRIVMSG #dev caf\u00e9\r\n".encode()),
    (("353", "ann", "=", "#dev", "ann bob"), {"source": "srv"}, b":srv 353 ann = #dev :ann bob\r\n"),
    (("privmsg", "x", "y"), {}, b"privmsg x y\r\n"),
    (("PRIVMSG", "#dev", "hi"), {"source": "ann", "tags": {"time": "2026-11-29T05:46:57.123Z"}},
     b"@time=2026-11-29T05:46:57.123Z :ann PRIVMSG #dev hi\r\n"),
    (("TAGMSG", "#dev"), {"tags": {"+typing": "active", "msgid": ""}}, b"@+typing=active;msgid TAGMSG #dev\r\n"),
    (("PING", "x"), {"tags": {"a": "1 2;3\\4\r\n"}}, b"@a=1\\s2\\:3\\\\4\\r\\n PING x\r\n"),
    (("PING", "x"), {"tags": {}}, b"PING x\r\n"),
    (("PING", "x"), {"tags": {"+example.com/k": "v"}}, b"@+example.com/k=v PING x\r\n"),
])
def test_format_message(args, kwargs, wire):
    assert format_message(*args, **kwargs) == wire


@pytest.mark.parametrize("args,kwargs", [
    (("PRIVMSG", "", "x"), {}),  # only the last parameter may be empty...
    (("PRIVMSG", "#a b", "x"), {}),  # ... hold a space ...
    (("PRIVMSG", ":x", "x"), {}),  # ... or start with ':'
    (("PRIVMSG", "#dev", "a\rb"), {}),
    (("PRIVMSG", "#dev", "a\nb"), {}),
    (("PRIVMSG", "#dev", "a\x00b"), {}),
    (("PRIVMSG", "#d\nev", "x"), {}),
    (("PRIVMSG", "#dev", "x"), {"source": "a\rb"}),
    (("PRIVMSG", "#dev", "x"), {"source": ""}),
    (("PRIVMSG", "#dev", "x"), {"source": "a b"}),
    (("PRIVMSG", "#dev", "x"), {"tags": {"a": "\x00"}}),
    (("PRIVMSG", "#dev", "x"), {"tags": {"a b": "1"}}),
    (("PRIVMSG", "#dev", "x"), {"tags": {"a=b": "1"}}),
    (("PRIVMSG", "#dev", "x"), {"tags": {"": "1"}}),
    (("", "x"), {}),
    (("PRIV MSG", "x"), {}),
    (("PING\r\n", "x"), {}),
    (("12", "x"), {}),
    (("CMD", *"abcdefghijklmnop"), {}),  # 16 parameters
])
def test_format_message_refuses_what_cannot_be_sent(args, kwargs):
    with pytest.raises(ValueError):
        format_message(*args, **kwargs)


def test_fifteen_parameters_are_fine():
    assert format_message("CMD", *"abcdefghijklmno") == b"CMD a b c d e f g h i j k l m n o\r\n"


def chars(excluded):
    """Any character but ``excluded`` and lone surrogates (which cannot be encoded)."""
    return st.characters(blacklist_categories=("Cs",), blacklist_characters=excluded)


middle = st.text(chars(" \x00\r\n"), min_size=1, max_size=12).filter(lambda s: s[0] != ":")
trailing = st.text(chars("\x00\r\n"), max_size=30)
tag_keys = st.from_regex(r"\+?([a-z0-9.-]{1,8}/)?[A-Za-z0-9-]{1,8}", fullmatch=True)


@PROPERTY
@given(st.from_regex(r"[A-Z]{1,10}|[0-9]{3}", fullmatch=True), st.lists(middle, max_size=14),
       st.one_of(st.none(), trailing), st.one_of(st.none(), middle),
       st.dictionaries(tag_keys, st.text(chars("\x00"), max_size=12), max_size=4))
def test_formatted_messages_parse_back(command, middles, last, source, tags):
    params = middles + ([last] if last is not None else [])
    data = format_message(command, *params, source=source, tags=tags)
    assert data.endswith(b"\r\n") and data.count(b"\r") == 1 and data.count(b"\n") == 1
    assert b"\x00" not in data
    lines = IrcFramer(max_tags=10**5, max_body=10**5, no_line_end_limit=None).feed(data)
    assert lines == [data[:-2]]
    assert parse(lines[0]) == Message(tags, source, command, params)


# -- server-time ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds,stamp", [
    (0, "1970-01-01T00:00:00.000Z"),
    (1795931217.123, "2026-11-29T05:46:57.123Z"),
    (1795931217, "2026-11-29T05:46:57.000Z"),
    (1795931217.5, "2026-11-29T05:46:57.500Z"),
    (1795931217.001, "2026-11-29T05:46:57.001Z"),
    (1795931217.9996, "2026-11-29T05:46:58.000Z"),  # to the nearest millisecond
    (951782400.25, "2000-02-29T00:00:00.250Z"),
])
def test_format_time(seconds, stamp):
    assert irc.format_time(seconds) == stamp


def test_format_time_within_one_second_and_back_again():
    # Exercises the per-second cache: the same second, the next, and an earlier one again.
    assert irc.format_time(1795931217.010) == "2026-11-29T05:46:57.010Z"
    assert irc.format_time(1795931217.999) == "2026-11-29T05:46:57.999Z"
    assert irc.format_time(1795931218.000) == "2026-11-29T05:46:58.000Z"
    assert irc.format_time(1795931217.5) == "2026-11-29T05:46:57.500Z"
    assert irc.format_time(0.5) == "1970-01-01T00:00:00.500Z"


@PROPERTY
@given(st.lists(st.integers(0, 4102444800 * 1000), min_size=1, max_size=5))
def test_format_time_matches_datetime(stamps_ms):
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for ms in stamps_ms:
        expected = (epoch + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert irc.format_time(ms / 1000) == expected
        assert irc.format_time(ms // 1000) == expected[:-5] + ".000Z"


# -- framing -------------------------------------------------------------------------------------

def feed_all(framer, chunks):
    out = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
        assert framer.buffered <= framer.max_line + 1
    return out


def pieces(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def kinds(items):
    return [type(x) if isinstance(x, (LineTooLong, NoLineEnd)) else x for x in items]


def test_every_line_end():
    f = IrcFramer()
    assert f.feed(b"A 1\nA 2\r\nA 3\rA 4\n\rA 5\r\r\n\n") == [b"A 1", b"A 2", b"A 3", b"A 4", b"A 5"]
    assert f.buffered == 0


def test_empty_lines_are_skipped():
    assert IrcFramer().feed(b"\r\n\n\r\r\n\n") == []
    assert IrcFramer().feed(b"\r\nPING\r\n\r\n") == [b"PING"]


def test_cr_at_the_end_of_a_read_ends_the_line_at_once():
    f = IrcFramer()
    assert f.feed(b"PING 1\r") == [b"PING 1"]
    assert f.feed(b"\nPING 2\r") == [b"PING 2"]
    assert f.feed(b"\n") == []


def test_partial_line_waits_and_eof_counts_it():
    f = IrcFramer()
    assert f.feed(b"PRIVMSG #dev :hel") == []
    assert f.buffered == len(b"PRIVMSG #dev :hel")
    assert f.feed(b"lo\r\nPIN") == [b"PRIVMSG #dev :hello"]
    assert f.eof() == 3
    assert f.buffered == 0


def test_default_limits_and_max_line():
    f = IrcFramer()
    assert (f.max_tags, f.max_body, f.max_line) == (8191, 510, 8702)


@pytest.mark.parametrize("max_tags,max_body", [(0, 510), (8191, 0)])
def test_limits_must_be_positive(max_tags, max_body):
    with pytest.raises(ValueError):
        IrcFramer(max_tags, max_body)


def body(n):
    """A line of exactly ``n`` bytes without tags."""
    return b"PRIVMSG #dev :" + b"x" * (n - 14)


def tags(n):
    """A tag section of exactly ``n`` bytes, ``@`` included."""
    return b"@a=" + b"v" * (n - 3)


@pytest.mark.parametrize("line,ok", [
    (body(510), True),
    (body(511), False),
    (tags(8191) + b" " + body(510), True),
    (tags(8192) + b" " + body(10), False),
    (tags(8191) + b" " + body(511), False),
    (tags(20) + b" " + body(510), True),
    (tags(20) + b" " + body(511), False),
    (tags(8191), True),  # tags and no command: the parser's business, not the framer's
    (tags(8192), False),
    (tags(100) + b"  " + body(509), True),  # the extra space counts towards the body
    (tags(100) + b"  " + body(510), False),
    (b"PING @" + b"x" * 504, True),  # an '@' later on is no tag section
    (b"PING @" + b"x" * 505, False),
    (b"x" * 8800, False),  # over max_line: LineFramer's own limit
])
@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_exact_limits(line, ok, end):
    f = IrcFramer()
    out = feed_all(f, [b"PING a" + end + line + end + b"PING b" + end])
    assert out == [b"PING a", line if ok else LineTooLong(len(line)), b"PING b"]
    assert not f.closed


@pytest.mark.parametrize("chunk", [1, 7, 100, 511, 4096, 10**6])
def test_overlong_line_then_next_line_parses_and_memory_stays_bounded(chunk):
    f = IrcFramer()
    data = b"PRIVMSG #dev :" + b"y" * 20000 + b"\r\nPRIVMSG #dev :after\r\n"
    out = feed_all(f, pieces(data, chunk))
    assert out == [LineTooLong(20014), b"PRIVMSG #dev :after"]
    assert parse(out[1]) == Message({}, None, "PRIVMSG", ["#dev", "after"])
    assert f.buffered == 0


@pytest.mark.parametrize("chunk", [65537, 4096, 1000, 7])
def test_no_line_end_after_64k_closes(chunk):
    f = IrcFramer()
    out = []
    for piece in pieces(b"\x16\x03\x01" + b"\x00" * 65540, chunk):
        out.extend(f.feed(piece))
        assert f.buffered <= f.max_line + 1
    assert len(out) == 1 and isinstance(out[0], NoLineEnd) and out[0].size > 65536
    assert f.closed
    assert f.feed(b"\r\nPING\r\n") == []


def test_exactly_64k_without_line_end_is_one_long_line():
    f = IrcFramer()
    assert f.feed(b"z" * 65536) == []
    assert not f.closed
    assert f.feed(b"\rPING\r\n") == [LineTooLong(65536), b"PING"]


def test_a_bare_cr_resets_the_no_line_end_count():
    f = IrcFramer()
    out = feed_all(f, [b"z" * 40000 + b"\r" + b"z" * 40000 + b"\rPING\n"])
    assert out == [LineTooLong(40000), LineTooLong(40000), b"PING"]
    assert not f.closed


# A stream with every frame kind, for small limits (max_tags=8, max_body=10): each line end, empty
# lines, bodies and tag sections of exactly the limit and one over, multi-byte UTF-8.
SMALL = {"max_tags": 8, "max_body": 10}
STREAM = b"".join([
    b"PING 1\r\n", b"\r\n", b"PING 2\r", b"PING 3\n", b"\n\r",
    b"b" * 10 + b"\r\n",  # a body of exactly max_body
    b"c" * 11 + b"\n",  # one over
    b"@t=12345 " + b"d" * 10 + b"\r",  # tags and body both at their limits: max_line
    b"@t=123456 P\r\n",  # tag section one over
    b"@t=12 " + b"e" * 11 + b"\n",  # body one over after tags
    b"f" * 30 + b"\r\n",  # over max_line
    "P \u4e16\u754c".encode() + b"\r",
    b"@t=1 PING\n",
    b"PING last\r\n",
])
EXPECTED = [b"PING 1", b"PING 2", b"PING 3", b"b" * 10, LineTooLong, b"@t=12345 " + b"d" * 10,
            LineTooLong, LineTooLong, LineTooLong, "P \u4e16\u754c".encode(), b"@t=1 PING", b"PING last"]


def test_stream_whole():
    assert kinds(IrcFramer(**SMALL).feed(STREAM)) == EXPECTED


@pytest.mark.parametrize("offset", range(len(STREAM) + 1))
def test_stream_split_at_every_offset(offset):
    f = IrcFramer(**SMALL)
    assert kinds(feed_all(f, [STREAM[:offset], STREAM[offset:]])) == EXPECTED
    assert f.buffered == 0


def test_stream_split_at_every_pair_of_offsets():
    n = len(STREAM)
    for i in range(n + 1):
        for j in range(i, n + 1):
            got = kinds(feed_all(IrcFramer(**SMALL), [STREAM[:i], STREAM[i:j], STREAM[j:]]))
            assert got == EXPECTED, (i, j)


def test_stream_one_byte_at_a_time_gives_the_same_sizes():
    assert feed_all(IrcFramer(**SMALL), pieces(STREAM, 1)) == IrcFramer(**SMALL).feed(STREAM)


segment = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\r", b"@", b"@a=b ", b" ", b"PING x", b":src "]),
    st.builds(lambda n, b: b * n, st.integers(0, 40), st.sampled_from([b"x", b" ", b"@", b"\r"])),
    st.builds(lambda n: b"z" * n, st.integers(65534, 65538)),
)


def reference(data, max_tags, max_body):
    """The framer's output for ``data`` by the plain rules: ``(items, closed)``."""
    *lines, tail = data.replace(b"\r", b"\n").split(b"\n")
    out = []
    for line in lines:
        if len(line) > 65536:
            return out + [NoLineEnd], True
        if not line:
            continue
        if line.startswith(b"@"):
            section, _, rest = line.partition(b" ")
            too_long = len(section) > max_tags or len(rest) > max_body
        else:
            too_long = len(line) > max_body
        out.append(LineTooLong(len(line)) if too_long else line)
    if len(tail) > 65536:
        return out + [NoLineEnd], True
    return out, False


@PROPERTY
@given(st.lists(segment, max_size=25), st.lists(st.integers(0, 10**6), max_size=8),
       st.sampled_from([(1, 1), (3, 5), (8, 10), (40, 16), (8191, 510)]))
def test_framer_matches_the_reference_however_the_stream_is_split(segments, cuts, limits):
    data = b"".join(segments)
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    framer = IrcFramer(*limits)
    got = feed_all(framer, [data[a:b] for a, b in zip(bounds, bounds[1:])])
    expected, closed = reference(data, *limits)
    assert [NoLineEnd if isinstance(x, NoLineEnd) else x for x in got] == expected
    assert framer.closed == closed
    for line in got:
        if isinstance(line, bytes):
            try:
                parse(line)
            except IrcError:
                pass


# -- text ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", FORMATTING, ids=repr)
def test_every_formatting_code_is_allowed(code):
    assert irc.check_text(f"a{code}b") == f"a{code}b"


@pytest.mark.parametrize("sample", [
    "plain", "caf\u00e9 \U0001f600", "\x02bold\x02 \x1ditalic\x1d \x1funder\x1f \x1estrike\x1e \x11mono\x11",
    "\x0304,12red on blue\x03 \x0f reset \x16rev", "\x01ACTION waves\x01", "\x01VERSION\x01",
])
def test_irc_text_is_accepted(sample):
    assert irc.check_text(sample) == sample


@pytest.mark.parametrize("bad", [
    "\x1b[31mred", "a\x00b", "bell\x07", "tab\tx", "\x04ff0000hex colour", "a\x7fb", "c1 \x9b31m",
    "\x85", "\u202eevil", "\u202aembed", "\u2066isolate", "\u2069pop", "\x02ok\x02 then \x1b",
])
def test_other_control_characters_are_bad_text(bad):
    with pytest.raises(IrcError) as info:
        irc.check_text(bad)
    assert info.value.code == "BAD_TEXT"


def test_check_text_is_the_shared_rule_minus_the_formatting_codes():
    for cp in [*range(0x3000), *range(0xFE00, 0x10000)]:
        ch = chr(cp)
        refused = bool(text.BAD_TEXT_RE.search(ch)) and ch not in FORMATTING
        try:
            irc.check_text(f"x{ch}y")
        except IrcError:
            assert refused, hex(cp)
        else:
            assert not refused, hex(cp)


@pytest.mark.parametrize("irc_text,plain", [
    ("plain words", "plain words"),
    ("\x02bold\x02 and \x1ditalic\x1d", "bold and italic"),
    ("\x1funder\x1f\x1estrike\x1e\x11mono\x11\x16rev\x16\x0freset", "understrikemonorevreset"),
    ("\x034red", "red"),
    ("\x0304red", "red"),
    ("\x0304,12red on blue\x03 plain", "red on blue plain"),
    ("\x034,5x", "x"),
    ("\x03123", "3"),  # two digits at most
    ("\x0312,345", "5"),
    ("\x03,05x", ",05x"),  # no foreground: the comma is text
    ("\x0304,x", ",x"),  # a comma without a background digit is text
    ("\x03", ""),
    ("1\x03 2", "1 2"),
    ("\x0f", ""),
    ("\x01ACTION waves\x01", "* waves"),
    ("\x01ACTION waves", "* waves"),  # a missing final \x01 is tolerated
    ("\x01ACTION \x02waves\x02 \x0304hi\x01", "* waves hi"),
    ("\x01ACTION\x01", "*"),
    ("\x01ACTION  two spaces\x01", "*  two spaces"),
    ("stray \x01 in the middle", "stray  in the middle"),
    ("\u0663\x03\u0663\u0663", "\u0663\u0663\u0663"),  # only ASCII digits belong to a colour
])
def test_plain_text(irc_text, plain):
    assert irc.plain_text(irc_text) == plain


@pytest.mark.parametrize("ctcp", ["\x01VERSION\x01", "\x01PING 12345\x01", "\x01", "\x01\x01",
                                  "\x01action waves\x01", "\x01ACTIONwaves\x01", "\x01DCC SEND x\x01"])
def test_other_ctcp_is_not_for_native_users(ctcp):
    assert irc.plain_text(ctcp) is None


def test_plain_text_returns_plain_text_itself():
    s = "nothing to strip here, \u00e9 \U0001f600"
    assert irc.plain_text(s) is s


@PROPERTY
@given(st.text(st.one_of(st.sampled_from(FORMATTING + list("0123456789,")), st.characters()), max_size=40))
def test_plain_text_of_valid_irc_text_is_valid_native_text(sample):
    try:
        irc.check_text(sample)
    except IrcError:
        return
    plain = irc.plain_text(sample)
    if plain is not None:
        assert native.check_text(plain) == plain


# -- channels and names --------------------------------------------------------------------------

def test_chantypes():
    assert irc.CHANTYPES == "#"


@pytest.mark.parametrize("channel,room", [
    ("#dev", "dev"), ("#lobby", "lobby"), ("#Dev_2-x", "Dev_2-x"), ("#_", "_"), ("#" + "r" * 32, "r" * 32),
    ("dev", None), ("#", None), ("", None), ("##dev", None), ("&dev", None), ("#-dev", None),
    ("#a b", None), ("#a.b", None), ("#caf\u00e9", None), ("#" + "r" * 33, None), ("#dev\n", None),
])
def test_channel_to_room(channel, room):
    assert irc.channel_to_room(channel) == room


@PROPERTY
@given(st.from_regex(text.NAME_RE, fullmatch=True))
def test_rooms_and_channels_round_trip(room):
    channel = irc.room_to_channel(room)
    assert channel == "#" + room
    assert irc.channel_to_room(channel) == room


@pytest.mark.parametrize("name,folded", [
    ("ANN", "ann"), ("Ann_1-X", "ann_1-x"), ("[]\\~^{}|", "[]\\~^{}|"), ("\u00c9MILE", "\u00c9mile"),
    ("#DeV", "#dev"), ("\u0130", "\u0130"),
])
def test_casefold_is_ascii_only(name, folded):
    assert irc.casefold(name) == folded


@pytest.mark.parametrize("client_id,nick", [
    ("127.0.0.1:40312", "127-0-0-1-40312"),
    ("10.0.0.255:1", "10-0-0-255-1"),
    ("[2001:db8::1]:5555", "2001_db8__1-5555"),
    ("[::1]:40312", "__1-40312"),
    ("[::]:0", "__-0"),
    ("[::ffff:127.0.0.1]:65535", "__ffff_127-0-0-1-65535"),
    ("[fe80::a:b:c:d]:22", "fe80__a_b_c_d-22"),
])
def test_id_to_nick_and_back(client_id, nick):
    assert irc.id_to_nick(client_id) == nick
    assert irc.nick_to_id(nick) == client_id
    assert irc.GUEST_NICK_RE.match(nick)


@pytest.mark.parametrize("nick,client_id", [
    ("2001_DB8__1-5555", "[2001:db8::1]:5555"),
    ("FE80__A-22", "[fe80::a]:22"),
])
def test_nick_to_id_folds_case_as_nicknames_do(nick, client_id):
    assert irc.nick_to_id(nick) == client_id
    assert irc.id_to_nick(client_id) == irc.casefold(nick)


@pytest.mark.parametrize("client_id", ["ann", "127.0.0.1", "127.0.0.1:", "1.2.3:4", "1.2.3.4.5:6",
                                       "1234.0.0.1:5", "1.2.3.4:123456", "[fe80::1%eth0]:5555", "::1:5",
                                       "[::1]", "[2001:DB8::1]:5", "[g::1]:5", "[1.2.3.4]:5", ""])
def test_id_to_nick_of_other_shapes(client_id):
    assert irc.id_to_nick(client_id) is None


@pytest.mark.parametrize("nick", ["ann", "127-0-0-1", "1-2-3-4", "1-2-3-4-5-6", "1-2-3-4-123456",
                                  "1-2-3-4-", "-1-2-3-4-5", "__1", "__1-", "-__1-5", "g__1-5",
                                  "__1-5x", "1-2-3-4-5\n", "127_0_0_1", "\u0663-2-3-4-5", "dev", ""])
def test_other_nicknames_are_not_guests(nick):
    assert irc.nick_to_id(nick) is None
    assert not irc.GUEST_NICK_RE.match(nick)


def ipv4_ids():
    return st.builds(lambda b, port: native.format_addr((socket.inet_ntop(socket.AF_INET, b), port)),
                     st.binary(min_size=4, max_size=4), st.integers(0, 65535))


def ipv6_ids():
    return st.builds(lambda b, port: native.format_addr((socket.inet_ntop(socket.AF_INET6, b), port)),
                     st.one_of(st.binary(min_size=16, max_size=16),
                               st.builds(lambda b: bytes(10) + b"\xff\xff" + b, st.binary(min_size=4, max_size=4)),
                               st.builds(lambda b: bytes(12) + b, st.binary(min_size=4, max_size=4))),
                     st.integers(0, 65535))


@PROPERTY
@given(st.one_of(ipv4_ids(), ipv6_ids()))
def test_every_real_id_round_trips(client_id):
    nick = irc.id_to_nick(client_id)
    assert nick is not None and irc.GUEST_NICK_RE.match(nick)
    assert not any(c in nick for c in ":.[] ")
    assert irc.nick_to_id(nick) == client_id
    assert irc.nick_to_id(nick.upper()) == client_id


@PROPERTY
@given(st.one_of(st.from_regex(irc.GUEST_NICK_RE, fullmatch=True),
                 st.text(st.sampled_from("0123456789abcdefABCDEF_-.:xz"), max_size=20)))
def test_guest_nick_re_matches_exactly_what_nick_to_id_maps(nick):
    client_id = irc.nick_to_id(nick)
    assert (client_id is not None) == bool(irc.GUEST_NICK_RE.match(nick))
    if client_id is not None:
        assert irc.id_to_nick(client_id) == irc.casefold(nick)


def test_fit_line_cuts_a_relayed_message_to_512_bytes_at_a_character_boundary():
    from chatroom.codec.irc import fit_line

    assert fit_line(b":a PRIVMSG b x\r\n") == b":a PRIVMSG b x\r\n"
    cut = fit_line(b":a!b@c PRIVMSG b " + b"x" * 600 + b"\r\n")
    assert cut == b":a!b@c PRIVMSG b :" + b"x" * (510 - 18) + b"\r\n"  # the cut word marked as text
    cut = fit_line(b"@t=1 :a!b@c PRIVMSG b :" + "\u00e9".encode() * 600 + b"\r\n")
    assert len(cut) - len(b"@t=1 ") <= 512
    cut.decode("utf-8")  # no character cut in half


@pytest.mark.parametrize("caps", [(), ("server-time",), ("message-tags",),
                                  ("server-time", "message-tags", "echo-message")])
def test_a_batch_of_messages_is_the_bytes_of_each_message(caps):
    """Encoder.msg_batch builds a read's PRIVMSGs in one go; every byte as msg() would give it."""
    import random

    from chatroom.codec.irc_events import Encoder

    class Sender:
        prefix = "ann!~ann@127.0.0.1"

    class Room:
        name = "dev"

    rng = random.Random(7)
    alphabet = "ab :;\\\x02\x03é€😀"
    encoder = Encoder(frozenset(caps))
    for size in (1, 2, 5, 40):
        for _ in range(50):
            texts = ["".join(rng.choice(alphabet) for _ in range(rng.choice((1, 3, 30, 150, 500))))
                     for _ in range(size)]
            texts = [t if t.strip(" ") else "x" for t in texts]
            stamps = [(1795940000.0 + rng.random(), f"1a2{i:x}-{i}") for i in range(size)]
            single = b"".join(encoder.msg(Room, Sender, t, s, False, None) for t, s in zip(texts, stamps))
            assert encoder.msg_batch(Room, Sender, texts, stamps) == single

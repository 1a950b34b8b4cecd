"""Property tests of the wire protocol on arbitrary input: framing, parsing and formatting.

Hypothesis generates byte streams (mostly protocol-shaped, with junk, stray ``\\r``, overlong lines
and runs past the 64 KiB no-line-end limit), splits them at arbitrary points and feeds them to
``LineFramer``; every line goes through ``parse_command``. The framer's output is compared with a
plain reference model: the joined input split at ``\\n``.
"""

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatroom.codec import native, text
from chatroom.codec.lines import DEFAULT_MAX_LINE, NO_LINE_END_LIMIT, LineFramer, LineTooLong, NoLineEnd

#: Examples per property: enough to hit every framer branch, few enough for a couple of seconds.
EXAMPLES = 300
FUZZ = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])

#: Hypothesis warns when a failing example (a 64 KiB run) has a long repr; the repr is still useful.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

WORDS = [w.encode() + b" " for w in native.COMMANDS] + [b"send ", b"JOIN lobby", b"NICK ann"]

#: Pieces of a stream: junk bytes, command words, line ends, lone CRs, and long runs (some past
#: the no-line-end limit) built by repetition so they cost nothing to generate.
segment = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(WORDS),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\xff\xfe", b"\x1b[2J", "\u202e".encode(), b"\xc3"]),
    st.builds(lambda n, b: b * n, st.integers(0, 300), st.sampled_from([b"x", b"\r", b" "])),
    st.builds(lambda n: b"z" * n, st.integers(NO_LINE_END_LIMIT - 2, NO_LINE_END_LIMIT + 2)),
)


@st.composite
def split_stream(draw):
    """``(max_line, chunks)``: a stream cut at arbitrary offsets."""
    data = b"".join(draw(st.lists(segment, max_size=30)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    max_line = draw(st.sampled_from([1, 2, 5, 16, 64, DEFAULT_MAX_LINE]))
    return max_line, chunks


def reference(data, max_line):
    """What the framer must produce for the whole of ``data``: ``(events, closed)``.

    A line (or the unterminated tail) of more than 64 KiB ends the stream with ``NoLineEnd``;
    otherwise each line loses one trailing ``\\r`` and is kept if it fits in ``max_line``.
    """
    *lines, tail = data.split(b"\n")
    out = []
    for raw in lines:
        if len(raw) > NO_LINE_END_LIMIT:
            return out + [NoLineEnd], True
        line = raw[:-1] if raw.endswith(b"\r") else raw
        out.append(line if len(line) <= max_line else LineTooLong(len(line)))
    if len(tail) > NO_LINE_END_LIMIT:
        return out + [NoLineEnd], True
    return out, False


def is_safe_text(text):
    """No control characters (Unicode category Cc) and no bidi embedding/override/isolate."""
    return not any(unicodedata.category(ch) == "Cc" or unicodedata.bidirectional(ch) in
                   ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI") for ch in text)


def parse(line):
    """``parse_command(line)``, or the ``ProtocolError`` it raised; anything else propagates."""
    try:
        return native.parse_command(line)
    except native.ProtocolError as err:
        assert err.code and " " not in err.code
        assert err.to_bytes().startswith(b"ERR " + err.code.encode() + b" ")
        return err


@FUZZ
@given(split_stream())
def test_framer_matches_the_reference_however_the_stream_is_split(case):
    max_line, chunks = case
    framer = LineFramer(max_line)
    got = []
    for chunk in chunks:
        got.extend(framer.feed(chunk))
        assert framer.buffered <= max_line + 1
    expected, closed = reference(b"".join(chunks), max_line)
    assert framer.closed == closed
    # NoLineEnd's size is when the limit was noticed, which depends on the split; compare its kind.
    assert [NoLineEnd if isinstance(e, NoLineEnd) else e for e in got] == expected
    tail = b"".join(chunks).rsplit(b"\n", 1)[-1]
    assert framer.eof() == (0 if closed else len(tail))
    assert framer.buffered == 0


@FUZZ
@given(split_stream())
def test_every_framed_line_parses_or_raises_only_protocol_error(case):
    max_line, chunks = case
    framer = LineFramer(max_line)
    for chunk in chunks:
        for line in framer.feed(chunk):
            if not isinstance(line, bytes):
                continue
            cmd = parse(line)
            if isinstance(cmd, native.Command):
                assert cmd.name in native.COMMANDS
                if cmd.name in ("SEND", "TELL"):
                    assert is_safe_text(cmd.args[-1]), cmd  # what is relayed to other terminals


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.binary(max_size=200))
def test_parse_command_on_raw_bytes_raises_only_protocol_error(line):
    parse(line.replace(b"\n", b""))


names = st.from_regex(text.NAME_RE, fullmatch=True)
safe_text = st.text(min_size=1, max_size=60).filter(is_safe_text)


@settings(deadline=None, max_examples=EXAMPLES)
@given(st.sampled_from(["SEND", "TELL", "NICK", "JOIN", "PING", "QUIT"]), names, safe_text)
def test_formatted_commands_parse_back(name, who, text):
    args = {"SEND": (text,), "TELL": (who, text), "NICK": (who,), "JOIN": (who,),
            "PING": (text,), "QUIT": (text,)}[name]
    line = native.format_command(name, *args)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert native.parse_command(line[:-1]) == native.Command(name, args)


@settings(deadline=None, max_examples=EXAMPLES)
@given(names, names, safe_text)
def test_formatted_events_parse_back(room, who, text):
    cases = [
        (native.format_msg(room, who, text), ("MSG", (room, who, text))),
        (native.format_tell(who, text), ("TELL", (who, text))),
        (native.format_part(room, who, text), ("PART", (room, who, text))),
        (native.format_join(room, who), ("JOIN", (room, who))),
    ]
    for data, (name, args) in cases:
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        assert native.parse_event(data[:-1]) == native.Event(name, args)

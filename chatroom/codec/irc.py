"""The IRC client protocol without I/O: bytes to messages, messages to bytes.

Nothing here touches a socket or gevent, and nothing here is server policy (which commands
exist, what a numeric says): only the wire format of https://modern.ircdocs.horse with IRCv3
message tags, testable with plain bytes.

- :class:`IrcFramer` cuts a byte stream into lines (CR, LF or CRLF end a line) and enforces the
  tag section and body limits, sharing :class:`chatroom.codec.lines.LineFramer`'s bounded buffer.
- :func:`parse` turns one line into a :class:`Message` or raises :class:`IrcError`.
- :func:`format_message` builds one ready-to-send line; :func:`format_time` the ``time`` tag.
- :func:`check_text` and :func:`plain_text` apply the shared text rule of
  :mod:`chatroom.codec.text` to IRC text, which may carry formatting codes and CTCP.
- Names: IRC channels are ``#`` + a native room name; a native client without a nickname is
  known by its id (``127.0.0.1:40312``), shown to IRC users as ``127-0-0-1-40312``.

Parameters (``parse``): one or more spaces separate them; a trailing ``:`` parameter runs to the
line end. At most 15: as RFC 2812 puts it, after 14 middle parameters the rest of the line is the
15th, spaces included, with or without a leading ``:``. Nothing is refused for having too many.
"""

import re
import time
from dataclasses import dataclass

from .lines import NO_LINE_END_LIMIT, LineFramer, LineTooLong
from .text import BAD_TEXT_RE, NAME_RE

#: Longest tag section (``@`` and the tags, without the space after them), in bytes.
#: (The IRCv3 spec counts the space too; 8190 here would be its exact limit.)
MAX_TAGS = 8191
#: Longest rest of a line after the tag section and its space, without the line end: 512 - CRLF.
MAX_BODY = 510
#: Most parameters a message has; the rest of the line goes into the last one.
MAX_PARAMS = 15

CHANTYPES = "#"


class IrcError(Exception):
    """A line that is not a valid IRC message: ``code`` is stable, ``text`` the human part.

    Codes: ``BAD_CHAR`` (NUL, CR or LF in a line), ``INVALID_UTF8``, ``BAD_TAG`` (a tag key that
    the IRCv3 grammar does not allow), ``BAD_SOURCE`` (an empty ``:`` prefix), ``NO_COMMAND``,
    ``BAD_COMMAND`` (not letters nor 3 digits; ``command`` holds it and ``tags`` the line's tags, for
    a ``421`` that carries its ``label``), ``BAD_TEXT``.
    """

    def __init__(self, code, text, command=None, tags=None):
        super().__init__(code, text)
        self.code = code
        self.text = text
        self.command = command
        self.tags = tags or {}  #: the line's tags, when they were read before the error


@dataclass(slots=True)
class Message:
    """One IRC message, its fields in wire order. ``tags`` values are unescaped ("" when absent);
    ``source`` has no ``:``; ``command`` is upper-case; the trailing parameter is the last of
    ``params``, without its ``:``."""

    tags: dict
    source: str | None
    command: str
    params: list


# -- framing -------------------------------------------------------------------------------------


class IrcFramer(LineFramer):
    """Splits a byte stream into IRC lines: ``feed(data)`` returns complete lines and events.

    A line ends at CR, LF or CRLF; empty lines are skipped. A line whose tag section is over
    ``max_tags`` bytes or whose rest is over ``max_body`` bytes becomes a :class:`LineTooLong`
    (the connection goes on); more than 64 KiB without a line end gives
    :class:`~chatroom.codec.lines.NoLineEnd` and closes the framer. Memory held between calls is
    bounded by ``max_line = max_tags + 1 + max_body`` as for :class:`LineFramer`, which this is
    with CR turned into LF first (a CRLF is then a line end followed by a skipped empty line).
    """

    __slots__ = ("max_body", "max_tags")

    def __init__(self, max_tags=MAX_TAGS, max_body=MAX_BODY, no_line_end_limit=NO_LINE_END_LIMIT):
        if max_tags < 1 or max_body < 1:
            raise ValueError("max_tags and max_body must be at least 1")
        super().__init__(max_tags + 1 + max_body, no_line_end_limit)
        self.max_tags = max_tags
        self.max_body = max_body

    def feed(self, data):
        items = LineFramer.feed(self, data.replace(b"\r", b"\n"))
        if not items:
            return items
        max_tags, max_body = self.max_tags, self.max_body
        out = []
        for line in items:
            if line.__class__ is bytes:
                if not line:
                    continue
                if line[0] == 0x40:  # b"@": the tag section runs to the first space
                    space = line.find(b" ")
                    if space < 0:
                        too_long = len(line) > max_tags
                    else:
                        too_long = space > max_tags or len(line) - space - 1 > max_body
                else:
                    too_long = len(line) > max_body
                if too_long:
                    line = LineTooLong(len(line))
            out.append(line)
        return out


# -- parsing -------------------------------------------------------------------------------------

_BAD_BYTES_RE = re.compile(b"[\x00\r\n]")
_COMMAND_RE = re.compile(r"[A-Za-z]+\Z|[0-9]{3}\Z")
#: ``[+][vendor/]name``: the vendor a host name, the name letters, digits and hyphens.
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+\Z")
_UNESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def unescape_tag_value(value):
    """A tag value from the wire: ``\\:`` ``\\s`` ``\\\\`` ``\\r`` ``\\n`` decoded, any other
    backslash dropped (``\\b`` is ``b``, a final lone ``\\`` vanishes)."""
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m[1], m[1]), value)


def escape_tag_value(value):
    """A tag value for the wire: the inverse of :func:`unescape_tag_value`."""
    return (value.replace("\\", "\\\\").replace(";", "\\:").replace(" ", "\\s")
            .replace("\r", "\\r").replace("\n", "\\n"))


def _parse_tags(section):
    tags = {}
    for item in section.split(";"):
        if not item:
            continue  # "@a;;b" and a final ";" are harmless
        key, _, value = item.partition("=")
        if not _TAG_KEY_RE.match(key):
            raise IrcError("BAD_TAG", "invalid message tag key")
        tags[key] = unescape_tag_value(value)  # a repeated key: the last one wins
    return tags


def parse(line):
    """Parse one line (``bytes`` from the framer, without line end) into a :class:`Message`."""
    if _BAD_BYTES_RE.search(line):
        raise IrcError("BAD_CHAR", "messages must not contain NUL, CR or LF")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise IrcError("INVALID_UTF8", "line is not valid UTF-8") from None
    tags = {}
    if text[:1] == "@":
        section, _, text = text.partition(" ")
        tags = _parse_tags(section[1:])
        text = text.lstrip(" ")
    source = None
    if text[:1] == ":":
        source, _, text = text.partition(" ")
        source = source[1:]
        if not source:
            raise IrcError("BAD_SOURCE", "empty message source")
        text = text.lstrip(" ")
    command, _, text = text.partition(" ")
    if not command:
        raise IrcError("NO_COMMAND", "no command")
    if not _COMMAND_RE.match(command):
        raise IrcError("BAD_COMMAND", "a command is letters or a 3-digit number", command, tags)
    params = []
    while True:
        text = text.lstrip(" ")
        if not text:
            break
        if text[0] == ":":
            params.append(text[1:])
            break
        if len(params) == MAX_PARAMS - 1:
            params.append(text)
            break
        param, _, text = text.partition(" ")
        params.append(param)
    return Message(tags, source, command.upper(), params)


# -- formatting ----------------------------------------------------------------------------------

_BAD_CHARS_RE = re.compile("[\x00\r\n]")


def format_message(command, *params, source=None, tags=None):
    """One message as bytes ending in CRLF: ``format_message("001", "ann", "Welcome home",
    source="srv") == b":srv 001 ann :Welcome home\\r\\n"``.

    The last parameter gets a ``:`` when it is empty, holds a space or starts with ``:``; the
    others cannot be sent so and raise ``ValueError``, as does NUL, CR or LF anywhere (tag values
    excepted: CR and LF are escaped there). Tags with the value "" are sent as a bare key.
    """
    if not _COMMAND_RE.match(command):
        raise ValueError(f"invalid command {command!r}")
    parts = []
    if tags:
        items = []
        for key, value in tags.items():
            if not _TAG_KEY_RE.match(key):
                raise ValueError(f"invalid tag key {key!r}")
            items.append(key + "=" + escape_tag_value(value) if value else key)
        parts.append("@" + ";".join(items))
    if source is not None:
        if not source or " " in source:
            raise ValueError(f"invalid source {source!r}")
        parts.append(":" + source)
    parts.append(command)
    if params:
        if len(params) > MAX_PARAMS:
            raise ValueError(f"more than {MAX_PARAMS} parameters")
        *middle, last = params
        for param in middle:
            if not param or " " in param or param[0] == ":":
                raise ValueError(f"{param!r}: only the last parameter may be empty, "
                                 "hold a space or start with ':'")
        parts.extend(middle)
        parts.append(":" + last if not last or " " in last or last[0] == ":" else last)
    line = " ".join(parts)
    if _BAD_CHARS_RE.search(line):
        raise ValueError("NUL, CR or LF in a message")
    return line.encode("utf-8") + b"\r\n"


def fit_line(data, max_body=MAX_BODY):
    """``data`` (a whole message ending in CRLF) with its body cut to ``max_body`` bytes.

    The body is all but the tag section: a relayed message whose source prefix makes it longer
    than IRC's 512 bytes is cut at a character boundary, as other servers do, rather than sent
    whole to clients that may not take it.
    """
    start = data.find(b" ") + 1 if data[:1] == b"@" else 0
    if len(data) - 2 - start <= max_body:
        return data
    body = data[start:-2]
    if b" :" not in body:  # a one-word last parameter: cut, it is text, so mark it as such
        space = body.rfind(b" ") + 1
        body = body[:space] + b":" + body[space:]
    end = max_body
    while end > 0 and (body[end] & 0xC0) == 0x80:  # not inside a UTF-8 sequence
        end -= 1
    return data[:start] + body[:end] + b"\r\n"


_second = (None, "")  # the last whole second formatted by format_time, and its text


def format_time(seconds):
    """A ``server-time`` tag value, UTC to the millisecond: ``2026-11-29T05:46:57.123Z``."""
    global _second
    whole, ms = divmod(round(seconds * 1000), 1000)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{ms:03d}Z"


# -- text ----------------------------------------------------------------------------------------

#: The control characters IRC text may carry: CTCP, bold, colour, reset, monospace, reverse,
#: italics, strikethrough, underline.
FORMAT_CODES = "\x01\x02\x03\x0f\x11\x16\x1d\x1e\x1f"
_IRC_BAD_TEXT_RE = re.compile(f"(?![{FORMAT_CODES}])" + BAD_TEXT_RE.pattern)
_FORMAT_RE = re.compile(f"[{FORMAT_CODES}]")
_STRIP_RE = re.compile("\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?|[" + FORMAT_CODES.replace("\x03", "") + "]")


def check_text(text):
    """Raise ``BAD_TEXT`` unless ``text`` is safe to relay: the shared rule of
    :data:`~chatroom.codec.text.BAD_TEXT_RE`, except that :data:`FORMAT_CODES` are allowed."""
    # The shared rule first: plain text, the common case, costs one fast search.
    if BAD_TEXT_RE.search(text) and _IRC_BAD_TEXT_RE.search(text):
        raise IrcError("BAD_TEXT", "text must not contain control characters other than formatting")
    return text


def plain_text(text):
    """What a native client may be shown of IRC text that passed :func:`check_text`.

    Formatting codes go (a colour with its ``NN,NN`` digits); ``\\x01ACTION waves\\x01`` (``/me``)
    is ``* waves``; any other CTCP is None, not for native users. May return "".
    """
    if not _FORMAT_RE.search(text):
        return text
    if text[0] == "\x01":
        body = text[1:-1] if text[-1] == "\x01" and len(text) > 1 else text[1:]  # final \x01 optional
        if body == "ACTION":
            return "*"
        if not body.startswith("ACTION "):
            return None
        text = "* " + body[7:]
    return _STRIP_RE.sub("", text)


# -- names ---------------------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold(name):
    """``name`` compared as IRC compares names under ``CASEMAPPING=ascii``: only A-Z fold."""
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


def channel_to_room(channel):
    """``#dev`` -> ``dev``; None when the channel is not ``#`` and a valid native room name."""
    if channel[:1] == "#" and NAME_RE.match(channel, 1):
        return channel[1:]
    return None


def room_to_channel(room):
    """``dev`` -> ``#dev``."""
    return "#" + room


# A native id is addr:port: IPv4 (dotted) or IPv6 (in brackets, lowercase hex as the socket gives
# it, possibly with an embedded IPv4). The nickname maps ':' to '_' and '.' to '-', drops the
# brackets and puts the port after the last '-'. IPv6 nicknames always hold a '_', IPv4 ones never.
_IPV4_ID_RE = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):([0-9]{1,5})\Z")
_IPV6_ID_RE = re.compile(r"\[([0-9a-f]*:[0-9a-f:.]*)\]:([0-9]{1,5})\Z")
_IPV4_NICK = r"[0-9]{1,3}(?:-[0-9]{1,3}){3}-[0-9]{1,5}"
_IPV6_NICK = r"[0-9a-f]*_[0-9a-f_-]*-[0-9]{1,5}"
#: The nicknames of native clients known by their id; the server should refuse them as chosen
#: nicknames. Case-insensitive, as nicknames are compared.
GUEST_NICK_RE = re.compile(rf"(?:{_IPV4_NICK}|{_IPV6_NICK})\Z", re.IGNORECASE | re.ASCII)
_TO_NICK = str.maketrans(":.", "_-")
_TO_ID = str.maketrans("_-", ":.")


def id_to_nick(client_id):
    """``127.0.0.1:40312`` -> ``127-0-0-1-40312``, ``[2001:db8::1]:5555`` -> ``2001_db8__1-5555``.

    None for an id of any other shape (an IPv6 zone: ``[fe80::1%eth0]:5555``).
    """
    m = _IPV4_ID_RE.match(client_id) or _IPV6_ID_RE.match(client_id)
    if m is None:
        return None
    return m[1].translate(_TO_NICK) + "-" + m[2]


def nick_to_id(nick):
    """The inverse of :func:`id_to_nick` (in any letter case: ``2001_DB8__1-5555`` is the id
    ``[2001:db8::1]:5555``), or None if ``nick`` is not of that shape."""
    if not GUEST_NICK_RE.match(nick):
        return None
    host, _, port = nick.rpartition("-")
    host = host.translate(_TO_ID)
    if ":" in host:
        return f"[{casefold(host)}]:{port}"
    return f"{host}:{port}"

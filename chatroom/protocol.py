"""Wire protocol v1 without I/O: bytes in, complete lines out; lines to commands; events to bytes.

Nothing here touches a socket or gevent, so every rule of ``docs/protocol.md`` is testable with
plain bytes. Three pieces, used in this order by the server:

- :class:`LineFramer` turns a byte stream into complete lines, enforcing the line limit and never
  rescanning bytes it has already looked at.
- :func:`parse_command` turns one line into a :class:`Command` or raises :class:`ProtocolError`
  with a stable error code.
- ``format_*`` functions build the server's events as ready-to-send ``bytes``.
"""

import re
from dataclasses import dataclass

VERSION = "1.0"
SERVER_NAME = "chatroom/" + VERSION

#: Default longest line, in bytes, without its line end. Long enough for a paragraph of text,
#: short enough that a room of slow readers cannot be made to queue much per message.
DEFAULT_MAX_LINE = 4096

#: Bytes without any line end after which a connection is judged not to speak this protocol
#: (binary junk, a TLS hello on the plain port) and is closed. Above any sane ``max_line``.
NO_LINE_END_LIMIT = 64 * 1024

#: Nicknames and room names: ASCII letters, digits, ``_`` and ``-`` (no look-alike names),
#: not starting with ``-``, at most 32 characters.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,31}\Z")

#: Characters never allowed in relayed text: C0 controls (escape sequences start with ESC),
#: DEL, C1 controls, and the bidi embedding/override/isolate characters that reorder a line.
BAD_TEXT_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

COMMANDS = ("SEND", "TELL", "NICK", "JOIN", "WHO", "ROOMS", "PING", "PONG", "QUIT")


class ProtocolError(Exception):
    """A line the server refuses; ``code`` is the stable ``ERR`` code, ``text`` the human part."""

    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code
        self.text = text

    def to_bytes(self):
        return format_err(self.code, self.text)


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Framer event: a line went over the limit; its bytes were discarded up to its line end."""

    size: int


@dataclass(frozen=True, slots=True)
class NoLineEnd:
    """Framer event: :data:`NO_LINE_END_LIMIT` bytes came without a line end; close the connection."""

    size: int


class LineFramer:
    """Splits a byte stream into lines of at most ``max_line`` bytes.

    ``feed(data)`` returns the list of complete lines (``bytes`` without the line end, ``\\r``
    stripped), with a :class:`LineTooLong` in place of each overlong line and a final
    :class:`NoLineEnd` if the stream stops looking like lines (more than ``no_line_end_limit``
    bytes without a line end). Memory held between calls is at
    most ``max_line`` bytes: an overlong partial line is dropped at once, and only counted from
    then on until its line end arrives.
    """

    __slots__ = ("max_line", "no_line_end_limit", "_partial", "_discarding", "_discarded_cr",
                 "_unterminated", "closed")

    def __init__(self, max_line=DEFAULT_MAX_LINE, no_line_end_limit=NO_LINE_END_LIMIT):
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        #: Bytes without a line end after which the stream is given up (:class:`NoLineEnd`);
        #: None never gives up (a client facing a server: overlong lines are only skipped).
        self.no_line_end_limit = no_line_end_limit
        self._partial = b""  # the start of the current line; never holds a b"\n"
        self._discarding = 0  # > 0: bytes of an overlong line dropped so far
        self._discarded_cr = False  # the last byte dropped was b"\r" (not counted in a size)
        self._unterminated = 0  # bytes since the last line end (for NO_LINE_END_LIMIT)
        self.closed = False  # set after NoLineEnd: the framer then ignores input

    @property
    def buffered(self):
        """Bytes held waiting for a line end (bounded by ``max_line``)."""
        return len(self._partial)

    @property
    def unterminated(self):
        """Bytes fed since the last line end (held or, for an overlong line, only counted)."""
        return self._unterminated

    def feed(self, data):
        if self.closed or not data:
            return []
        parts = data.split(b"\n")
        tail = parts.pop()  # the bytes after the last line end: the start of the next line
        out = []
        if parts:
            # The first part ends the line in progress; only this one needs the saved state.
            first = parts[0]
            if self._discarding:
                raw = self._discarding + len(first)
                cr = first.endswith(b"\r") if first else self._discarded_cr
                self._discarding = 0
                parts[0] = None
                out.append(self._too_long(raw, raw - cr))
                if self.closed:
                    return out
            elif self._partial:
                parts[0] = self._partial + first
            self._partial = b""
            max_line = self.max_line
            for line in parts:
                if line is None:
                    continue
                raw = len(line)
                if line.endswith(b"\r"):
                    line = line[:-1]
                out.append(line if len(line) <= max_line else self._too_long(raw, len(line)))
                if self.closed:
                    return out
            self._unterminated = 0
        self._unterminated += len(tail)
        if self._discarding:
            if tail:
                self._discarding += len(tail)
                self._discarded_cr = tail.endswith(b"\r")
        elif tail:
            partial = self._partial + tail if self._partial else tail
            # One byte of slack for a '\r' that may precede the coming '\n'.
            if len(partial) > self.max_line + 1:
                self._discarding = len(partial)
                self._discarded_cr = partial.endswith(b"\r")
                partial = b""
            self._partial = partial
        limit = self.no_line_end_limit
        if limit is not None and self._unterminated > limit:
            out.append(self._too_long(self._unterminated, self._unterminated))
        return out

    def _too_long(self, raw, size):
        """The event for a line of ``raw`` bytes (``size`` without its ``\\r``) over the limit."""
        limit = self.no_line_end_limit
        if limit is not None and raw > limit:
            self.closed = True
            self._partial = b""
            self._discarding = self._unterminated = 0
            return NoLineEnd(raw)
        return LineTooLong(size)

    def eof(self):
        """The stream ended; returns the bytes of a final line cut off mid-way (dropped, not run)."""
        cut = len(self._partial) + self._discarding
        self._partial = b""
        self._discarding = 0
        return cut


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed client line. ``args`` are the command's fields, the last running to line end."""

    name: str
    args: tuple = ()


def check_text(text):
    """Raise ``bad-text`` unless ``text`` is safe to relay to other people's terminals."""
    if BAD_TEXT_RE.search(text):
        raise ProtocolError("bad-text", "text must not contain control characters or escape sequences")
    return text


def check_name(name, kind):
    if not NAME_RE.match(name):
        code = "nick-invalid" if kind == "nickname" else "room-invalid"
        raise ProtocolError(
            code, f"{kind} must be 1-32 of A-Z a-z 0-9 _ - and not start with '-'"
        )
    return name


def decode(line):
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("invalid-utf8", "line is not valid UTF-8") from None


def parse_command(line):
    """Parse one line (``bytes`` from the framer, without line end) into a :class:`Command`."""
    text = decode(line)
    name, sep, rest = text.partition(" ")
    if name == "SEND":
        if not rest:
            raise ProtocolError("missing-argument", "usage: SEND <text>")
        return Command("SEND", (check_text(rest),))
    if name == "TELL":
        who, _, body = rest.partition(" ")
        if not who or not body:
            raise ProtocolError("missing-argument", "usage: TELL <nick> <text>")
        return Command("TELL", (who, check_text(body)))
    if name in ("NICK", "JOIN"):
        arg = rest.strip(" ")
        if not arg:
            usage = "NICK <name>" if name == "NICK" else "JOIN <room>"
            raise ProtocolError("missing-argument", "usage: " + usage)
        return Command(name, (check_name(arg, "nickname" if name == "NICK" else "room"),))
    if name in ("WHO", "ROOMS"):
        return Command(name)
    if name in ("PING", "PONG", "QUIT"):
        return Command(name, (check_text(rest),) if rest else ())
    if not name:
        raise ProtocolError("unknown-command", "empty line; try SEND <text>")
    shown = check_printable(name[:32])
    hint = " (commands are case-sensitive)" if name.upper() in COMMANDS else ""
    raise ProtocolError("unknown-command", f"unknown command '{shown}'{hint}")


def check_printable(text):
    """``text`` with anything unsafe to echo back replaced by ``?``."""
    return BAD_TEXT_RE.sub("?", text)


def format_command(name, *args):
    """A client line as bytes: ``format_command("SEND", "hi") == b"SEND hi\\n"``."""
    return " ".join((name,) + args).encode("utf-8") + b"\n"


# -- server events -------------------------------------------------------------------------------
# Each returns the whole line as bytes, ready to queue: encoded once, shared by every recipient.


def _line(*fields):
    return " ".join(fields).encode("utf-8") + b"\n"


def format_hello(client_id):
    return _line("HELLO", client_id, SERVER_NAME)


def format_msg(room, sender, text):
    return f"MSG {room} {sender} {text}\n".encode("utf-8")


def format_tell(sender, text):
    return _line("TELL", sender, text)


def format_join(room, who):
    return _line("JOIN", room, who)


def format_part(room, who, reason=""):
    return _line("PART", room, who, reason) if reason else _line("PART", room, who)


def format_nick(old, new):
    return _line("NICK", old, new)


def format_who(room, names):
    return _line("WHO", room, *names)


def format_rooms(counts):
    return _line("ROOMS", *(f"{room}:{n}" for room, n in counts))


def format_ping(token):
    return _line("PING", token)


def format_pong(token=""):
    return _line("PONG", token) if token else b"PONG\n"


def format_err(code, text):
    return _line("ERR", code, text)


def format_bye(reason):
    return _line("BYE", reason)


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed server line (what a client sees). ``args`` as for :class:`Command`."""

    name: str
    args: tuple = ()


#: How many fields each server event has before its free text (which may contain spaces).
_EVENT_FIELDS = {
    "HELLO": 2, "MSG": 2, "TELL": 1, "JOIN": 2, "PART": 2, "NICK": 2,
    "PING": 0, "PONG": 0, "ERR": 1, "BYE": 0,
}


def parse_event(line):
    """Parse one server line (``bytes`` or ``str``, no line end) into an :class:`Event`.

    Used by clients and tests. ``WHO`` and ``ROOMS`` give one argument a name; every other
    event gives its fixed fields and then its text (if any) as the last argument.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    name, _, rest = line.partition(" ")
    if name in ("WHO", "ROOMS"):
        return Event(name, tuple(rest.split()))
    fields = _EVENT_FIELDS.get(name)
    if fields is None:
        return Event(name, (rest,) if rest else ())
    parts = rest.split(" ", fields) if rest else []
    return Event(name, tuple(parts))

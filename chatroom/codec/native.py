"""The native wire protocol v1 without I/O: lines to commands, events to bytes.

Nothing here touches a socket or gevent, so every rule of ``docs/protocol.md`` is testable with
plain bytes. Lines come from :class:`chatroom.codec.lines.LineFramer`; then:

- :func:`parse_command` turns one line into a :class:`Command` or raises :class:`ProtocolError`
  with a stable error code.
- ``format_*`` functions build the server's events as ready-to-send ``bytes``.
"""

import re
from dataclasses import dataclass

from .. import __version__ as VERSION
from . import irc
from .text import BAD_TEXT_RE, NAME_RE, check_printable

SERVER_NAME = "chatroom/" + VERSION

COMMANDS = ("SEND", "TELL", "NICK", "JOIN", "WHO", "ROOMS", "PING", "PONG", "QUIT", "HISTORY",
            "REGISTER", "LOGIN", "LOGOUT", "PASS", "KICK", "BAN", "UNBAN", "TOPIC")


class ProtocolError(Exception):
    """A line the server refuses; ``code`` is the stable ``ERR`` code, ``text`` the human part."""

    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code
        self.text = text

    def to_bytes(self):
        return format_err(self.code, self.text)


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed client line. ``args`` are the command's fields, the last running to line end."""

    name: str
    args: tuple = ()


def format_addr(address):
    """A connection's id from its peer address: ``127.0.0.1:54321``, ``[::1]:54321``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    if name in ("WHO", "ROOMS", "LOGOUT"):
        return Command(name)
    if name == "HISTORY":
        return Command(name, _history_args(rest.split(" ") if rest else []))
    if name in ("REGISTER", "PASS"):  # the password runs to the end of the line (spaces too)
        if not rest:
            raise ProtocolError("missing-argument", f"usage: {name} <password>")
        return Command(name, (rest,))
    if name in ("KICK", "UNBAN"):
        who, _, reason = rest.strip(" ").partition(" ")
        if not who:
            raise ProtocolError("missing-argument", f"usage: {name} <nick>"
                                + (" [reason]" if name == "KICK" else ""))
        return Command(name, (who, check_text(reason.strip(" "))) if name == "KICK" else (who,))
    if name == "BAN":
        who, _, more = rest.strip(" ").partition(" ")
        if not who:
            raise ProtocolError("missing-argument", "usage: BAN <nick|account|address> [minutes] [reason]")
        first, _, reason = more.strip(" ").partition(" ")
        minutes = None
        if first.isdigit() and first.isascii():
            minutes = int(first)
        else:
            reason = more.strip(" ")
        return Command(name, (who, minutes, check_text(reason.strip(" "))))
    if name == "TOPIC":
        return Command(name, (check_text(rest),) if rest else ())
    if name == "LOGIN":
        nick, _, password = rest.partition(" ")
        if not nick or not password:
            raise ProtocolError("missing-argument", "usage: LOGIN <nickname> <password>")
        return Command(name, (check_name(nick, "nickname"), password))
    if name in ("PING", "PONG", "QUIT"):
        return Command(name, (check_text(rest),) if rest else ())
    if not name:
        raise ProtocolError("unknown-command", "empty line; try SEND <text>")
    shown = check_printable(name[:32])
    hint = " (commands are case-sensitive)" if name.upper() in COMMANDS else ""
    raise ProtocolError("unknown-command", f"unknown command '{shown}'{hint}")


_HISTORY_USAGE = "usage: HISTORY [@<nick>] [<count>] [<before-id>]"


def _history_args(fields):
    """``HISTORY [@<nick>] [<count>] [<before-id>]`` as ``(count or None, before-id or None,
    nick or None)``: a room's history, or the private messages with ``nick``."""
    count = before = with_nick = None
    if fields and fields[0].startswith("@"):
        with_nick = fields.pop(0)[1:]
        if not with_nick or len(with_nick) > 64:
            raise ProtocolError("bad-argument", _HISTORY_USAGE)
    if fields and fields[0].isdigit() and fields[0].isascii():
        count = int(fields.pop(0))
        if not count:
            raise ProtocolError("bad-argument", _HISTORY_USAGE + ", count 1 or more")
    if fields:
        before = fields.pop(0)
    if fields or (before is not None and not MSGID_RE.match(before)):
        raise ProtocolError("bad-argument", _HISTORY_USAGE)
    return count, before, with_nick


#: What a message id looks like (``Registry.stamp``): hex time, ``-``, an optional node, a serial.
MSGID_RE = re.compile(r"[0-9a-f]+-[A-Za-z0-9_.-]{1,80}\Z")


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


def format_topic(room, who, text=""):
    """``who`` set ``room``'s topic to ``text`` (empty: cleared); also the answer to a bare TOPIC."""
    return _line("TOPIC", room, who, text) if text else _line("TOPIC", room, who)


def format_banned(kind, value, minutes=None):
    return _line("BANNED", kind, value, str(minutes)) if minutes is not None else _line("BANNED", kind, value)


def format_unbanned(kind, value):
    return _line("UNBANNED", kind, value)


def format_account(name):
    """You are logged in as ``name`` (``*``: logged out)."""
    return _line("ACCOUNT", name)


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


def format_hist(room, msgid, when, sender, text):
    """One message of ``room``'s history; ``when`` is UTC to the millisecond (ISO 8601)."""
    return f"HIST {room} {msgid} {when} {sender} {text}\n".encode("utf-8")


def format_histend(room):
    return _line("HISTEND", room)


def format_tellhist(msgid, when, sender, text):
    """One private message kept while you were offline (``TELL`` shaped like ``HIST``)."""
    return f"TELLHIST {msgid} {when} {sender} {text}\n".encode("utf-8")


def format_tellhistend():
    return b"TELLHISTEND\n"


def format_notice(code, text):
    return _line("NOTICE", code, text)


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed server line (what a client sees). ``args`` as for :class:`Command`."""

    name: str
    args: tuple = ()


#: How many fields each server event has before its free text (which may contain spaces).
_EVENT_FIELDS = {
    "HELLO": 2, "MSG": 2, "TELL": 1, "JOIN": 2, "PART": 2, "NICK": 2,
    "PING": 0, "PONG": 0, "ERR": 1, "BYE": 0, "HIST": 4, "HISTEND": 0, "NOTICE": 1,
    "TELLHIST": 3, "TELLHISTEND": 0,
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


class Encoder:
    """The registry's events as protocol v1 lines (the ``encoder`` of every native member).

    Each method returns the whole line as bytes, built once and shared by every native recipient
    of the event, or None where protocol v1 has no such event. ``per_room``: the lines name the
    room, so a member's own change (leaving, a new nickname) is encoded per room it was in.
    """

    per_room = True
    echo = False
    #: Frames a member's own lines (registry.reply); None: they go on the wire as they are.
    wrap = None
    stamped = False  # protocol v1 shows no message times or ids

    def msg(self, room, sender, text, stamp, notice, tags):
        if not sender.plain:
            text = irc.plain_text(text)
            if not text:
                return None
        return f"MSG {room.name} {sender.name} {text}\n".encode("utf-8")

    def msg_batch(self, room, sender, texts, stamps):
        """Several messages of one sender as one buffer (its texts checked; IRC's made plain)."""
        if not sender.plain:
            texts = [text for text in map(irc.plain_text, texts) if text]
            if not texts:
                return None
        head = f"MSG {room.name} {sender.name} "
        return (head + ("\n" + head).join(texts) + "\n").encode("utf-8")

    def tell(self, sender, target, text, stamp, notice, tags):
        if not sender.plain:
            text = irc.plain_text(text)
            if not text:
                return None
        return format_tell(sender.name, text)

    def join(self, room, who):
        return format_join(room.name, who.name)

    def part(self, room, who, reason):
        return format_part(room.name, who.name, reason if who.plain else _plain(reason))

    def quit(self, room, who, reason):
        if room is None:
            return None
        return format_part(room.name, who.name, reason if who.plain else _plain(reason))

    def nick(self, room, who, old_name, old_prefix):
        return format_nick(old_name, who.name)

    def kick(self, room, by, target, reason):
        if not by.plain:
            reason = _plain(reason)
        return format_part(room.name, target.name, f"kicked by {by.name}: {reason}" if reason
                           else f"kicked by {by.name}")

    def topic(self, room, by, text):
        return format_topic(room.name, by.name, text)

    def tagmsg(self, room, sender, target, stamp, tags):
        return None

    def away(self, room, who, text):
        return None

    def mode(self, room, by, change, arg):
        return None


def _plain(text):
    """A reason from an IRC client without its formatting (a CTCP request as nothing)."""
    return irc.plain_text(text) or "" if text else text


#: The one native encoder: every native member shares it, so a room of native members is one group.
ENCODER = Encoder()

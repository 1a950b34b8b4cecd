"""What nodes tell each other: events as compact records, encoded locally by whoever receives them.

A node never publishes the bytes its own clients read: its members speak different protocols
(native, IRC with this or that capability), and so may the other nodes' members. It publishes
each event ONCE as a record saying what happened; every node that receives it applies it to its
own registry, which encodes it once per encoder group present in the room, as for a local event.

A PUBLISH payload is ``<node>\\n`` followed by records, each ``<kind><field>\\0<field>...\\n``
(UTF-8; fields are separated by NUL, records end with a line feed; neither occurs in any field:
names and rooms are ``[A-Za-z0-9_-]``, ids and IRC prefixes carry no control characters, and free
text is cleaned by :func:`_text`). A member elsewhere is described by what the encoders read of
it: its native ``name``, its IRC ``prefix`` (``nick!user@host``) and, for text it sends, whether
that text is ``plain`` (flag ``p``). The receiving side rebuilds it as a :class:`Remote`.

=======  =================================================================  ========================
kind     fields                                                             applied as
=======  =================================================================  ========================
``M``    room, name, prefix, flags (``p`` plain, ``n`` notice), time,       ``say``
         msgid, tags, text
``G``    room, name, prefix, time, msgid, tags                              ``tagmsg`` to a room
``T``    node, id, name, prefix, flags, time, msgid, tags, text             ``deliver_tell`` to id
``J``    room, name, prefix                                                 ``JOIN``
``P``    room, name, prefix, reason                                         ``PART``
``K``    room, by name, by prefix, name, prefix, reason                     ``KICK``
``Q``    name, prefix, reason, room...                                      quit (PART per room for
                                                                            native, one IRC QUIT)
``R``    dead node, name, prefix, reason, room...                           as ``Q``, except on the
                                                                            dead node itself
``N``    old name, old prefix, name, prefix, room...                        nickname change
``S``    room, name, prefix, topic (empty: cleared)                         ``TOPIC``
``W``    name, prefix, text (empty: back), room...                          IRC ``AWAY``
``O``    room, name, prefix, change, argument, modes                        IRC ``MODE``
=======  =================================================================  ========================

Tags are IRCv3 client tags, ``key=value;...`` with IRCv3 escaping, empty when there are none.
A message carries the stamp its sending node gave it (``Registry.stamp()``): its time, in
milliseconds, hexadecimal, and its IRCv3 ``msgid``, so IRC clients on every node see the same
time and id for it (and a reply or reaction naming that id means the same message everywhere).
The rooms of ``Q``, ``R``, ``N`` and ``W`` are the ones the sending node found within
``--presence-limit``; the receiving node checks its own room sizes again, as for its own events.
"""

import time

from ..codec.irc import escape_tag_value, unescape_tag_value

MSG = "M"
TAGMSG = "G"
TELL = "T"
JOIN = "J"
PART = "P"
KICK = "K"
QUIT = "Q"
REAPED = "R"
NICK = "N"
TOPIC = "S"
AWAY = "W"
MODE = "O"


class Remote:
    """A member of another node as the encoders see it: the stand-in sender of a record."""

    __slots__ = ("name", "prefix", "plain", "node", "id")

    def __init__(self, name, prefix, plain=True, node=None, member_id=None):
        self.name = name  #: what native clients see: its nickname, or its id
        self.prefix = prefix  #: ``nick!user@host`` as IRC clients see it
        self.plain = plain  #: its text is plain already (no IRC formatting to strip)
        self.node = node  #: its node and id, where known (the target of a TELL)
        self.id = member_id

    def __repr__(self):
        return f"<Remote {self.name}>"

    @property
    def ircnick(self):
        return self.prefix.partition("!")[0]

    @property
    def nick(self):
        """Its nickname, or None (a native member without one is named by its id)."""
        nick = self.ircnick
        return nick if nick == self.name else None

    @property
    def user(self):
        return self.prefix.partition("!")[2].partition("@")[0]

    @property
    def host(self):
        return self.prefix.partition("@")[2]


def _text(text):
    """Free text as a field: a NUL or a line feed (never in a valid line) would break records."""
    if "\0" in text or "\n" in text:
        return text.replace("\0", "").replace("\n", " ")
    return text


_FLAGS = {(True, False): "p", (True, True): "pn", (False, False): "", (False, True): "n"}


def encode_tags(tags):
    if not tags:
        return ""
    return ";".join(f"{key}={escape_tag_value(value)}" if value else key
                    for key, value in tags.items())


def decode_tags(field):
    if not field:
        return None
    tags = {}
    for item in field.split(";"):
        key, _, value = item.partition("=")
        tags[key] = unescape_tag_value(value)
    return tags


def _stamp(stamp):
    return f"{round(stamp[0] * 1000):x}\0{stamp[1]}"  # as format_time rounds it


def _unstamp(ms, msgid):
    try:
        return int(ms, 16) / 1000, msgid
    except ValueError:
        return time.time(), msgid


# -- building records (the sending node) -----------------------------------------------------------

def msg(room, member, text, notice, tags, stamp):
    return (f"M{room}\0{member.name}\0{member.prefix}\0{_FLAGS[member.plain, notice]}\0"
            f"{round(stamp[0] * 1000):x}\0{stamp[1]}\0{encode_tags(tags) if tags else ''}\0"
            f"{_text(text)}\n").encode()


def tagmsg(room, member, tags, stamp):
    return (f"G{room}\0{member.name}\0{member.prefix}\0{_stamp(stamp)}\0"
            f"{encode_tags(tags)}\n").encode()


def tell(node, member_id, member, text, notice, tags, stamp):
    return (f"T{node}\0{member_id}\0{member.name}\0{member.prefix}\0"
            f"{_FLAGS[member.plain, notice]}\0{_stamp(stamp)}\0{encode_tags(tags)}\0{_text(text)}\n").encode()


def join(room, member):
    return f"J{room}\0{member.name}\0{member.prefix}\n".encode()


def part(room, name, prefix, reason):
    return f"P{room}\0{name}\0{prefix}\0{_text(reason)}\n".encode()


def kick(room, by, name, prefix, reason):
    return f"K{room}\0{by.name}\0{by.prefix}\0{name}\0{prefix}\0{_text(reason)}\n".encode()


def quit(name, prefix, reason, rooms):
    return "\0".join(("Q" + name, prefix, _text(reason), *rooms)).encode() + b"\n"


def reaped(node, name, prefix, reason, rooms):
    return "\0".join(("R" + node, name, prefix, _text(reason), *rooms)).encode() + b"\n"


def nick(old_name, old_prefix, member, rooms):
    return "\0".join(("N" + old_name, old_prefix, member.name, member.prefix,
                      *rooms)).encode() + b"\n"


def topic(room, member, text):
    return f"S{room}\0{member.name}\0{member.prefix}\0{_text(text or '')}\n".encode()


def away(member, text, rooms):
    return "\0".join(("W" + member.name, member.prefix, _text(text or ""), *rooms)).encode() + b"\n"


def mode(room, member, change, arg, modes):
    return (f"O{room}\0{member.name}\0{member.prefix}\0{change}\0{arg or ''}\0"
            f"{modes or ''}\n").encode()


# -- applying records (every other node) -----------------------------------------------------------

def deliver(registry, payload):
    """Apply every record of one PUBLISH ``payload`` of another node to ``registry``.

    ``registry`` is a :class:`~chatroom.core.registry.Registry` with a ``node`` attribute (its
    name, to find a ``TELL`` addressed to it and skip a ``R`` that names it).
    """
    now = time.time()  # when it arrived: the time of a topic set elsewhere
    records = payload.decode("utf-8", "replace").split("\n")
    for record in records[1:]:  # records[0] is the node; the last part is empty
        if record:
            handler = _HANDLERS.get(record[0])
            if handler is not None:
                handler(registry, record[1:].split("\0"), now)


def _msg(r, f, now):
    room = r.rooms.get(f[0])
    if room is None:
        return
    flags = f[3]
    sender = Remote(f[1], f[2], "p" in flags)
    notice = "n" in flags
    stamp = _unstamp(f[4], f[5]) if room.stamped else None
    tags = decode_tags(f[6])
    text = f[7]
    for encoder, members in room.fan:
        data = encoder.msg(room, sender, text, stamp, notice, tags)
        if data is not None:
            r._fanout(members, data)


def _tagmsg(r, f, now):
    room = r.rooms.get(f[0])
    if room is None:
        return
    sender = Remote(f[1], f[2])
    stamp = _unstamp(f[3], f[4])
    tags = decode_tags(f[5])
    for encoder, members in room.fan:
        data = encoder.tagmsg(room, sender, None, stamp, tags)
        if data is not None:
            r._fanout(members, data)


def _tell(r, f, now):
    if f[0] != r.node:
        return
    target = r.ids.get(f[1])
    if target is None:
        return
    flags = f[4]
    sender = Remote(f[2], f[3], "p" in flags)
    stamp = _unstamp(f[5], f[6])
    data = target.encoder.tell(sender, target, f[8], stamp, "n" in flags, decode_tags(f[7]))
    if data is not None:
        r.send(target, data)


def _presence(r, name):
    """The local room ``name`` if its presence is announced (within the presence limit)."""
    room = r.rooms.get(name)
    if room is not None and len(room.members) <= r.presence_limit:
        return room
    return None


def _join(r, f, now):
    room = _presence(r, f[0])
    if room is not None:
        r._event(room, "join", Remote(f[1], f[2]))


def _part(r, f, now):
    room = _presence(r, f[0])
    if room is not None:
        r._event(room, "part", Remote(f[1], f[2]), f[3])


def _kick(r, f, now):
    room = r.rooms.get(f[0])
    if room is not None:
        r._event(room, "kick", Remote(f[1], f[2]), Remote(f[3], f[4]), f[5])


def _rooms(r, names):
    rooms = r.rooms
    return [rooms[name] for name in names if name in rooms]


def _quit(r, f, now):
    r._announce(Remote(f[0], f[1]), _rooms(r, f[3:]), "quit", f[2], self_too=False)


def _reaped(r, f, now):
    if f[0] != r.node:  # else this node was only cut off: its members are here still
        _quit(r, f[1:], now)


def _nick(r, f, now):
    r._announce(Remote(f[2], f[3]), _rooms(r, f[4:]), "nick", f[0], f[1], self_too=False)


def _topic(r, f, now):
    room = r.rooms.get(f[0])
    if room is None:
        return
    by = Remote(f[1], f[2])
    text = f[3]
    room.topic = (text, by.ircnick, int(now)) if text else None
    r._event(room, "topic", by, text)


def _away(r, f, now):
    r._announce(Remote(f[0], f[1]), _rooms(r, f[3:]), "away", f[2] or None, self_too=False)


def _mode(r, f, now):
    room = r.rooms.get(f[0])
    if room is None:
        return
    if f[5]:
        room.modes = f[5]
    r._event(room, "mode", Remote(f[1], f[2]), f[3], f[4] or None)


_HANDLERS = {
    MSG: _msg, TAGMSG: _tagmsg, TELL: _tell, JOIN: _join, PART: _part, KICK: _kick, QUIT: _quit,
    REAPED: _reaped, NICK: _nick, TOPIC: _topic, AWAY: _away, MODE: _mode,
}

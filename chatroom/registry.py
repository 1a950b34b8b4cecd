"""Who is where: rooms, members and nicknames, and fan-out of events into members' outboxes.

The registry never does I/O and never blocks. Delivering an event means appending its bytes
(encoded once, shared by every recipient) to each recipient's outbox, a plain list, and counting
them. Whoever owns the sockets (the server) is told through two hooks:

- ``on_ready()``: :attr:`Registry.ready` went from empty to non-empty; drain it soon.
- ``on_evict(member, reason)``: a member was removed by the registry itself (its outbox went
  over the limit); close its connection.

Because nothing here waits, one member that stops reading costs the room exactly one list append
per message until its outbox passes the limit and it is evicted; nobody else notices.
"""

import time

from .codec import native
from .codec.text import check_printable

LOBBY = "lobby"

#: Default hard outbox limit, in bytes: a member with more than this queued is evicted at once.
#: 1 MiB is some 4,000 typical lines: minutes of a busy room for a reader that is merely slow.
DEFAULT_OUTBOX_LIMIT = 1024 * 1024

#: Default soft outbox limit, in bytes, and how long (s) a member may stay above it. Catches a
#: reader that keeps up just enough never to hit the hard limit but is always far behind.
DEFAULT_OUTBOX_SOFT_LIMIT = 256 * 1024
DEFAULT_OUTBOX_SOFT_SECONDS = 10.0

#: Rooms with more members than this do not announce JOIN, PART and NICK to everyone (each
#: change would cost one line per member: a big room's churn would drown its chat). The member
#: that changed still gets its own confirmation, and WHO still lists everyone.
DEFAULT_PRESENCE_LIMIT = 200


class Member:
    """One connected client as the registry sees it. The server subclasses it to add its socket."""

    __slots__ = ("id", "nick", "name", "room", "outbox", "queued", "blocked", "soft_since", "gone",
                 "__weakref__")

    def __init__(self, member_id):
        self.id = member_id  #: ``addr:port``, fixed for the connection's life
        self.nick = None  #: nickname, or None
        self.name = member_id  #: what others see: the nickname if set, else the id
        self.room = None  #: the :class:`Room` the member is in
        self.outbox = []  #: bytes objects waiting to be sent, oldest first
        self.queued = 0  #: bytes waiting to be sent: the outbox plus what the writer holds
        self.blocked = False  #: set by the owner while the member's socket takes no more bytes
        self.soft_since = None  #: when ``queued`` went over the soft limit, or None
        self.gone = None  #: the reason it left, once it has

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class Room:
    __slots__ = ("name", "members", "who_line")

    def __init__(self, name):
        self.name = name
        self.members = {}  # Member -> None: insertion-ordered, O(1) removal, fast iteration
        #: The encoded WHO reply, built once and shared until someone enters, leaves or changes
        #: name: a WHO of a 10,000-member room is 10,000 names, not to be rebuilt per asker.
        self.who_line = None


class Registry:
    """Rooms, members and nicknames of one server; fans events out into outboxes."""

    def __init__(
        self,
        outbox_limit=DEFAULT_OUTBOX_LIMIT,
        soft_limit=DEFAULT_OUTBOX_SOFT_LIMIT,
        soft_seconds=DEFAULT_OUTBOX_SOFT_SECONDS,
        presence_limit=DEFAULT_PRESENCE_LIMIT,
        clock=time.monotonic,
    ):
        self.outbox_limit = outbox_limit
        # 0 switches the soft limit off; the per-recipient check then compares with the hard one.
        self.soft_limit = soft_limit if 0 < soft_limit < outbox_limit else 0
        self.soft_seconds = soft_seconds
        self.presence_limit = presence_limit
        self.clock = clock
        self.rooms = {}  # name -> Room
        self.nicks = {}  # casefolded nickname -> Member
        self.ids = {}  # id -> Member
        #: The encoded ROOMS reply, shared until any room's membership changes (as for WHO).
        self.rooms_line = None
        self.ready = []  #: members whose outbox became non-empty since the owner last took this
        self.on_ready = _nothing
        self.on_evict = _nothing

    def __len__(self):
        return len(self.ids)

    # -- membership ------------------------------------------------------------------------------

    def add(self, member, greeting=None):
        """Register a new member in the lobby; ``greeting`` (bytes) is queued to it first."""
        self.ids[member.id] = member
        if greeting is not None:
            self.send(member, greeting)
        self._enter(member, LOBBY)

    def remove(self, member, reason="disconnected", announce=True):
        """Forget ``member``; the rest of its room is told unless ``announce`` is false."""
        if self.ids.get(member.id) is not member:
            return False
        del self.ids[member.id]
        if member.nick is not None:
            self.nicks.pop(member.nick.casefold(), None)
        room = member.room
        if room is not None:
            self._leave(member, room)
            if announce and room.members and len(room.members) < self.presence_limit:
                self._fanout(room.members, native.format_part(room.name, member.name, reason))
        return True

    def join(self, member, room_name):
        native.check_name(room_name, "room")
        old = member.room
        if old is not None and old.name == room_name:
            self.send(member, native.format_join(room_name, member.name))
            return
        if old is not None:
            self._leave(member, old)
            if old.members and len(old.members) < self.presence_limit:
                self._fanout(old.members, native.format_part(old.name, member.name, "join"))
        self._enter(member, room_name)

    def set_nick(self, member, nick):
        native.check_name(nick, "nickname")
        key = nick.casefold()
        holder = self.nicks.get(key)
        if holder is not None and holder is not member:
            raise native.ProtocolError("nick-taken", f"nickname '{nick}' is in use")
        if member.nick == nick:
            self.send(member, native.format_nick(nick, nick))  # confirm; nobody else cares
            return
        if member.nick is not None:
            del self.nicks[member.nick.casefold()]
        self.nicks[key] = member
        old = member.name
        member.nick = member.name = nick
        member.room.who_line = None
        self._presence(member, native.format_nick(old, nick))

    def find(self, who):
        """The member called ``who`` (nickname, case-insensitively, or id), or None."""
        return self.nicks.get(who.casefold()) or self.ids.get(who)

    # -- talking ---------------------------------------------------------------------------------

    def say(self, member, text):
        """``member`` says ``text`` in its room: everyone else there gets one ``MSG``."""
        room = member.room
        self._fanout(room.members, native.format_msg(room.name, member.name, text), member)

    def tell(self, member, who, text):
        target = self.find(who)
        if target is None:
            shown = check_printable(who[:64])
            raise native.ProtocolError("no-such-nick", f"nobody is called '{shown}'")
        self.send(target, native.format_tell(member.name, text))

    def who(self, member):
        room = member.room
        if room.who_line is None:
            room.who_line = native.format_who(room.name, [m.name for m in room.members])
        self.send(member, room.who_line)

    def list_rooms(self, member):
        if self.rooms_line is None:
            counts = [(r.name, len(r.members)) for r in self.rooms.values()]
            self.rooms_line = native.format_rooms(counts)
        self.send(member, self.rooms_line)

    def send(self, member, data):
        """Queue ``data`` (bytes) to one member."""
        self._fanout((member,), data)

    def broadcast_all(self, data):
        """Queue ``data`` to every member of every room (server notices, shutdown)."""
        for room in list(self.rooms.values()):
            self._fanout(room.members, data)

    # -- internals -------------------------------------------------------------------------------

    def _enter(self, member, room_name):
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = Room(room_name)
        room.members[member] = None
        room.who_line = self.rooms_line = None
        member.room = room
        self._presence(member, native.format_join(room_name, member.name))

    def _leave(self, member, room):
        del room.members[member]
        room.who_line = self.rooms_line = None
        member.room = None
        if not room.members:
            del self.rooms[room.name]

    def _presence(self, member, data):
        """A change of ``member`` that its room hears about if the room is small enough."""
        members = member.room.members
        self._fanout(members if len(members) <= self.presence_limit else (member,), data)

    def _fanout(self, members, data, skip=None):
        """Append ``data`` to the outbox of each of ``members`` except ``skip``.

        This is the per-recipient hot path: one list append, one add and one compare each. The
        rare cases (first bytes for an idle member, a member over a limit) branch off it.
        """
        size = len(data)
        ready = self.ready
        was_idle = not ready
        threshold = self.soft_limit or self.outbox_limit
        over = None
        for m in members:
            if m is skip:
                continue
            box = m.outbox
            if not box:
                ready.append(m)
            box.append(data)
            m.queued += size
            if m.queued > threshold:
                if over is None:
                    over = []
                over.append(m)
        if was_idle and ready:
            self.on_ready()
        if over is not None:
            self._check_over(over)

    def _check_over(self, members):
        now = self.clock()
        for m in members:
            if m.gone is not None or self.ids.get(m.id) is not m:
                continue
            if m.queued > self.outbox_limit:
                # A member whose socket still takes bytes is not slow, only handed a burst
                # (one read of a paste can queue more than a small limit): its owner checks
                # again after sending (check_backlog). One that is blocked is out at once.
                if m.blocked:
                    self.evict(m, "slow-consumer")
            elif m.soft_since is None:
                m.soft_since = now
            elif now - m.soft_since > self.soft_seconds:
                self.evict(m, "slow-consumer")

    def check_backlog(self, member):
        """The owner sent what the socket would take; evict ``member`` if the rest is over the limit."""
        if member.queued > self.outbox_limit and self.ids.get(member.id) is member:
            self.evict(member, "slow-consumer")

    def evict(self, member, reason):
        """Remove ``member`` for ``reason`` and tell the owner to close its connection."""
        if self.remove(member, reason):
            member.gone = reason
            self.on_evict(member, reason)


def _nothing(*args):
    pass

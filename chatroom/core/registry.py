"""Who is where: rooms, members and nicknames, and fan-out of events into members' outboxes.

The registry never does I/O and never blocks. Delivering an event means appending its bytes to
each recipient's outbox, a plain list, and counting them. Every member has an ``encoder``, the
object that turns the registry's events into its wire protocol's bytes (the native protocol's, or
IRC's with the capabilities that client negotiated). A room keeps its members grouped by encoder,
so an event is encoded once per encoder present in the room and the same bytes are shared by
every recipient of that group: the per-recipient loop stays an append, an add and a compare.

Whoever owns the sockets (the server) is told through two hooks:

- ``on_ready()``: :attr:`Registry.ready` went from empty to non-empty; drain it soon.
- ``on_evict(member, reason)``: a member was removed by the registry itself (its outbox went
  over the limit); close its connection.
- ``on_message(room, member, texts, stamps, notice)``: ``member`` said ``texts`` in ``room``
  (each with its ``(time, msgid)`` stamp); None when nobody keeps history. It must not block.
- ``on_private(member, target, text, stamp, notice)``: ``member`` sent ``target`` a private
  message delivered here; None when nobody keeps history. It must not block.

Native members are in exactly one room (protocol v1: ``JOIN`` moves). Members whose class sets
``multi`` (IRC clients) may be in any number of rooms, kept in their ``channels``; a change of
theirs (a new nickname, leaving the server) reaches each other member once, however many rooms
they share.
"""

import itertools
import time

from ..codec import irc, native
from ..codec.text import check_printable
from .. import settings

LOBBY = "lobby"


class Member:
    """One connected client as the registry sees it. The server subclasses it to add its socket."""

    __slots__ = ("id", "nick", "name", "room", "outbox", "queued", "blocked", "soft_since", "gone",
                 "_prefix", "__weakref__")

    #: Turns events into this member's wire protocol; the native protocol unless a subclass says.
    encoder = native.ENCODER
    #: False: in one room at a time (``room``); True: in any number (``channels``).
    multi = False
    #: The user part of the IRC-style ``nick!user@host`` source others on IRC see.
    user = "~native"
    #: Its text is already plain (no IRC formatting to strip for terminal users).
    plain = True

    def __init__(self, member_id):
        self.id = member_id  #: ``addr:port``, fixed for the connection's life
        self.nick = None  #: nickname, or None
        self.name = member_id  #: what native clients see: the nickname if set, else the id
        self.room = None  #: the :class:`Room` a single-room member is in
        self.outbox = []  #: bytes objects waiting to be sent, oldest first
        self.queued = 0  #: bytes waiting to be sent: the outbox plus what the writer holds
        self.blocked = False  #: set by the owner while the member's socket takes no more bytes
        self.soft_since = None  #: when ``queued`` went over the soft limit, or None
        self.gone = None  #: the reason it left, once it has
        self._prefix = None  #: cached ``nick!user@host``

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    def joined(self):
        """The rooms this member is in."""
        return (self.room,) if self.room is not None else ()

    @property
    def host(self):
        return self.id.rpartition(":")[0].strip("[]")

    @property
    def prefix(self):
        """``nick!user@host`` as IRC clients see this member (a native id mapped to a nickname)."""
        if self._prefix is None:
            nick = self.nick if self.nick is not None else (irc.id_to_nick(self.id) or "guest")
            self._prefix = f"{nick}!{self.user}@{self.host}"
        return self._prefix

    @property
    def ircnick(self):
        return self.prefix.partition("!")[0]


class Room:
    __slots__ = ("name", "members", "groups", "fan", "stamped", "who_line", "ops", "voices",
                 "topic", "modes", "created")

    def __init__(self, name):
        self.name = name
        self.members = {}  # Member -> None: insertion-ordered, O(1) removal, fast iteration
        self.groups = {}  # encoder -> {Member: None}: the members each encoded event goes to
        #: ``groups.items()`` as a tuple, rebuilt when a group comes or goes: fan-out iterates
        #: it while evictions may change ``groups``.
        self.fan = ()
        self.stamped = False  #: some encoder here shows a message's time or id
        #: The encoded WHO reply, built once and shared until someone enters, leaves or changes
        #: name: a WHO of a 10,000-member room is 10,000 names, not to be rebuilt per asker.
        self.who_line = None
        self.ops = {}  #: room operators (Member -> None): the first member, and whom ops made so
        self.voices = {}  #: members who may speak in a moderated (+m) room
        self.topic = None  #: (text, set by, time) or None
        self.modes = "nt"  #: channel modes: n (members only may speak), t (ops set the topic)
        self.created = int(time.time())

    def __len__(self):
        return len(self.members)

    def group(self, member):
        """Put ``member`` in the group of its encoder."""
        group = self.groups.get(member.encoder)
        if group is None:
            group = self.groups[member.encoder] = {}
            self._regroup()
        group[member] = None

    def ungroup(self, member, encoder):
        group = self.groups[encoder]
        del group[member]
        if not group:
            del self.groups[encoder]
            self._regroup()

    def _regroup(self):
        self.fan = tuple(self.groups.items())
        self.stamped = any(encoder.stamped for encoder in self.groups)


class Registry:
    """Rooms, members and nicknames of one server; fans events out into outboxes."""

    #: Whether a name :meth:`tell` does not find is surely nobody's on the whole chat (a cluster
    #: node cut off from the others sees only its own members).
    sees_everyone = True

    def __init__(
        self,
        outbox_limit=settings.default("outbox-limit"),
        soft_limit=settings.default("outbox-soft-limit"),
        soft_seconds=settings.default("outbox-soft-seconds"),
        presence_limit=settings.default("presence-limit"),
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
        self.folded = {}  # casefolded room name -> the name of a room that folds to it
        self.id_base = ""  #: what makes message ids unique beyond this process (a cluster node's name)
        self._serials = itertools.count(1)
        #: The encoded ROOMS reply, shared until any room's membership changes (as for WHO).
        self.rooms_line = None
        self.ready = []  #: members whose outbox became non-empty since the owner last took this
        self.on_ready = _nothing
        self.on_evict = _nothing
        self.on_message = None
        self.on_private = None

    def __len__(self):
        return len(self.ids)

    # -- membership ------------------------------------------------------------------------------

    def add(self, member, greeting=None, room=LOBBY, nick=None):
        """Register a new member; ``greeting`` (bytes) is queued to it first, then it enters ``room``.

        With ``nick`` the member arrives with that nickname (IRC registration), or not at all:
        ``nick-taken`` if someone has it.
        """
        if nick is not None:
            self._check_nick(member, nick)
            self.nicks[nick.casefold()] = member
            member.nick = member.name = nick
            member._prefix = None
        self.ids[member.id] = member
        if greeting is not None:
            self.reply(member, greeting)
        if room is not None:
            self._enter(member, room)

    def remove(self, member, reason="disconnected", announce=True):
        """Forget ``member``; the rest of its rooms are told unless ``announce`` is false."""
        if self.ids.get(member.id) is not member:
            return False
        del self.ids[member.id]
        if member.nick is not None:
            self.nicks.pop(member.nick.casefold(), None)
        rooms = list(member.joined())
        if announce:
            self._announce(member, rooms, "quit", reason, self_too=False)
        for room in rooms:
            self._leave(member, room)
        return True

    def join(self, member, room_name):
        """A single-room member moves to ``room_name`` (native ``JOIN``)."""
        native.check_name(room_name, "room")
        old = member.room
        if old is not None and old.name == room_name:
            self.send(member, member.encoder.join(old, member))
            return
        if old is not None:
            self._leave(member, old)
            if old.members and len(old.members) < self.presence_limit:
                self._event(old, "part", member, "join")
        self._enter(member, room_name)

    def enter(self, member, room_name):
        """A multi-room member enters ``room_name`` too; returns the room, or None if already in."""
        room = self.rooms.get(room_name)
        if room is not None and member in room.members:
            return None
        return self._enter(member, room_name)

    def part(self, member, room, reason=""):
        """A multi-room member leaves ``room``; the room, the member included, hears it."""
        if member not in room.members:
            return False
        if len(room.members) <= self.presence_limit:
            self._event(room, "part", member, reason)
        else:
            self.send(member, member.encoder.part(room, member, reason))
        self._leave(member, room)
        return True

    def kick(self, by, room, target, reason):
        """``by`` puts ``target`` out of ``room``; everyone there (``target`` too) hears it.

        A single-room member has to be somewhere: it goes back to the lobby, or, kicked from the
        lobby itself, is disconnected (``on_evict`` with ``kicked``).
        """
        if target not in room.members:
            return False
        self._event(room, "kick", by, target, reason)
        self._leave(target, room)
        self._kicked(room, by, target, reason)
        if not target.multi:
            if room.name == LOBBY:
                self.evict(target, "kicked")
            else:
                self._enter(target, LOBBY)
        return True

    def _kicked(self, room, by, target, reason):
        """``target`` was just put out of ``room``, before it goes anywhere else (a cluster tells
        the other servers here, so that the kick comes before the lobby's JOIN)."""

    def _check_nick(self, member, nick):
        native.check_name(nick, "nickname")
        if irc.GUEST_NICK_RE.match(nick):
            raise native.ProtocolError("nick-invalid", f"'{nick}' is kept for unnamed clients")
        holder = self.nicks.get(nick.casefold())
        if holder is not None and holder is not member:
            raise native.ProtocolError("nick-taken", f"nickname '{nick}' is in use")

    def set_nick(self, member, nick):
        self._check_nick(member, nick)
        key = nick.casefold()
        if member.nick == nick:
            self.send(member, member.encoder.nick(None, member, member.name, member.prefix))
            return
        if member.nick is not None:
            del self.nicks[member.nick.casefold()]
        self.nicks[key] = member
        old_name, old_prefix = member.name, member.prefix
        member.nick = member.name = nick
        member._prefix = None
        rooms = member.joined()
        for room in rooms:
            room.who_line = None
        self._announce(member, rooms, "nick", old_name, old_prefix)

    def find_nick(self, nick):
        """The member with the nickname ``nick`` (case-insensitively), or None."""
        return self.nicks.get(nick.casefold())

    def find_room(self, name):
        """The room called ``name``, or else one whose name differs only in case, or None.

        Native room names are case-sensitive; IRC channel names are not, so ``#Dev`` finds room
        ``Dev`` or, failing that, ``dev``.
        """
        room = self.rooms.get(name)
        if room is None:
            folded = self.folded.get(name.casefold())
            room = self.rooms.get(folded) if folded is not None else None
        return room

    def find(self, who):
        """The member called ``who`` (nickname, case-insensitively, or id), or None."""
        return (self.nicks.get(who.casefold()) or self.ids.get(who)
                or self.ids.get(irc.nick_to_id(who) or ""))

    # -- talking ---------------------------------------------------------------------------------

    def say(self, member, text, room=None, notice=False, tags=None):
        """``member`` says ``text`` in ``room`` (its own room by default): everyone else there hears it."""
        if room is None:
            room = member.room
        skip = None if member.encoder.echo else member
        recorder = self.on_message
        stamp = self.stamp() if room.stamped or recorder is not None else None
        if recorder is not None:
            recorder(room, member, (text,), (stamp,), notice)
        for encoder, members in room.fan:
            data = encoder.msg(room, member, text, stamp, notice, tags)
            if data is not None:
                self._fanout(members, data, skip)

    def say_batch(self, member, texts, room=None):
        """``member`` says each of ``texts`` in ``room`` (its own room by default): one fan-out
        of the joined lines."""
        if room is None:
            room = member.room
        skip = None if member.encoder.echo else member
        recorder = self.on_message
        stamps = [self.stamp() for _ in texts] if room.stamped or recorder is not None else None
        if recorder is not None:
            recorder(room, member, texts, stamps, False)
        for encoder, members in room.fan:
            data = encoder.msg_batch(room, member, texts, stamps)
            if data is not None:
                self._fanout(members, data, skip)

    def tell(self, member, who, text, notice=False, tags=None):
        target = self.find(who)
        if target is None:
            shown = check_printable(who[:64])
            raise native.ProtocolError("no-such-nick", f"nobody is called '{shown}'")
        self.deliver_tell(member, target, text, notice, tags)
        return target

    def deliver_tell(self, member, target, text, notice=False, tags=None):
        stamp = self.stamp()
        data = target.encoder.tell(member, target, text, stamp, notice, tags)
        if data is not None:
            self.send(target, data)
        if member.encoder.echo:  # to itself too: the echo is its own copy (echo-message)
            self.send(member, member.encoder.tell(member, target, text, stamp, notice, tags))
        if self.on_private is not None:
            self.on_private(member, target, text, stamp, notice)

    def stamp(self):
        """``(time, msgid)`` of a message entering now: its server time and its unique id."""
        now = time.time()
        return now, f"{int(now * 1000):x}-{self.id_base}{next(self._serials):x}"

    def set_encoder(self, member, encoder):
        """``member`` negotiated something that changes its bytes: move it to its new groups."""
        old, member.encoder = member.encoder, encoder
        if old is not encoder:
            for room in member.joined():
                room.ungroup(member, old)
                room.group(member)

    def set_topic(self, member, room, text):
        room.topic = (text, member.ircnick, int(time.time())) if text else None
        self._event(room, "topic", member, text)

    def set_away(self, member, text):
        """Tell those who share a room with ``member`` and asked for it (IRC away-notify)."""
        self._announce(member, member.joined(), "away", text, self_too=False)

    def set_op(self, by, room, target, on):
        _switch(room.ops, target, on)
        self._event(room, "mode", by, "+o" if on else "-o", target.ircnick)

    def set_voice(self, by, room, target, on):
        _switch(room.voices, target, on)
        self._event(room, "mode", by, "+v" if on else "-v", target.ircnick)

    def tagmsg(self, member, room, target, tags):
        """Tags without text (IRCv3 TAGMSG) to ``room`` or to ``target``."""
        stamp = self.stamp()
        if room is not None:
            skip = None if member.encoder.echo else member
            for encoder, members in room.fan:
                data = encoder.tagmsg(room, member, None, stamp, tags)
                if data is not None:
                    self._fanout(members, data, skip)
            return
        data = target.encoder.tagmsg(None, member, target, stamp, tags)
        if data is not None:
            self.send(target, data)
        if member.encoder.echo:  # to itself too: the echo is its own copy (echo-message)
            data = member.encoder.tagmsg(None, member, target, stamp, tags)
            if data is not None:
                self.send(member, data)

    def set_modes(self, by, room, change, modes):
        room.modes = modes
        self._event(room, "mode", by, change, None)

    def find_anywhere(self, who):
        """As :meth:`find`, and in a cluster the member of another server called ``who`` too
        (a stand-in with its name and address). May wait for the answer."""
        return self.find(who)

    def others_in(self, room_name):
        """``[(name, prefix or None)]`` of the members of ``room_name`` on other servers (a
        cluster's), in the order they came in; none here. May wait for the answer."""
        return []

    def others_count(self):
        """``{room name: members}`` on other servers (a cluster's); none here. May wait."""
        return {}

    def cluster_size(self):
        """``(servers, members on the other servers)``: one server alone. May wait."""
        return 1, 0

    def who(self, member):
        room = member.room
        if room.who_line is None:
            room.who_line = native.format_who(room.name, [m.name for m in room.members])
        self.reply(member, room.who_line)

    def list_rooms(self, member):
        if self.rooms_line is None:
            counts = [(r.name, len(r.members)) for r in self.rooms.values()]
            self.rooms_line = native.format_rooms(counts)
        self.reply(member, self.rooms_line)

    def send(self, member, data):
        """Queue ``data`` (bytes, ready for its wire: an encoder's output) to one member."""
        self._fanout((member,), data)

    def reply(self, member, data):
        """Queue ``data``, lines of the member's own protocol (an error, a pong, a numeric).

        A member whose encoder frames its lines (WebSocket) gets them framed; for the others
        ``wrap`` is None and this is :meth:`send`.
        """
        wrap = member.encoder.wrap
        self._fanout((member,), data if wrap is None else wrap(data))

    def relay_lines(self, room, data):
        """Queue ``data`` (native protocol lines) to everyone in ``room``: as they are, or framed
        once for each encoder that frames (WebSocket) present."""
        for encoder, members in room.fan:
            wrap = encoder.wrap
            self._fanout(members, data if wrap is None else wrap(data))

    def broadcast_all(self, data):
        """Queue ``data`` (lines) to every member (server notices, shutdown)."""
        plain = []
        for member in self.ids.values():
            if member.encoder.wrap is None:
                plain.append(member)
            else:
                self.reply(member, data)
        self._fanout(plain, data)

    # -- internals -------------------------------------------------------------------------------

    def _enter(self, member, room_name):
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = Room(room_name)
            self.folded.setdefault(room_name.casefold(), room_name)
            room.ops[member] = None  # the first member of a new room is its operator
        room.members[member] = None
        room.group(member)
        room.who_line = self.rooms_line = None
        if member.multi:
            member.channels[room] = None
        else:
            member.room = room
        if len(room.members) <= self.presence_limit:
            self._event(room, "join", member)
        else:
            self.send(member, member.encoder.join(room, member))
        return room

    def _leave(self, member, room):
        del room.members[member]
        room.ungroup(member, member.encoder)
        room.ops.pop(member, None)
        room.voices.pop(member, None)
        room.who_line = self.rooms_line = None
        if member.multi:
            member.channels.pop(room, None)
        else:
            member.room = None
        if not room.members:
            del self.rooms[room.name]
            folded = room.name.casefold()
            if self.folded.get(folded) == room.name:
                del self.folded[folded]
                for other in self.rooms:  # rare: another room whose name differs only in case
                    if other.casefold() == folded:
                        self.folded[folded] = other
                        break

    def _event(self, room, kind, *args):
        """Everyone in ``room`` hears event ``kind``: encoded once per encoder present."""
        for encoder, members in room.fan:
            data = getattr(encoder, kind)(room, *args)
            if data is not None:
                self._fanout(members, data)

    def _announce(self, member, rooms, kind, *args, self_too=True):
        """A change of ``member`` itself (``nick``, ``quit``, ``away``) reaches each room it is in.

        An encoder whose lines name the room (``per_room``: the native protocol's ``PART``) gets
        one line per room; any other (IRC's ``QUIT``, ``NICK``) one line per recipient, however
        many rooms it shares with ``member``. Rooms over the presence limit are not told.
        """
        shared = {}  # encoder -> {recipient: None}
        limit = self.presence_limit
        for room in rooms:
            if len(room.members) > limit:
                continue
            for encoder, members in room.fan:
                if encoder.per_room:
                    data = getattr(encoder, kind)(room, member, *args)
                    if data is not None:
                        self._fanout(members, data, member)
                else:
                    recipients = shared.get(encoder)
                    if recipients is None:
                        shared[encoder] = dict(members)
                    else:
                        recipients.update(members)
        for encoder, recipients in shared.items():
            recipients.pop(member, None)
            data = getattr(encoder, kind)(None, member, *args)
            if data is not None:
                self._fanout(recipients, data)
        if self_too:
            data = getattr(member.encoder, kind)(None, member, *args)
            if data is not None:
                self.send(member, data)

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


def _switch(members, member, on):
    if on:
        members[member] = None
    else:
        members.pop(member, None)

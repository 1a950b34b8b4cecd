"""The cluster node's registry: the in-process one, with every change also told to the others.

Each operation does what the in-process :class:`~chatroom.core.registry.Registry` does for the
node's own members, then queues for Redis (never waiting) first the change of this node's state
(who is in which room, under which name) and then ONE event record (:mod:`.records`) that every
other node applies to its own members. Nicknames are claimed in Redis before they are taken.
"""

import itertools
import logging
import os
import re
import socket
import time

from ..codec import irc, native
from ..core.registry import LOBBY, Member, Registry
from . import records
from .link import NICKS_PER_SCRIPT, Link
from .records import Remote
from .scripts import (NODE_KEY_PREFIX, REAPED_KEY_PREFIX, SCRIPT_ID_SET, SCRIPT_MEMBER_DEL,
                      SCRIPT_MEMBER_SET, SCRIPT_RELEASE, SCRIPT_RELEASE_DEAD, nick_key)

log = logging.getLogger("chatroom.cluster")

#: Default seconds a node's members and nicknames outlive its last heartbeat: how long a dead
#: node's members still show in WHO and its nicknames stay taken. Long enough that a busy Redis or
#: a GC pause never expires a live node (heartbeats come every third of it).
DEFAULT_TTL = 15.0
#: Seconds a stopping node waits for its queue to reach Redis before it leaves anyway.
LEAVE_TIMEOUT = 2.0

def default_node_name():
    """``<hostname>-<pid>``, with anything unsafe in the hostname replaced by ``-``."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}"


def format_notice(code, text):
    """A ``NOTICE <code> <text>`` line (docs/protocol.md, cluster notices)."""
    return native.format_command("NOTICE", code, text)


class ClusterRegistry(Registry):
    """A :class:`Registry` whose rooms, nicknames and messages span every node on one Redis.

    Rooms hold this node's members only; a member of another node is known here only while one
    of its events is applied (a :class:`~.records.Remote`), or through a lookup in Redis (``WHO``,
    ``ROOMS``, ``TELL``). Room state other than membership (topic, modes, operators, voices) is
    kept per node; changes of topic and modes are applied by every node that has the room.
    """

    def __init__(self, url, node=None, ttl=DEFAULT_TTL, **limits):
        super().__init__(**limits)
        self.node = node or default_node_name()
        self.ttl = ttl
        self._stamps = {}  # (member id, room) -> time.time() it entered: orders WHO across nodes
        self._owners = {}  # member id -> "<node> <id> <serial>", its value in nickname keys
        self._owner_serials = itertools.count(1)
        # Message ids (IRCv3 msgid) unique across the cluster, not only in this process.
        self.id_base = self.node + "-"
        prefix = NODE_KEY_PREFIX + self.node
        self.ids_key = prefix + ":ids"
        self.rooms_key = prefix + ":rooms"
        self.room_prefix = prefix + ":room:"
        self.reaped_key = REAPED_KEY_PREFIX + self.node
        self.link = Link(url, self)

    def start(self):
        self.link.start()

    def leave(self, timeout=LEAVE_TIMEOUT):
        """Graceful exit: flush what is queued, then take this node out of Redis at once."""
        self.link.close(timeout)

    def _shown(self, rooms):
        """Names of those of ``rooms`` whose presence events are announced (presence limit)."""
        limit = self.presence_limit
        return [room.name for room in rooms if len(room.members) <= limit]

    # -- membership ------------------------------------------------------------------------------

    def add(self, member, greeting=None, room=LOBBY, nick=None):
        owner = self._owners[member.id] = f"{self.node} {member.id} {next(self._owner_serials)}"
        try:
            if nick is not None:
                self._claim(member, nick, owner)
            super().add(member, greeting, None, nick)
        except BaseException:
            self._owners.pop(member.id, None)
            raise
        self._store_id(member)
        if room is not None:
            self._enter(member, room)

    def _claim(self, member, nick, owner):
        """Claim ``nick`` in Redis for a member arriving with it (IRC registration)."""
        self._check_nick(member, nick)
        key = nick.casefold()
        claimed = self.link.claim_nick(key, owner)
        # The claim waited on Redis: the connection may have closed, or a local member taken it.
        holder = self.nicks.get(key)
        if getattr(member, "closing", False) or (holder is not None and holder is not member):
            if claimed:
                self.link.command("EVAL", SCRIPT_RELEASE, 1, nick_key(key), owner)
            claimed = False
        if claimed is False:
            raise native.ProtocolError("nick-taken", f"nickname '{nick}' is in use")
        # None: Redis is unreachable; the name is taken here only and claimed on reconnect.

    def remove(self, member, reason="disconnected", announce=True):
        rooms = tuple(member.joined())
        name, prefix, nick = member.name, member.prefix, member.nick
        if not super().remove(member, reason, announce):
            return False
        owner = self._owners.pop(member.id, None)
        if nick is not None:
            self.link.command("EVAL", SCRIPT_RELEASE, 1, nick_key(nick.casefold()), owner)
        self.link.command("HDEL", self.ids_key, member.id)
        # Other nodes hear even when this one is shutting down (announce false): they stay. The
        # rooms are empty of the member now, so the limit counts it: "<" where others have "<=".
        shown = [room.name for room in rooms if len(room.members) < self.presence_limit]
        if shown:
            self.link.publish(records.quit(name, prefix, reason, shown))
        return True

    def join(self, member, room_name):
        old = member.room
        if old is None or old.name == room_name:
            return super().join(member, room_name)
        native.check_name(room_name, "room")
        name, prefix = member.name, member.prefix
        self._leave(member, old)
        if len(old.members) < self.presence_limit:
            if old.members:
                self._event(old, "part", member, "join")
            self.link.publish(records.part(old.name, name, prefix, "join"))
        self._enter(member, room_name)
        return None

    def part(self, member, room, reason=""):
        shown = len(room.members) <= self.presence_limit
        if not super().part(member, room, reason):
            return False
        if shown:
            self.link.publish(records.part(room.name, member.name, member.prefix, reason))
        return True

    def _kicked(self, room, by, target, reason):
        self.link.publish(records.kick(room.name, by, target.name, target.prefix, reason))

    # -- nicknames -------------------------------------------------------------------------------

    def set_nick(self, member, nick):
        self._check_nick(member, nick)  # valid, and not taken here
        key = nick.casefold()
        old = member.nick
        if old is not None and old.casefold() == key:
            return self._rename(member, nick)  # same name, other case: nothing to claim
        owner = self._owners[member.id]
        claimed = self.link.claim_nick(key, owner, old.casefold() if old is not None else None)
        # The claim waited on Redis: the member may have left, or another local one taken the name.
        holder = self.nicks.get(key)
        if self.ids.get(member.id) is not member or (holder is not None and holder is not member):
            if claimed:
                self.link.command("EVAL", SCRIPT_RELEASE, 1, nick_key(key), owner)
            if self.ids.get(member.id) is not member:
                return None
            claimed = False
        if claimed is False:
            raise native.ProtocolError("nick-taken", f"nickname '{nick}' is in use")
        # None: Redis is unreachable; the name is taken here only and claimed on reconnect.
        return self._rename(member, nick)

    def _rename(self, member, nick):
        old_name, old_prefix = member.name, member.prefix
        super().set_nick(member, nick)
        if member.name != old_name or member.prefix != old_prefix:
            self._store(member)  # before the NICK event goes out, so WHO agrees with it
            self._publish_nick(member, old_name, old_prefix)

    def _publish_nick(self, member, old_name, old_prefix):
        shown = self._shown(member.joined())
        if shown:
            self.link.publish(records.nick(old_name, old_prefix, member, shown))

    # -- talking ---------------------------------------------------------------------------------

    def say(self, member, text, room=None, notice=False, tags=None):
        """As :meth:`Registry.say`, always stamped: another node's readers may show its time and
        id even where no reader here does, and every node must show the same."""
        if room is None:
            room = member.room
        skip = None if member.encoder.echo else member
        stamp = self.stamp()
        if self.on_message is not None:  # the history: what is said on this node, once
            self.on_message(room, member, (text,), (stamp,), notice)
        for encoder, members in room.fan:
            data = encoder.msg(room, member, text, stamp, notice, tags)
            if data is not None:
                self._fanout(members, data, skip)
        self.link.publish(records.msg(room.name, member, text, notice, tags, stamp))

    def say_batch(self, member, texts, room=None):
        """As :meth:`Registry.say_batch`: one local fan-out; other nodes get a record a message."""
        if room is None:
            room = member.room
        skip = None if member.encoder.echo else member
        stamps = [self.stamp() for _ in texts]
        if self.on_message is not None:
            self.on_message(room, member, texts, stamps, False)
        for encoder, members in room.fan:
            data = encoder.msg_batch(room, member, texts, stamps)
            if data is not None:
                self._fanout(members, data, skip)
        for text, stamp in zip(texts, stamps):
            self.link.publish(records.msg(room.name, member, text, False, None, stamp))

    def tell(self, member, who, text, notice=False, tags=None):
        """As :meth:`Registry.tell`; someone on another node gets it through Redis (returned as
        a :class:`~.records.Remote`)."""
        if self.find(who) is None and self.link.up:
            target = self._locate(who)
            if self.ids.get(member.id) is not member:
                return None  # it left while Redis answered
            if target is not None:
                stamp = self.stamp()
                self.link.publish(records.tell(target.node, target.id, member, text, notice, tags,
                                               stamp))
                if member.encoder.echo:
                    data = member.encoder.tell(member, target, text, stamp, notice, tags)
                    if data is not None:
                        self.send(member, data)
                return target
        return super().tell(member, who, text, notice, tags)

    @property
    def sees_everyone(self):
        """Only while linked: cut off, a name not found here may be someone's on another node."""
        return self.link.up

    def _locate(self, who):
        """The member of another node called ``who``, as a :class:`Remote`, or None."""
        ids = [who]
        guest = irc.nick_to_id(who)
        if guest is not None:
            ids.append(guest)
        where = self.link.locate(who, ids)
        if where is None or where[0] == self.node:
            return None
        node, member_id, ident = where
        if ident:
            name, _, prefix = ident.partition(" ")
        else:  # written by a node that did not say who its members are
            name, prefix = who, _guest_prefix(member_id, who)
        return Remote(name, prefix, node=node, member_id=member_id)

    def tagmsg(self, member, room, target, tags):
        if room is None:
            return super().tagmsg(member, room, target, tags)
        stamp = self.stamp()
        skip = None if member.encoder.echo else member
        for encoder, members in room.fan:
            data = encoder.tagmsg(room, member, None, stamp, tags)
            if data is not None:
                self._fanout(members, data, skip)
        self.link.publish(records.tagmsg(room.name, member, tags, stamp))
        return None

    def set_topic(self, member, room, text):
        super().set_topic(member, room, text)
        self.link.publish(records.topic(room.name, member, text))

    def set_away(self, member, text):
        super().set_away(member, text)
        shown = self._shown(member.joined())
        if shown:
            self.link.publish(records.away(member, text, shown))

    def set_op(self, by, room, target, on):
        super().set_op(by, room, target, on)
        self.link.publish(records.mode(room.name, by, "+o" if on else "-o", target.ircnick, None))

    def set_voice(self, by, room, target, on):
        super().set_voice(by, room, target, on)
        self.link.publish(records.mode(room.name, by, "+v" if on else "-v", target.ircnick, None))

    def set_modes(self, by, room, change, modes):
        super().set_modes(by, room, change, modes)
        self.link.publish(records.mode(room.name, by, change, None, modes))

    # -- lookups ---------------------------------------------------------------------------------

    def who(self, member):
        room_name = member.room.name
        remote = self.link.room_members(room_name)
        if self.ids.get(member.id) is not member or member.room is None:
            return
        room = self.rooms.get(room_name)
        stamps = self._stamps
        entries = ([(stamps.get((m.id, room_name), 0.0), m.name) for m in room.members]
                   if room else [])
        entries.extend(remote)
        entries.sort(key=lambda entry: entry[0])
        self.reply(member, native.format_who(room_name, [name for _, name in entries]))

    def find_anywhere(self, who):
        member = self.find(who)
        if member is None and self.link.up:
            member = self._locate(who)
        return member

    def others_in(self, room_name):
        return [(name, prefix) for _, name, prefix in sorted(self.link.room_idents(room_name),
                                                            key=lambda entry: entry[0])]

    def others_count(self):
        counts = {}
        for name, n in self.link.room_counts():
            counts[name] = counts.get(name, 0) + n
        return counts

    def cluster_size(self):
        counts = self.link.user_counts()
        return (max(1, counts[0]), counts[1]) if counts else (1, 0)

    def list_rooms(self, member):
        remote = self.link.room_counts()
        counts = {r.name: len(r.members) for r in self.rooms.values()}
        for name, n in remote:
            counts[name] = counts.get(name, 0) + n
        self.reply(member, native.format_rooms(counts.items()))

    # -- membership in Redis, written in the same order as the events ------------------------------

    def _enter(self, member, room_name):
        room = self.rooms.get(room_name)
        self._stamps[(member.id, room_name)] = time.time()
        self._store_room(member, room_name, (len(room.members) if room else 0) + 1)
        room = super()._enter(member, room_name)
        if len(room.members) <= self.presence_limit:
            self.link.publish(records.join(room_name, member))
        return room

    def _leave(self, member, room):
        super()._leave(member, room)
        self._stamps.pop((member.id, room.name), None)
        self.link.command("EVAL", SCRIPT_MEMBER_DEL, 2, self.rooms_key,
                          self.room_prefix + room.name, member.id, room.name, len(room.members))

    def _store_id(self, member):
        """Queue the write of who ``member`` is (its name and IRC prefix) to this node's ids."""
        self.link.command("EVAL", SCRIPT_ID_SET, 1, self.ids_key, member.id,
                          f"{member.name} {member.prefix}", self.link.keys_ms)

    def _store_room(self, member, room_name, size):
        """Queue the write of ``member`` (under its name) into the hash of room ``room_name``."""
        value = f"{self._stamps.get((member.id, room_name), 0.0)!r} {member.name}"
        self.link.command("EVAL", SCRIPT_MEMBER_SET, 2, self.rooms_key,
                          self.room_prefix + room_name, member.id, room_name, value, size,
                          self.link.keys_ms)

    def _store(self, member):
        """Queue the write of ``member``'s name everywhere it is kept (after a change of name)."""
        self._store_id(member)
        for room in member.joined():
            self._store_room(member, room.name, len(room.members))

    # -- called by the link ----------------------------------------------------------------------

    def deliver(self, payload):
        """Apply one PUBLISH payload of another node to the local members it concerns."""
        records.deliver(self, payload)

    def snapshot(self):
        """This node's members for a rewrite: ``(ids, rooms, room_hashes)``.

        ``ids``: {id: "name prefix"}; ``rooms``: {room: size}; ``room_hashes``: {room: {id:
        "stamp name"}}.
        """
        ids = {m.id: f"{m.name} {m.prefix}" for m in self.ids.values()}
        rooms, hashes = {}, {}
        stamps = self._stamps
        for room in self.rooms.values():
            rooms[room.name] = len(room.members)
            hashes[room.name] = {m.id: f"{stamps.get((m.id, room.name), 0.0)!r} {m.name}"
                                 for m in room.members}
        return ids, rooms, hashes

    def nick_claims(self):
        """``[(casefolded nickname, owner value, member id)]`` of every local nickname."""
        return [(key, self._owners[m.id], m.id) for key, m in self.nicks.items()]

    def nick_lost(self, member_id, key, owner):
        """Another node holds ``key`` now (taken while this one was cut off): drop it here.

        A native member goes back to its id; an IRC member, which must have a nickname, takes the
        guest nickname of its id (claimed with the next heartbeat, as any nickname).
        """
        member = self.ids.get(member_id)
        if member is None or member.nick is None or member.nick.casefold() != key:
            return
        if self._owners.get(member_id) != owner:
            return
        old, old_prefix = member.name, member.prefix
        del self.nicks[key]
        guest = irc.id_to_nick(member.id) if member.multi else None
        if guest is not None:
            self.nicks[guest.casefold()] = member
            member.nick = member.name = guest
        else:
            member.nick = None
            member.name = member.id
        member._prefix = None
        rooms = member.joined()
        for room in rooms:
            room.who_line = None
        self._store(member)
        self._announce(member, rooms, "nick", old, old_prefix)
        self._publish_nick(member, old, old_prefix)
        self._notify((member,), "nick-lost",
                     f"nickname '{old}' was taken on another server while this one was cut off")
        log.warning("Nickname %s of %s lost to another node", old, member_id)

    def node_died(self, node, idents, memberships):
        """A node died: its members leave, for everyone.

        ``idents``: {id: "name prefix"} of its members; ``memberships``: ``[(room, id, "stamp
        name")]``, the rooms each was in. ``node`` is another node reaped by this one, or an
        earlier process under this node's name (a restarted worker) found by this one when it
        first connects. Its keys are gone from Redis already.

        Each member's leaving is one event, here and on every other node, naming the rooms it was
        in (native members see a ``PART <room> <who> disconnected`` per room, IRC ones one
        ``QUIT``), in the order they came. Like :meth:`remove`, the dead node's room counts for
        the presence limit as it empties: a room is named only once fewer than the limit of the
        dead node's members are left in it.
        """
        left = {}  # room -> the dead node's members still in it
        for room_name, _, _ in memberships:
            left[room_name] = left.get(room_name, 0) + 1
        members = {}  # id -> [name, rooms to announce], in the order they came
        for room_name, member_id, value in sorted(memberships, key=lambda m: _stamp(m[2])):
            entry = members.get(member_id)
            if entry is None:
                entry = members[member_id] = [value.partition(" ")[2], []]
            left[room_name] -= 1
            if left[room_name] < self.presence_limit:
                entry[1].append(room_name)
        for member_id in idents:
            if member_id not in members:  # in no room (IRC): nobody to tell, a nickname to free
                members[member_id] = [None, []]
        owners = []  # (nickname key, start of its value if that member holds it)
        for member_id, (name, room_names) in members.items():
            ident = idents.get(member_id)
            if ident:
                name, _, prefix = ident.partition(" ")
            else:
                prefix = _guest_prefix(member_id, name)
            if room_names:
                self._announce(Remote(name, prefix), [self.rooms[r] for r in room_names
                                                      if r in self.rooms],
                               "quit", "disconnected", self_too=False)
                self.link.publish(records.reaped(node, name, prefix, "disconnected", room_names))
            owners.append((nick_key(name.casefold()), f"{node} {member_id} "))
        for start in range(0, len(owners), NICKS_PER_SCRIPT):
            chunk = owners[start:start + NICKS_PER_SCRIPT]
            self.link.command("EVAL", SCRIPT_RELEASE_DEAD, len(chunk), *(k for k, _ in chunk),
                              *(v for _, v in chunk))
        log.warning("Cluster: node %s is gone; %d of its members left", node, len(owners))

    def rejoined(self):
        """This node was reaped while cut off: everyone saw its members leave; they are back."""
        for room in self.rooms.values():
            if len(room.members) <= self.presence_limit:
                for m in room.members:
                    self.link.publish(records.join(room.name, m))
        log.warning("Cluster: this node was taken for dead while cut off; its members joined again")

    def link_changed(self, up, first):
        """Tell every local member that cross-server delivery stopped or resumed."""
        if up:
            log.info("Cluster: connected to Redis as node %s", self.node)
            if not first:
                self._notify(list(self.ids.values()), "cluster-up",
                             "connection between servers restored")
        else:
            self._notify(list(self.ids.values()), "cluster-down",
                         "connection between servers lost; only people on this server hear you "
                         "until it is back")

    def _notify(self, members, code, text):
        """A cluster notice to ``members``, each in its protocol: native members get
        ``NOTICE <code> <text>`` (docs/protocol.md), IRC ones a server ``NOTICE``; framed for
        those on WebSocket."""
        line = format_notice(code, text)
        for m in members:
            if isinstance(m.encoder, native.Encoder):
                self.reply(m, line)
            else:
                self.reply(m, irc.format_message("NOTICE", m.ircnick, f"*** {code}: {text}"))


def _stamp(value):
    try:
        return float(value.partition(" ")[0])
    except ValueError:
        return 0.0


def _guest_prefix(member_id, name):
    """The IRC prefix of a member known only by its id and ``name`` (as a native member's is)."""
    stand_in = Member(member_id)
    if name and name != member_id:
        stand_in.nick = name
    return stand_in.prefix

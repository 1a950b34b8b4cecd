"""The cluster node's registry: the in-process one, with every change also told to Redis."""

import itertools
import logging
import os
import re
import socket
import time

from ..codec import native
from ..core.registry import Registry
from .link import NICKS_PER_SCRIPT, Link
from .scripts import (NODE_KEY_PREFIX, REAPED_KEY_PREFIX, SCRIPT_MEMBER_DEL, SCRIPT_MEMBER_SET,
                      SCRIPT_RELEASE, SCRIPT_RELEASE_DEAD, nick_key)

log = logging.getLogger("chatroom.cluster")

#: Default seconds a node's members and nicknames outlive its last heartbeat: how long a dead
#: node's members still show in WHO and its nicknames stay taken. Long enough that a busy Redis or
#: a GC pause never expires a live node (heartbeats come every third of it).
DEFAULT_TTL = 15.0
#: Seconds a stopping node waits for its queue to reach Redis before it leaves anyway.
LEAVE_TIMEOUT = 2.0

# -- event records ---------------------------------------------------------------------------------
# A PUBLISH payload is b"<node>\n" then records, each b"<kind><arg> <line>" where <line> is one
# server line with its b"\n": what the receiving node queues to its members as it is.

MSG = b"M"  #: arg is a room: every local member of it gets the line
PRESENCE = b"P"  #: arg is a room: its local members get the line unless the room is too big
TELL = b"T"  #: arg is "node/id": that member gets the line
REAPED = b"R"  #: arg is "node/room": as PRESENCE, except on that node (taken for dead, yet alive)


def default_node_name():
    """``<hostname>-<pid>``, with anything unsafe in the hostname replaced by ``-``."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}"


def format_notice(code, text):
    """A ``NOTICE <code> <text>`` line (docs/protocol.md, cluster notices)."""
    return native.format_command("NOTICE", code, text)


class ClusterRegistry(Registry):
    """A :class:`Registry` whose rooms, nicknames and messages span every node on one Redis."""

    def __init__(self, url, node=None, ttl=DEFAULT_TTL, **limits):
        super().__init__(**limits)
        self.node = node or default_node_name()
        self.ttl = ttl
        self._stamps = {}  # member id -> time.time() it entered its room: orders WHO across nodes
        self._owners = {}  # member id -> "<node> <id> <serial>", its value in nickname keys
        self._serials = itertools.count(1)
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

    # -- the registry's operations, each also told to the cluster -----------------------------------

    def add(self, member, greeting=None):
        self._owners[member.id] = f"{self.node} {member.id} {next(self._serials)}"
        super().add(member, greeting)

    def remove(self, member, reason="disconnected", announce=True):
        room, name, nick = member.room, member.name, member.nick
        if not super().remove(member, reason, announce):
            return False
        owner = self._owners.pop(member.id, None)
        self._stamps.pop(member.id, None)
        if nick is not None:
            self.link.command("EVAL", SCRIPT_RELEASE, 1, nick_key(nick.casefold()), owner)
        # Other nodes hear even when this one is shutting down (announce false): they stay.
        if room is not None and len(room.members) < self.presence_limit:
            self.link.publish(PRESENCE, room.name, native.format_part(room.name, name, reason))
        return True

    def join(self, member, room_name):
        old, name = member.room, member.name
        super().join(member, room_name)
        if old is not None and old.name != room_name and len(old.members) < self.presence_limit:
            self.link.publish(PRESENCE, old.name, native.format_part(old.name, name, "join"))

    def set_nick(self, member, nick):
        native.check_name(nick, "nickname")
        key = nick.casefold()
        old = member.nick
        holder = self.nicks.get(key)
        if holder is not None and holder is not member:
            return super().set_nick(member, nick)  # taken here: the registry says so
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
        old = member.name
        if member.nick != nick:
            self._store(member, nick)  # before the NICK line goes out, so WHO agrees with it
        super().set_nick(member, nick)
        if old != nick:
            self._publish_presence(member, native.format_nick(old, nick))

    def say(self, member, text, room=None, notice=False, tags=None):
        room = room or member.room
        super().say(member, text, room, notice, tags)
        self.link.publish(MSG, room.name, native.format_msg(room.name, member.name, text))

    def tell(self, member, who, text):
        if self.find(who) is None and self.link.up:
            where = self.link.locate(who)
            if where is not None and where[0] != self.node:
                if self.ids.get(member.id) is member:
                    self.link.publish(TELL, f"{where[0]}/{where[1]}",
                                      native.format_tell(member.name, text))
                return
        super().tell(member, who, text)

    def who(self, member):
        room_name = member.room.name
        remote = self.link.room_members(room_name)
        if self.ids.get(member.id) is not member:
            return
        room = self.rooms.get(room_name)
        entries = [(self._stamps.get(m.id, 0.0), m.name) for m in room.members] if room else []
        entries.extend(remote)
        entries.sort(key=lambda entry: entry[0])
        self.send(member, native.format_who(room_name, [name for _, name in entries]))

    def list_rooms(self, member):
        remote = self.link.room_counts()
        counts = {r.name: len(r.members) for r in self.rooms.values()}
        for name, n in remote:
            counts[name] = counts.get(name, 0) + n
        self.send(member, native.format_rooms(counts.items()))

    # -- membership in Redis, written in the same order as the events ------------------------------

    def _enter(self, member, room_name):
        room = self.rooms.get(room_name)
        self._stamps[member.id] = time.time()
        self._store(member, member.name, room_name, (len(room.members) if room else 0) + 1)
        room = super()._enter(member, room_name)
        self._publish_presence(member, native.format_join(room_name, member.name))
        return room

    def _leave(self, member, room):
        super()._leave(member, room)
        self.link.command("EVAL", SCRIPT_MEMBER_DEL, 3, self.ids_key, self.rooms_key,
                          self.room_prefix + room.name, member.id, room.name, len(room.members))

    def _store(self, member, name, room_name=None, size=None):
        """Queue the write of ``member`` (as ``name``) into its room's hash on this node."""
        if room_name is None:
            room_name, size = member.room.name, len(member.room.members)
        value = f"{self._stamps.get(member.id, 0.0)!r} {name}"
        self.link.command("EVAL", SCRIPT_MEMBER_SET, 3, self.ids_key, self.rooms_key,
                          self.room_prefix + room_name, member.id, room_name, value, size,
                          self.link.keys_ms)

    def _publish_presence(self, member, data):
        """Other nodes hear a change of ``member`` if its room is small enough."""
        if len(member.room.members) <= self.presence_limit:
            self.link.publish(PRESENCE, member.room.name, data)

    # -- called by the link ----------------------------------------------------------------------

    def deliver(self, payload):
        """Fan one PUBLISH payload of another node out to the local members it concerns."""
        records = payload.split(b"\n")
        for record in records[1:]:  # records[0] is the node; the last part is empty
            if not record:
                continue
            kind = record[:1]
            arg, _, line = record[1:].partition(b" ")
            data = line + b"\n"
            if kind == TELL:
                node, _, member_id = arg.decode("utf-8", "replace").partition("/")
                target = self.ids.get(member_id) if node == self.node else None
                if target is not None:
                    self.send(target, data)
                continue
            if kind == REAPED:
                node, _, arg = arg.partition(b"/")
                if node == self.link.head[:-1]:
                    continue  # this node was only cut off: its members are here still
            room = self.rooms.get(arg.decode("ascii", "replace"))
            if room is None:
                continue
            if kind == MSG or len(room.members) <= self.presence_limit:
                self._fanout(room.members, data)

    def snapshot(self):
        """This node's members for a rewrite: ``(ids, rooms, room_hashes)``.

        ``ids``: {id: room}; ``rooms``: {room: size}; ``room_hashes``: {room: {id: "stamp name"}}.
        """
        ids, rooms, hashes = {}, {}, {}
        for room in self.rooms.values():
            rooms[room.name] = len(room.members)
            fields = hashes[room.name] = {}
            for m in room.members:
                ids[m.id] = room.name
                fields[m.id] = f"{self._stamps.get(m.id, 0.0)!r} {m.name}"
        return ids, rooms, hashes

    def nick_claims(self):
        """``[(casefolded nickname, owner value, member id)]`` of every local nickname."""
        return [(key, self._owners[m.id], m.id) for key, m in self.nicks.items()]

    def nick_lost(self, member_id, key, owner):
        """Another node holds ``key`` now (taken while this one was cut off): drop it here."""
        member = self.ids.get(member_id)
        if member is None or member.nick is None or member.nick.casefold() != key:
            return
        if self._owners.get(member_id) != owner:
            return
        old, old_prefix = member.name, member.prefix
        del self.nicks[key]
        member.nick = None
        member.name = member.id
        member._prefix = None
        member.room.who_line = None
        self._store(member, member.id)
        self._announce(member, member.joined(), "nick", old, old_prefix)
        self._publish_presence(member, native.format_nick(old, member.id))
        self.send(member, format_notice(
            "nick-lost", f"nickname '{old}' was taken on another server while this one was cut off"))
        log.warning("Nickname %s of %s lost to another node", old, member_id)

    def node_died(self, node, members):
        """A node died: its ``members`` (``[(room, id, "stamp name")]``) leave, for everyone.

        ``node`` is another node reaped by this one, or an earlier process under this node's name
        (a restarted worker) found by this one when it first connects.

        Its keys are gone from Redis already. Each room's members leave in the order they came;
        like :meth:`remove`, the dead node's room counts for the presence limit as it empties.
        """
        rooms = {}
        for room_name, member_id, value in sorted(members, key=lambda m: float(m[2].split(" ")[0])):
            rooms.setdefault(room_name, []).append((member_id, value.partition(" ")[2]))
        owners = []  # (nickname key, start of its value if that member holds it)
        for room_name, gone in rooms.items():
            local = self.rooms.get(room_name)
            for left, (member_id, name) in enumerate(gone, 1):
                data = native.format_part(room_name, name, "disconnected")
                if local is not None and len(local.members) <= self.presence_limit:
                    self._fanout(local.members, data)
                if len(gone) - left < self.presence_limit:
                    self.link.publish(REAPED, f"{node}/{room_name}", data)
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
                    self.link.publish(PRESENCE, room.name, native.format_join(room.name, m.name))
        log.warning("Cluster: this node was taken for dead while cut off; its members joined again")

    def link_changed(self, up, first):
        """Tell every local member that cross-server delivery stopped or resumed."""
        if up:
            log.info("Cluster: connected to Redis as node %s", self.node)
            if not first:
                self.broadcast_all(format_notice(
                    "cluster-up", "connection between servers restored"))
        else:
            self.broadcast_all(format_notice(
                "cluster-down", "connection between servers lost; only people on this server "
                "hear you until it is back"))

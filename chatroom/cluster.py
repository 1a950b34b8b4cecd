"""Scale-out over Redis: several chat-server processes share rooms, nicknames and messages as one chat.

A node (one ``bin/chat-server --redis URL`` process) keeps its own clients in a
:class:`ClusterRegistry`, which is the in-process :class:`~chatroom.registry.Registry` plus a
:class:`Link` to Redis:

- Delivery to local members is the registry's own ``_fanout``, as without Redis. Every event the
  other nodes need (``MSG``, presence, a ``TELL`` to a remote member) is put ONCE, as the bytes the
  clients will read, into a bounded queue; one publisher greenlet drains it over one connection
  and packs everything queued into as few ``PUBLISH`` payloads as it can. One connection and one
  greenlet keep one sender's lines in the order sent; nothing that talks to a client waits on it.
- Every node holds ONE subscription (one connection, the channel :data:`CHANNEL`), skips its own
  payloads by node name, and fans the others' out to its local members.
- Cluster-wide state lives in keys that expire :data:`DEFAULT_TTL` seconds after the node that
  wrote them stops refreshing them, so a node that dies leaves no ghosts: nicknames
  (``nick:<casefolded>`` = ``"<node> <id> <serial>"``, claimed atomically by a script), each
  node's members (``node:<node>:ids``, ``node:<node>:room:<room>``, ``node:<node>:rooms``) and
  the sorted set of live nodes (``nodes``, scored by expiry time on Redis's own clock).
- Each heartbeat also reaps nodes past their time: the one node whose script takes a dead node out
  of ``nodes`` reads its members (their keys outlive it by :data:`REAP_GRACE_TTLS`), erases its
  keys and nicknames, and announces ``PART <room> <who> disconnected`` for each, to everyone.
- ``NICK``, ``TELL`` to someone not local, ``WHO`` and ``ROOMS`` make one Redis round trip in the
  reader greenlet of the client that asked (only that client waits; bounded by
  :data:`REDIS_TIMEOUT`).
- When Redis goes away the node carries on alone: local chat works, cross-node events are not
  queued, clients get ``NOTICE cluster-down``. The subscriber reconnects with bounded back-off;
  then the node rewrites its whole state in Redis (nicknames re-claimed; one taken meanwhile by
  another node is lost with ``NOTICE nick-lost``) and clients get ``NOTICE cluster-up``.

``redis`` must be imported only after ``gevent.monkey.patch_all()`` (its sockets must be gevent's),
so this module imports it inside :class:`Link`; ``chatroom.server.main`` patches first. It also
holds :func:`run_workers`, which starts several server processes sharing one port. See
docs/cluster.md.
"""

import collections
import ctypes
import itertools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import gevent
import gevent.event
import gevent.monkey

from .codec import native
from .core.registry import Registry
from .transport.sockets import reuse_port_socket

log = logging.getLogger("chatroom.cluster")

#: Every key and the channel start with this, so a Redis database can hold other things too.
KEY_PREFIX = "chatroom:"
#: The one channel every node publishes to and subscribes to.
CHANNEL = KEY_PREFIX + "events"
#: Sorted set of live nodes, each scored with the Redis time (ms) at which it is presumed dead.
NODES_KEY = KEY_PREFIX + "nodes"
#: Start of every per-node key: ``<this><node>:ids`` and so on.
NODE_KEY_PREFIX = KEY_PREFIX + "node:"

#: Default seconds a node's members and nicknames outlive its last heartbeat: how long a dead
#: node's members still show in WHO and its nicknames stay taken. Long enough that a busy Redis or
#: a GC pause never expires a live node (heartbeats come every third of it).
DEFAULT_TTL = 15.0
#: Heartbeats per TTL: a node refreshes its keys this many times before they would expire.
HEARTBEATS_PER_TTL = 3
#: TTLs a node's membership keys outlive the time at which it counts as dead, so that a surviving
#: node's heartbeat (every third of a TTL) still finds them and can tell everyone who left.
REAP_GRACE_TTLS = 1
#: Dead nodes one heartbeat reaps at most (one script call, which blocks Redis while it runs).
REAP_PER_HEARTBEAT = 4
#: Seconds Redis remembers that a node was reaped: if it was only cut off and comes back within
#: this time, it announces its members again (JOIN) to those who saw them leave.
REAPED_MEMORY = 3600
#: Seconds one Redis command (connect, or send and answer) may take before the link counts as
#: broken. A lookup (NICK, WHO...) keeps its client waiting at most this long.
REDIS_TIMEOUT = 2.0
#: Connections for the lookups clients wait on (NICK, TELL, WHO, ROOMS); more lookups at once
#: wait up to REDIS_TIMEOUT for one.
LOOKUP_CONNECTIONS = 8
#: Bytes of events queued for Redis before the queue counts as overflowing. 8 MiB is seconds of a
#: very busy node: reached only when Redis stalls. On overflow everything queued is dropped (other
#: nodes miss those events; local members got them), it is logged, and the node rewrites its
#: membership in Redis so that no dropped join or leave leaves a ghost behind.
PUBLISH_QUEUE_LIMIT = 8 * 1024 * 1024
#: Bytes a membership command counts for in the queue (they are short).
COMMAND_COST = 256
#: Most bytes of events packed into one PUBLISH payload.
PUBLISH_PAYLOAD_LIMIT = 64 * 1024
#: Seconds of the first and the longest wait between reconnection attempts (doubling between).
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
#: Seconds the subscriber waits for a message before looking again (it also pings Redis when
#: idle this long, so a silently dead connection is found).
SUBSCRIBE_POLL = 1.0
HEALTH_CHECK_SECONDS = 2
#: Nickname keys refreshed by one script call (one script blocks Redis while it runs).
NICKS_PER_SCRIPT = 1000
#: Fields written by one HSET when a node rewrites its state.
FIELDS_PER_HSET = 1000
#: Seconds between two warnings about dropped events (the count is in each).
DROP_LOG_INTERVAL = 10.0
#: Seconds a stopping node waits for its queue to reach Redis before it leaves anyway.
LEAVE_TIMEOUT = 2.0


# -- Lua scripts: each runs atomically in Redis ------------------------------------------------------

#: Live nodes on Redis's clock; shared by the scripts that read other nodes' keys.
_LIVE = """
local function live(nodes)
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  return redis.call('ZRANGEBYSCORE', nodes, '(' .. now, '+inf'), now
end
"""

#: KEYS: nodes. ARGV: node, ttl ms. Mark this node alive for ttl; 1 if it was not in ``nodes``
#: (reaped by another node while late, or Redis lost everything): its state must be rewritten.
SCRIPT_ALIVE = _LIVE + """
local _, now = live(KEYS[1])
local missing = redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if missing then return 1 end
return 0
"""

#: Erase the member keys of the node whose keys start with ``prefix``; shared by the scripts
#: below. Returns {room, id, "stamp name", ...} of the members it had.
_ERASE = """
local function erase(prefix)
  local gone = {}
  for _, room in ipairs(redis.call('HKEYS', prefix .. ':rooms')) do
    local fields = redis.call('HGETALL', prefix .. ':room:' .. room)
    for i = 1, #fields, 2 do
      gone[#gone + 1] = room
      gone[#gone + 1] = fields[i]
      gone[#gone + 1] = fields[i + 1]
    end
    redis.call('DEL', prefix .. ':room:' .. room)
  end
  redis.call('DEL', prefix .. ':ids', prefix .. ':rooms')
  return gone
end
"""

#: KEYS: nodes. ARGV: this node, node key prefix, reaped key prefix, most nodes, ms remembered.
#: Take nodes past their time out of ``nodes`` (atomically: each is reaped by one node only),
#: erase their keys and remember them as reaped. Returns {node, room, id, "stamp name", ...} each.
SCRIPT_REAP = _LIVE + _ERASE + """
local _, now = live(KEYS[1])
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[4])) do
  if node ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], node)
    local gone = erase(ARGV[2] .. node)
    table.insert(gone, 1, node)
    redis.call('SET', ARGV[3] .. node, '1', 'PX', ARGV[5])
    out[#out + 1] = gone
  end
end
return out
"""

#: A nickname's holder counts only while its node is live: a dead node's names are free at the
#: moment its members leave WHO, not a moment later when the keys expire.
_HOLDER = _LIVE + """
local function holder(key, nodes)
  local v = redis.call('GET', key)
  if not v then return false end
  local _, now = live(nodes)
  local score = redis.call('ZSCORE', nodes, string.match(v, '^%S+'))
  if score and tonumber(score) > now then return v end
  return false
end
"""

#: KEYS: nodes, the nickname wanted [, the one given up]. ARGV: owner value, ttl ms.
#: 1 = claimed, 0 = taken.
SCRIPT_CLAIM = _HOLDER + """
local v = holder(KEYS[2], KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
"""

#: KEYS: a nickname. ARGV: owner value. Delete it only if it is still ours.
SCRIPT_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: nicknames. ARGV: for each, "<node> <id> " of the dead member that may hold it. Delete
#: those still held by them.
SCRIPT_RELEASE_DEAD = """
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v and string.sub(v, 1, #ARGV[i]) == ARGV[i] then redis.call('DEL', key) end
end
"""

#: KEYS: nicknames. ARGV: ttl ms, then the owner value for each key. Refresh the ones we hold,
#: take back the ones that expired; returns the (1-based) indexes of those someone else holds.
SCRIPT_NICKS = """
local lost = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[i + 1] then redis.call('PEXPIRE', key, ARGV[1])
  elseif not v then redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else lost[#lost + 1] = i end
end
return lost
"""

#: KEYS: ids, rooms, room. ARGV: id, room, "stamp name", local room size, ttl ms.
SCRIPT_MEMBER_SET = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
"""

#: KEYS: ids, rooms, room. ARGV: id, room, local room size left.
SCRIPT_MEMBER_DEL = """
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
else redis.call('HDEL', KEYS[2], ARGV[2]) end
"""

#: KEYS: nodes, reaped mark. ARGV: node key prefix, this node. Erase this node's members.
#: Returns {reaped, room, id, "stamp name", ...}: reaped is 1 if another node had reaped this one
#: (told everyone its members left), else 0; then the members erased.
SCRIPT_RESET = _ERASE + """
local gone = erase(ARGV[1] .. ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
table.insert(gone, 1, redis.call('DEL', KEYS[2]))
return gone
"""

#: KEYS: nodes. ARGV: this node, node key prefix, room. "stamp name" of the room's members elsewhere.
SCRIPT_WHO = _LIVE + """
local out = {}
for _, node in ipairs((live(KEYS[1]))) do
  if node ~= ARGV[1] then
    for _, v in ipairs(redis.call('HVALS', ARGV[2] .. node .. ':room:' .. ARGV[3])) do
      out[#out + 1] = v
    end
  end
end
return out
"""

#: KEYS: nodes. ARGV: this node, node key prefix. Flat room, count, ... summed over the other nodes.
SCRIPT_ROOMS = _LIVE + """
local sums, order = {}, {}
for _, node in ipairs((live(KEYS[1]))) do
  if node ~= ARGV[1] then
    local pairs_ = redis.call('HGETALL', ARGV[2] .. node .. ':rooms')
    for i = 1, #pairs_, 2 do
      local room = pairs_[i]
      if not sums[room] then sums[room] = 0; order[#order + 1] = room end
      sums[room] = sums[room] + tonumber(pairs_[i + 1])
    end
  end
end
local out = {}
for _, room in ipairs(order) do out[#out + 1] = room; out[#out + 1] = sums[room] end
return out
"""

#: KEYS: nodes, the nickname. ARGV: this node, node key prefix, name. "node id ..." of whoever has
#: that nickname, or else of another node's member with that id; false if nobody.
SCRIPT_LOCATE = _HOLDER + """
local v = holder(KEYS[2], KEYS[1])
if v then return v end
for _, node in ipairs((live(KEYS[1]))) do
  if node ~= ARGV[1] and redis.call('HEXISTS', ARGV[2] .. node .. ':ids', ARGV[3]) == 1 then
    return node .. ' ' .. ARGV[3]
  end
end
return false
"""

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


def nick_key(casefolded):
    return f"{KEY_PREFIX}nick:{casefolded}"


#: Start of the keys that say a node was reaped: ``<this><node>``.
REAPED_KEY_PREFIX = KEY_PREFIX + "reaped:"


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
        self.reply(member, native.format_who(room_name, [name for _, name in entries]))

    def list_rooms(self, member):
        remote = self.link.room_counts()
        counts = {r.name: len(r.members) for r in self.rooms.values()}
        for name, n in remote:
            counts[name] = counts.get(name, 0) + n
        self.reply(member, native.format_rooms(counts.items()))

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
                    self.reply(target, data)
                continue
            if kind == REAPED:
                node, _, arg = arg.partition(b"/")
                if node == self.link.head[:-1]:
                    continue  # this node was only cut off: its members are here still
            room = self.rooms.get(arg.decode("ascii", "replace"))
            if room is None:
                continue
            if kind == MSG or len(room.members) <= self.presence_limit:
                self.relay_lines(room, data)

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
        self.reply(member, format_notice(
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
                    self.relay_lines(local, data)
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


class Link:
    """This node's connections to Redis: one ordered writer, one subscriber, pooled lookups."""

    def __init__(self, url, registry):
        if not gevent.monkey.is_module_patched("socket"):
            raise RuntimeError("chatroom.cluster needs gevent.monkey.patch_all() before use")
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.registry = registry
        self.node = registry.node
        self.ttl_ms = max(1, int(registry.ttl * 1000))
        self.keys_ms = self.ttl_ms * (1 + REAP_GRACE_TTLS)  # membership keys outlive the node
        self.errors = (redis.RedisError, OSError)
        self.refused = redis.ResponseError
        # No retries inside the client: a retried pipeline could publish twice; recovery is ours.
        options = dict(socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                       retry=Retry(NoBackoff(), 0), health_check_interval=HEALTH_CHECK_SECONDS)

        def client(connections):
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=connections, timeout=REDIS_TIMEOUT, **options)
            return redis.Redis(connection_pool=pool)

        self.writer = client(1)
        self.lookups = client(LOOKUP_CONNECTIONS)
        self.subscriber = client(1)
        self.head = self.node.encode() + b"\n"
        self.queue = collections.deque()  # bytes records and command tuples, in order
        self.queued = 0  # bytes the queue counts for (bounded by PUBLISH_QUEUE_LIMIT)
        self.wake = gevent.event.Event()  # set when the publisher has something to do
        self.drained = gevent.event.Event()  # set while nothing queued is waiting for Redis
        self.drained.set()
        self.subscribed = gevent.event.Event()  # set while the subscription is live
        self.up = False  # True while Redis is reachable: lookups and notices go by this
        self.open = False  # True while the queue takes events and commands (up, or rewriting)
        self.ever_up = False
        self.rewrite = True  # the node's state in Redis must be rewritten before going up
        self.closing = False
        self.next_beat = 0.0
        self.dropped = 0  # events dropped on overflow, since the last warning
        self.last_drop_log = 0.0
        self.greenlets = []

    def start(self):
        self.greenlets = [gevent.spawn(self._publish_loop), gevent.spawn(self._subscribe_loop)]

    # -- queueing (never waits) ------------------------------------------------------------------

    def publish(self, kind, arg, line):
        """Queue one event for the other nodes; dropped while Redis is unreachable."""
        if self.open:
            record = kind + arg.encode() + b" " + line
            self._put(record, len(record))

    def command(self, *args):
        """Queue one Redis command, ordered with the events (skipped while down: rewritten later)."""
        if self.open:
            self._put(args, COMMAND_COST)

    def _put(self, item, size):
        if self.queued + size > PUBLISH_QUEUE_LIMIT:
            self._overflow()
            return
        self.queue.append(item)
        self.queued += size
        if not self.wake.is_set():
            self.wake.set()
        if self.drained.is_set():
            self.drained.clear()

    def _overflow(self):
        self.dropped += len(self.queue) + 1
        self.queue.clear()
        self.queued = 0
        self.rewrite = True  # a dropped join or leave must not leave Redis wrong
        self.wake.set()
        now = time.monotonic()
        if now - self.last_drop_log >= DROP_LOG_INTERVAL:
            self.last_drop_log = now
            log.warning("Cluster: Redis is not keeping up; dropped %d queued events (%d bytes limit)",
                        self.dropped, PUBLISH_QUEUE_LIMIT)
            self.dropped = 0

    # -- the publisher greenlet: every write to Redis, in order ------------------------------------

    def _publish_loop(self):
        interval = self.ttl_ms / 1000 / HEARTBEATS_PER_TTL
        while not self.closing:
            if self.rewrite or not self.up:
                self._recover()
                continue
            if not self.queue:
                self.drained.set()
                self.wake.clear()
                self.wake.wait(max(0.0, self.next_beat - time.monotonic()))
            try:
                if self.queue:
                    self._send_queue()
                if time.monotonic() >= self.next_beat:
                    self.next_beat = time.monotonic() + interval
                    self._heartbeat()
            except self.errors as err:
                self.fail(f"write failed: {err}")

    def _send_queue(self):
        """One pipeline for everything queued: events packed into PUBLISH payloads, in order."""
        items, self.queue, self.queued = self.queue, collections.deque(), 0
        pipe = self.writer.pipeline(transaction=False)
        records, size = [], 0
        for item in items:
            if type(item) is bytes:
                records.append(item)
                size += len(item)
                if size < PUBLISH_PAYLOAD_LIMIT:
                    continue
            elif not records:
                pipe.execute_command(*item)
                continue
            pipe.execute_command("PUBLISH", CHANNEL, self.head + b"".join(records))
            records, size = [], 0
            if type(item) is not bytes:
                pipe.execute_command(*item)
        if records:
            pipe.execute_command("PUBLISH", CHANNEL, self.head + b"".join(records))
        self._check(pipe.execute(raise_on_error=False))

    def _heartbeat(self):
        """Refresh this node's keys and nicknames before they expire; note nicknames lost; reap
        nodes past their time (announcing their members' leaving)."""
        pipe = self.writer.pipeline(transaction=False)
        nicks = self.registry.nick_claims()
        self._write_alive(pipe, self.registry.rooms)
        first = len(pipe)
        self._write_nicks(pipe, nicks)
        pipe.execute_command("EVAL", SCRIPT_REAP, 1, NODES_KEY, self.node, NODE_KEY_PREFIX,
                             REAPED_KEY_PREFIX, REAP_PER_HEARTBEAT, REAPED_MEMORY * 1000)
        results = pipe.execute(raise_on_error=False)
        self._check_nicks(results[first:-1], nicks)
        self._check(results[-1:])
        if results[0] == 1:  # reaped while late: others saw this node's members leave
            log.warning("Cluster: this node was taken for dead; rewriting its state")
            self.rewrite = True
        for dead in results[-1] if isinstance(results[-1], list) else ():
            self.registry.node_died(dead[0].decode("utf-8", "replace"), _members(dead[1:]))

    def _recover(self):
        """Wait (with back-off) until subscribed and the node's whole state is rewritten; go up."""
        was_up = self.up
        delay = BACKOFF_MIN
        warned = False
        while not self.closing:
            try:
                if self.subscribed.wait(REDIS_TIMEOUT):
                    self._rewrite()
                    break
            except self.errors as err:
                self.fail(f"rewrite failed: {err}")
                if not warned:
                    warned = True
                    log.warning("Cluster: cannot reach Redis (%s); retrying", err)
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        else:
            return
        self.up = True
        self.next_beat = time.monotonic() + self.ttl_ms / 1000 / HEARTBEATS_PER_TTL
        if not was_up:
            first, self.ever_up = not self.ever_up, True
            self.registry.link_changed(True, first)

    def _rewrite(self):
        """Replace this node's state in Redis with the registry's, in one transaction."""
        r = self.registry
        ids, rooms, hashes = r.snapshot()
        nicks = r.nick_claims()
        # From the snapshot on, changes queue up behind the rewrite, so none falls in between.
        self.queue.clear()
        self.queued = 0
        self.rewrite = False
        self.open = True
        pipe = self.writer.pipeline(transaction=True)
        pipe.execute_command("EVAL", SCRIPT_RESET, 2, NODES_KEY, r.reaped_key, NODE_KEY_PREFIX,
                             self.node)
        _hset(pipe, r.ids_key, ids)
        _hset(pipe, r.rooms_key, rooms)
        for room, fields in hashes.items():
            _hset(pipe, r.room_prefix + room, fields)
        self._write_alive(pipe, rooms)
        first = len(pipe)
        self._write_nicks(pipe, nicks)
        results = pipe.execute(raise_on_error=False)
        self._check(results[:first])
        self._check_nicks(results[first:], nicks)
        reset = results[0] if isinstance(results[0], list) else [0]  # refused: logged above
        reaped, members = reset[0], _members(reset[1:])
        if self.ever_up:  # back after an outage: the members erased were this process's own
            if reaped:
                r.rejoined()
        elif members:  # first connection: an earlier process under this name died unreaped
            r.node_died(self.node, members)

    def _write_alive(self, pipe, rooms):
        r = self.registry
        pipe.execute_command("EVAL", SCRIPT_ALIVE, 1, NODES_KEY, self.node, self.ttl_ms)
        for key in [r.ids_key, r.rooms_key, *(r.room_prefix + room for room in rooms)]:
            pipe.pexpire(key, self.keys_ms)

    def _write_nicks(self, pipe, nicks):
        for start in range(0, len(nicks), NICKS_PER_SCRIPT):
            chunk = nicks[start:start + NICKS_PER_SCRIPT]
            pipe.execute_command("EVAL", SCRIPT_NICKS, len(chunk),
                                 *(nick_key(key) for key, _, _ in chunk), self.ttl_ms,
                                 *(owner for _, owner, _ in chunk))

    def _check_nicks(self, results, nicks):
        self._check(results)
        for n, lost in enumerate(results):
            if isinstance(lost, list):
                for index in lost:
                    key, owner, member_id = nicks[n * NICKS_PER_SCRIPT + int(index) - 1]
                    self.registry.nick_lost(member_id, key, owner)

    def _check(self, results):
        """Log commands Redis refused (a script error); raise anything else that went wrong."""
        for result in results:
            if isinstance(result, self.refused):
                log.error("Cluster: Redis refused a command: %s", result)
            elif isinstance(result, Exception):
                raise result

    # -- the subscriber greenlet -----------------------------------------------------------------

    def _subscribe_loop(self):
        delay = BACKOFF_MIN
        while not self.closing:
            pubsub = self.subscriber.pubsub()
            try:
                pubsub.subscribe(CHANNEL)
                while not self.closing:
                    message = pubsub.get_message(timeout=SUBSCRIBE_POLL)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        data = message["data"]
                        if not data.startswith(self.head):
                            self._deliver(data)
                    elif kind == "subscribe":
                        delay = BACKOFF_MIN
                        self.subscribed.set()
                        self.wake.set()
            except self.errors as err:
                self.subscribed.clear()
                self.fail(f"subscription lost: {err}")
            finally:
                try:
                    pubsub.close()
                except self.errors:
                    pass
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _deliver(self, payload):
        try:
            self.registry.deliver(payload)
        except Exception:
            log.exception("Cluster: could not deliver a payload of %d bytes", len(payload))

    def fail(self, reason):
        """Redis is unreachable: stop sending to it, tell the clients, and start recovering."""
        self.open = False
        if self.up:
            self.up = False
            log.warning("Cluster: Redis unreachable (%s); carrying on alone", reason)
            self.registry.link_changed(False, False)
        self.queue.clear()
        self.queued = 0
        self.drained.set()
        self.wake.set()

    # -- lookups (the calling client waits; everyone else does not) --------------------------------

    def _lookup(self, script, keys, args):
        """Run a script on a lookup connection; None if Redis is unreachable."""
        if not self.up:
            return None
        try:
            return self.lookups.execute_command("EVAL", script, len(keys), *keys, *args)
        except self.errors as err:
            log.warning("Cluster: lookup failed: %s", err)
            return None

    def claim_nick(self, key, owner, given_up=None):
        """True: ``key`` is ours now (and ``given_up`` released); False: taken; None: no Redis."""
        keys = [NODES_KEY, nick_key(key)] + ([nick_key(given_up)] if given_up else [])
        result = self._lookup(SCRIPT_CLAIM, keys, [owner, self.ttl_ms])
        return None if result is None else bool(result)

    def locate(self, who):
        """``(node, id)`` of the member called ``who`` anywhere in the cluster, or None."""
        found = self._lookup(SCRIPT_LOCATE, [NODES_KEY, nick_key(who.casefold())],
                             [self.node, NODE_KEY_PREFIX, who])
        if not found:
            return None
        node, member_id = found.decode("utf-8", "replace").split(" ")[:2]
        return node, member_id

    def room_members(self, room):
        """``[(stamp, name)]`` of the members of ``room`` on the other nodes."""
        values = self._lookup(SCRIPT_WHO, [NODES_KEY], [self.node, NODE_KEY_PREFIX, room]) or []
        members = []
        for value in values:
            stamp, _, name = value.decode("utf-8", "replace").partition(" ")
            members.append((float(stamp), name))
        return members

    def room_counts(self):
        """``[(room, size)]`` of the rooms on the other nodes."""
        flat = self._lookup(SCRIPT_ROOMS, [NODES_KEY], [self.node, NODE_KEY_PREFIX]) or []
        return [(flat[i].decode("ascii", "replace"), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    # -- leaving ---------------------------------------------------------------------------------

    def close(self, timeout):
        """Send what is queued (waiting at most ``timeout`` s), then erase this node from Redis."""
        if self.up:
            self.drained.wait(timeout)
        self.closing = True
        gevent.killall(self.greenlets, block=True, timeout=timeout)
        if self.up:
            r = self.registry
            try:
                self.writer.execute_command("EVAL", SCRIPT_RESET, 2, NODES_KEY, r.reaped_key,
                                            NODE_KEY_PREFIX, self.node)
            except self.errors as err:
                log.warning("Cluster: could not leave cleanly: %s", err)
        self.up = False
        for client in (self.writer, self.lookups, self.subscriber):
            client.close()


def _members(flat):
    """``[(room, id, "stamp name")]`` from a script's flat room, id, value, ... answer."""
    values = [v.decode("utf-8", "replace") for v in flat]
    return list(zip(values[0::3], values[1::3], values[2::3]))


def _hset(pipe, key, mapping):
    items = list(mapping.items())
    for start in range(0, len(items), FIELDS_PER_HSET):
        pipe.hset(key, mapping=dict(items[start:start + FIELDS_PER_HSET]))


# -- several processes on one port -----------------------------------------------------------------

#: Seconds between the supervisor's looks at its workers.
SUPERVISE_POLL = 0.2
#: Seconds before a worker that exited on its own is started again; doubled after each exit
#: that came sooner than WORKER_STABLE seconds after its start, up to WORKER_RESTART_MAX.
WORKER_RESTART_DELAY = 1.0
WORKER_RESTART_MAX = 30.0
WORKER_STABLE = 10.0
#: Seconds a stopping worker gets beyond its own --shutdown-timeout before it is killed.
WORKER_STOP_GRACE = 5.0

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _die_with_parent():
    """In a worker, before exec: get SIGTERM if the supervisor dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_workers(args, argv):
    """Run ``args.workers`` server processes on one port until SIGTERM/SIGINT; returns the exit code.

    Each worker is this server (``argv`` plus ``--workers 1 --reuse-port --port P --node
    <node>-<n>``), so each is a node of the cluster at ``--redis``. The supervisor holds the port
    bound (never listening, so no connection comes to it) and restarts a worker that exits.
    """
    try:
        probe = reuse_port_socket((args.host, args.port))
    except OSError as err:
        log.error("cannot bind %s:%s: %s", args.host, args.port, err)
        return 1
    port = probe.getsockname()[1]
    base = args.node or default_node_name()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))

    def start(n):
        cmd = [sys.executable, "-m", "chatroom.server", *argv, "--workers", "1", "--reuse-port",
               "--port", str(port), "--node", f"{base}-{n}"]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    log.info("Starting %d workers on port %d (supervisor pid %d)", args.workers, port, os.getpid())
    workers = {n: start(n) for n in range(1, args.workers + 1)}
    started = {n: time.monotonic() for n in workers}
    delays = dict.fromkeys(workers, WORKER_RESTART_DELAY)
    restart_at = {}
    while not signals:
        time.sleep(SUPERVISE_POLL)
        now = time.monotonic()
        for n, proc in workers.items():
            if proc.poll() is not None and n not in restart_at:
                delay = delays[n] if now - started[n] < WORKER_STABLE else WORKER_RESTART_DELAY
                delays[n] = min(delay * 2, WORKER_RESTART_MAX)
                restart_at[n] = now + delay
                log.warning("Worker %d (pid %d) exited with %s; restarting in %.0f s",
                            n, proc.pid, proc.returncode, delay)
        for n, when in list(restart_at.items()):
            if now >= when and not signals:
                del restart_at[n]
                workers[n], started[n] = start(n), now
    log.info("Stopping %d workers", len(workers))
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + args.shutdown_timeout + WORKER_STOP_GRACE
    codes = []
    for proc in workers.values():
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    probe.close()
    return 0 if all(code == 0 for code in codes) else 1

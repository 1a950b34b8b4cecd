"""Redis key names and the Lua scripts of the cluster: each script runs atomically in Redis.

Every key and the channel start with :data:`KEY_PREFIX`. What each key holds is in
docs/cluster.md ("State in Redis").
"""

#: Every key and the channel start with this, so a Redis database can hold other things too.
KEY_PREFIX = "chatroom:"
#: The one channel every node publishes to and subscribes to.
CHANNEL = KEY_PREFIX + "events"
#: Sorted set of live nodes, each scored with the Redis time (ms) at which it is presumed dead.
NODES_KEY = KEY_PREFIX + "nodes"
#: Start of every per-node key: ``<this><node>:ids`` and so on.
NODE_KEY_PREFIX = KEY_PREFIX + "node:"

#: Start of the keys that say a node was reaped: ``<this><node>``.
REAPED_KEY_PREFIX = KEY_PREFIX + "reaped:"


def nick_key(casefolded):
    return f"{KEY_PREFIX}nick:{casefolded}"


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
#: below. Returns {{id, "name prefix", ...}, {room, id, "stamp name", ...}}: who its members were
#: (a member may be in no room, or in several) and which rooms each was in.
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
  local ids = redis.call('HGETALL', prefix .. ':ids')
  redis.call('DEL', prefix .. ':ids', prefix .. ':rooms')
  return {ids, gone}
end
"""

#: KEYS: nodes. ARGV: this node, node key prefix, reaped key prefix, most nodes, ms remembered.
#: Take nodes past their time out of ``nodes`` (atomically: each is reaped by one node only),
#: erase their keys and remember them as reaped. Returns {node, ids, memberships} for each, the
#: last two as ``erase`` returns them.
SCRIPT_REAP = _LIVE + _ERASE + """
local _, now = live(KEYS[1])
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[4])) do
  if node ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], node)
    local gone = erase(ARGV[2] .. node)
    redis.call('SET', ARGV[3] .. node, '1', 'PX', ARGV[5])
    out[#out + 1] = {node, gone[1], gone[2]}
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

#: KEYS: ids. ARGV: id, "name prefix", ttl ms. Who a member is, from its arrival to its leaving
#: (for TELL by id, and for reaping: what its leaving is announced as).
SCRIPT_ID_SET = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""

#: KEYS: rooms, room. ARGV: id, room, "stamp name", local room size, ttl ms. A member is in a
#: room (or changed its name there).
SCRIPT_MEMBER_SET = """
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
"""

#: KEYS: rooms, room. ARGV: id, room, local room size left. A member left a room.
SCRIPT_MEMBER_DEL = """
redis.call('HDEL', KEYS[2], ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else redis.call('HDEL', KEYS[1], ARGV[2]) end
"""

#: KEYS: nodes, reaped mark. ARGV: node key prefix, this node. Erase this node's members.
#: Returns {reaped, ids, memberships}: reaped is 1 if another node had reaped this one (told
#: everyone its members left), else 0; then the members erased, as ``erase`` returns them.
SCRIPT_RESET = _ERASE + """
local gone = erase(ARGV[1] .. ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return {redis.call('DEL', KEYS[2]), gone[1], gone[2]}
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

#: KEYS: nodes. ARGV: this node, node key prefix, room. Flat "stamp name", "name prefix" (or
#: false) of each member of the room on the other nodes: IRC's NAMES and WHO across the cluster.
SCRIPT_NAMES = _LIVE + """
local out = {}
for _, node in ipairs((live(KEYS[1]))) do
  if node ~= ARGV[1] then
    local members = redis.call('HGETALL', ARGV[2] .. node .. ':room:' .. ARGV[3])
    for i = 1, #members, 2 do
      out[#out + 1] = members[i + 1]
      out[#out + 1] = redis.call('HGET', ARGV[2] .. node .. ':ids', members[i])
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

#: KEYS: nodes. ARGV: this node, node key prefix. {live nodes, members of the live nodes but this}.
SCRIPT_USERS = _LIVE + """
local nodes, users = 0, 0
for _, node in ipairs((live(KEYS[1]))) do
  nodes = nodes + 1
  if node ~= ARGV[1] then users = users + redis.call('HLEN', ARGV[2] .. node .. ':ids') end
end
return {nodes, users}
"""

#: KEYS: nodes, the nickname. ARGV: this node, node key prefix, then the ids the name may be (the
#: name itself, the id an IRC guest nickname stands for). {node, id, "name prefix"} of whoever has
#: that nickname, or else of another node's member with one of those ids; false if nobody.
SCRIPT_LOCATE = _HOLDER + """
local node, id
local v = holder(KEYS[2], KEYS[1])
if v then
  node, id = string.match(v, '^(%S+) (%S+)')
else
  for _, n in ipairs((live(KEYS[1]))) do
    if n ~= ARGV[1] then
      for i = 3, #ARGV do
        if redis.call('HEXISTS', ARGV[2] .. n .. ':ids', ARGV[i]) == 1 then
          node, id = n, ARGV[i]
          break
        end
      end
      if node then break end
    end
  end
end
if not node then return false end
return {node, id, redis.call('HGET', ARGV[2] .. node .. ':ids', id)}
"""

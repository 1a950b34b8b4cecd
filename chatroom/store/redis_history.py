"""Room history in Redis Streams, shared by every node of a cluster (``--redis``).

The same blocking interface as :class:`chatroom.store.history.SqliteStore`, behind the same
:class:`~chatroom.store.history.History` (queue, writer greenlet, retries, ``history-down``). Every
node writes the messages said on it; every node reads the whole history of a room.

Keys (all under the cluster's ``chatroom:`` prefix):

- ``chatroom:history:<room>``: a stream, one entry per message (fields ``msgid ts sender source
  text notice plain``). Redis gives each entry its id at ``XADD``, so a room's order is the order
  in which messages reached Redis.
- ``chatroom:history-ids:<room>``: a hash msgid -> stream id, so that a reference by message id
  (``HISTORY <n> <id>``, IRC ``msgid=``) costs one lookup instead of a scan of the room. Entries
  leave it when their messages are trimmed, so it holds as many entries as the stream.
- ``chatroom:history-rooms``: a sorted set room -> time of its newest message, for IRC
  ``CHATHISTORY TARGETS`` and for the age sweep to know which streams exist (no ``SCAN``).

A batch is written by one script (:data:`_WRITE`): atomic, one round trip, and idempotent: a
message whose id is already stored is skipped, so a batch retried after a lost answer is not
stored twice (unless trimming already took it: only a batch bigger than ``--history-max``).
``--history-max`` trims a room exactly to N once it is a tenth over (as SQLite does): ``MAXLEN ~``
trims only whole stream nodes (100 entries by default), so a small limit would not hold.
``--history-days`` trims each room's first entries, up to the first message of the last D days,
with ``XTRIM MINID`` (every minute, by whichever nodes sweep: trimming twice is harmless).

``seq`` is the stream id as one integer, ``ms << 20 | n`` for id ``ms-n``, so it compares as the
ids do (``n`` stays far below 2**20: at most one batch of messages per room per millisecond).

A time reference (IRC ``timestamp=``) is placed by scanning from :data:`SKEW` seconds before it:
a message reaches Redis after it was stamped, so one stamped at or after a time has an id past
that time, less the nodes' clock skew. A message stored long after it was said (queued while
Redis was down) is placed where it arrived.

Where the process is monkey-patched (a cluster node always is: its redis sockets are gevent's),
the store is ``cooperative``: History calls it from the asking greenlet, not from a thread, so the
client is only ever used on the event loop. Otherwise (tools, tests) it runs in the threadpool,
which redis-py's thread-safe connection pool allows.
"""

import logging
import time
import urllib.parse

import gevent.monkey

from .history import READERS, Message, shown_window

log = logging.getLogger("chatroom.history")

PREFIX = "chatroom:"  #: the cluster's key prefix (chatroom/cluster/scripts.py KEY_PREFIX)
STREAM_PREFIX = PREFIX + "history:"
IDS_PREFIX = PREFIX + "history-ids:"
ROOMS_KEY = PREFIX + "history-rooms"
#: Seconds one Redis command may take (connect, or send and answer) before it counts as failed.
REDIS_TIMEOUT = 2.0
#: Seconds a node's clock may be ahead of Redis's for time references to stay exact.
SKEW = 5.0
#: Entries read per round trip while scanning a room.
CHUNK = 200
#: Past every seq: "no upper bound".
END = 1 << 62
_LOW = (1 << 20) - 1

#: KEYS: rooms. ARGV: stream prefix, ids prefix, max per room (0: none), then 9 values per message
#: (room msgid ts sender source text notice plain target). Returns how many were added.
_WRITE = """
local sp, ip, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
local last, added = {}, 0
for i = 4, #ARGV, 9 do
  local room, msgid = ARGV[i], ARGV[i + 1]
  local ids = ip .. room
  if redis.call('HEXISTS', ids, msgid) == 0 then
    local id = redis.call('XADD', sp .. room, '*', 'msgid', msgid, 'ts', ARGV[i + 2],
      'sender', ARGV[i + 3], 'source', ARGV[i + 4], 'text', ARGV[i + 5],
      'notice', ARGV[i + 6], 'plain', ARGV[i + 7], 'target', ARGV[i + 8])
    redis.call('HSET', ids, msgid, id)
    local ts = tonumber(ARGV[i + 2])
    if last[room] == nil or ts > last[room] then last[room] = ts end
    added = added + 1
  end
end
for room, ts in pairs(last) do
  redis.call('ZADD', KEYS[1], 'GT', ts, room)
  if keep > 0 then
    local stream = sp .. room
    local extra = redis.call('XLEN', stream) - keep
    if extra > math.floor(keep / 10) then
      local ids = ip .. room
      for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', extra)) do
        local fields = entry[2]
        for f = 1, #fields, 2 do
          if fields[f] == 'msgid' then redis.call('HDEL', ids, fields[f + 1]) end
        end
      end
      redis.call('XTRIM', stream, 'MAXLEN', keep)
    end
  end
end
return added
"""

#: KEYS: rooms, the room's stream, its ids. ARGV: room. A room the age sweep emptied is forgotten
#: (atomically: a message arriving meanwhile keeps it).
_FORGET = """
if redis.call('XLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def seq_of(stream_id):
    ms, _, n = (stream_id.decode() if isinstance(stream_id, bytes) else stream_id).partition("-")
    return int(ms) << 20 | int(n)


def id_of(seq):
    return f"{seq >> 20}-{seq & _LOW}"


def _text(raw):
    return raw.decode("utf-8", "replace")


def _ms_id(seconds):
    """The first stream id of the millisecond of time ``seconds``."""
    return f"{min(max(0, int(seconds * 1000)), END >> 20)}-0"


def safe_url(url):
    """``url`` without its password, for the log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


class RedisStreamStore:
    """Blocking Redis storage of room messages; see the module's text."""

    def __init__(self, url, max_per_room=0, max_days=0.0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.path = f"Redis streams at {safe_url(url)}"  # what the server's log line says
        self.max_per_room = max_per_room
        self.max_days = max_days
        self.cooperative = gevent.monkey.is_module_patched("socket")
        # One retry on a broken connection (a restarted Redis): every call here may run twice.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=READERS + 2, timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 1))
        self.redis = redis.Redis(connection_pool=pool)
        self._write = self.redis.register_script(_WRITE)
        self._forget = self.redis.register_script(_FORGET)

    def open(self):
        self.redis.ping()

    def close(self):
        self.redis.close()

    def write(self, rows):
        """Store ``rows`` (tuples in :data:`Message` order without ``seq``) at once."""
        args = [STREAM_PREFIX, IDS_PREFIX, self.max_per_room]
        for msgid, ts, room, sender, source, text, notice, plain, target in rows:
            args += (room, msgid, repr(ts), sender, source, text, notice, plain, target)
        self._write(keys=[ROOMS_KEY], args=args)

    def prune_old(self, now=None):
        """Delete messages older than ``max_days``; returns how many.

        As in SQLite, messages are taken to be stored in time order: a room loses its first
        entries up to the first one stamped after the cutoff (``XTRIM MINID``)."""
        if not self.max_days:
            return 0
        cutoff = (now or time.time()) - self.max_days * 86400
        removed = 0
        rooms = [raw.decode() for raw in self.redis.zrange(ROOMS_KEY, 0, -1)]
        for start in range(0, len(rooms), CHUNK * 5):  # each room's first entry, in one trip
            some = rooms[start:start + CHUNK * 5]
            pipe = self.redis.pipeline(transaction=False)
            for room in some:
                pipe.xrange(STREAM_PREFIX + room, "-", "+", count=1)
            for room, first in zip(some, pipe.execute()):
                if not first or float(first[0][1][b"ts"]) < cutoff:
                    removed += self._prune_room(room, cutoff)
        return removed

    def _prune_room(self, room, cutoff):
        stream, ids = STREAM_PREFIX + room, IDS_PREFIX + room
        removed = 0
        while True:
            entries = self.redis.xrange(stream, "-", "+", count=CHUNK * 5)
            old = []
            for entry in entries:
                if float(entry[1][b"ts"]) >= cutoff:
                    break
                old.append(entry)
            if not old:
                break
            pipe = self.redis.pipeline(transaction=False)
            # The ids go first: an id whose message is gone reads as "no such message".
            pipe.hdel(ids, *[f[b"msgid"] for _, f in old])
            pipe.xtrim(stream, minid=id_of(seq_of(old[-1][0]) + 1), approximate=False)
            removed += pipe.execute()[1]
            if len(old) < len(entries):
                break
        self._forget(keys=[ROOMS_KEY, stream, ids], args=[room])
        return removed

    # -- reads -----------------------------------------------------------------------------------

    def _messages(self, room, entries):
        out = []
        for stream_id, f in entries:
            out.append(Message(seq_of(stream_id), f[b"msgid"].decode(), float(f[b"ts"]), room,
                               _text(f[b"sender"]), _text(f[b"source"]), _text(f[b"text"]),
                               int(f[b"notice"]), int(f[b"plain"]), _text(f.get(b"target", b""))))
        return out

    def _range(self, room, after, before, count, newest):
        """Up to ``count`` messages with ``after < seq < before``, oldest first."""
        if count <= 0 or before - after < 2:
            return []
        lo, hi = id_of(max(after, 0) + 1), id_of(min(before, END) - 1)
        key = STREAM_PREFIX + room
        if newest:
            entries = self.redis.xrevrange(key, hi, lo, count=count)
            entries.reverse()
        else:
            entries = self.redis.xrange(key, lo, hi, count=count)
        return self._messages(room, entries)

    def latest(self, room, count, before_seq=None):
        """The last ``count`` messages of ``room`` (before ``before_seq``), oldest first."""
        return self._range(room, 0, END if before_seq is None else before_seq, count, True)

    def after(self, room, count, after_seq):
        """The first ``count`` messages of ``room`` after ``after_seq``, oldest first."""
        return self._range(room, after_seq, END, count, False)

    def span(self, room, after, before, count, newest):
        """Up to ``count`` messages of ``room`` with ``after < seq < before``, oldest first: the
        newest such (``newest``) or the oldest."""
        return self._range(room, after, before, count, newest)

    def find(self, room, msgid):
        """The stored message ``msgid`` of ``room``, or None."""
        stream_id = self.redis.hget(IDS_PREFIX + room, msgid)
        if stream_id is None:
            return None
        found = self._messages(room, self.redis.xrange(STREAM_PREFIX + room, stream_id,
                                                       stream_id))
        return found[0] if found and found[0].msgid == msgid else None

    def _scan(self, room, start, forward, stop):
        """Walk ``room`` from stream id ``start`` (inclusive) and return the first message for
        which ``stop(message)`` is true, or None at the end."""
        key = STREAM_PREFIX + room
        while True:
            if forward:
                entries = self.redis.xrange(key, start, "+", count=CHUNK)
            else:
                entries = self.redis.xrevrange(key, start, "-", count=CHUNK)
            for m in self._messages(room, entries):
                if stop(m):
                    return m
            if len(entries) < CHUNK:
                return None
            start = "(" + entries[-1][0].decode()

    def _first_at(self, room, ts):
        """The first message (in seq order) shown at or after ``ts`` (to the millisecond)."""
        start = shown_window(ts)[0]
        return self._scan(room, _ms_id(ts - SKEW), True, lambda m: m.ts >= start)

    def _last_at(self, room, ts):
        """The last message (in seq order) shown at or before ``ts`` (to the millisecond)."""
        end = shown_window(ts)[1]
        return self._scan(room, _ms_id(ts + SKEW), False, lambda m: m.ts < end)

    def seq_at(self, room, ts):
        """The seq of the first message of ``room`` at or after time ``ts`` (or past the end)."""
        found = self._first_at(room, ts)
        if found is not None:
            return found.seq
        last = self.redis.xrevrange(STREAM_PREFIX + room, "+", "-", count=1)
        return seq_of(last[0][0]) + 1 if last else 0

    def bounds(self, room, ref):
        """Where reference ``ref`` (a msgid, or a time as a float) sits in ``room``: ``(after,
        before)``, so that "after ref" is ``seq > after`` and "before ref" is ``seq < before``.
        None for a msgid not in ``room``."""
        if isinstance(ref, float):
            lo, hi = self._last_at(room, ref), self._first_at(room, ref)
            return (lo.seq if lo else 0, hi.seq if hi else END)
        found = self.find(room, ref)
        return None if found is None else (found.seq, found.seq)

    def rooms(self, since, until, count):
        """Rooms (and conversations) whose latest message is after ``since`` and before
        ``until`` (times, as shown: to the millisecond): ``(room, last ts)``, oldest first."""
        low, high = shown_window(since)[1], shown_window(until)[0]
        return [(raw.decode(), last) for raw, last in self.redis.zrangebyscore(
            ROOMS_KEY, repr(low), f"({high!r}", start=0, num=count, withscores=True)]

"""This node's connections to Redis: the ordered publisher, the subscriber, heartbeats and
recovery, and the lookups a client waits on.

``redis`` must be imported only after ``gevent.monkey.patch_all()`` (its sockets must be gevent's),
so it is imported inside :class:`Link`, never at module import.
"""

import collections
import logging
import time

import gevent
import gevent.event
import gevent.monkey

from .scripts import (CHANNEL, NODE_KEY_PREFIX, NODES_KEY, REAPED_KEY_PREFIX, SCRIPT_ALIVE,
                      SCRIPT_CLAIM, SCRIPT_LOCATE, SCRIPT_NICKS, SCRIPT_REAP, SCRIPT_RESET,
                      SCRIPT_NAMES, SCRIPT_ROOMS, SCRIPT_USERS, SCRIPT_WHO, nick_key)

log = logging.getLogger("chatroom.cluster")

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

    def publish(self, record):
        """Queue one event record (:mod:`.records`) for the other nodes; dropped while Redis is
        unreachable."""
        if self.open:
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
            self.registry.node_died(dead[0].decode("utf-8", "replace"), *_members(dead[1:]))

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
        reset = results[0] if isinstance(results[0], list) else [0, [], []]  # refused: logged
        reaped, (gone, memberships) = reset[0], _members(reset[1:])
        if self.ever_up:  # back after an outage: the members erased were this process's own
            if reaped:
                r.rejoined()
        elif gone or memberships:  # first connection: an earlier process under this name died
            r.node_died(self.node, gone, memberships)

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

    def locate(self, who, ids):
        """``(node, id, "name prefix" or None)`` of the member called ``who`` (its nickname, or one
        of ``ids``) anywhere in the cluster, or None."""
        found = self._lookup(SCRIPT_LOCATE, [NODES_KEY, nick_key(who.casefold())],
                             [self.node, NODE_KEY_PREFIX, *ids])
        if not found:
            return None
        node, member_id, ident = (v.decode("utf-8", "replace") if v is not None else None
                                  for v in (list(found) + [None])[:3])
        return node, member_id, ident

    def room_members(self, room):
        """``[(stamp, name)]`` of the members of ``room`` on the other nodes."""
        values = self._lookup(SCRIPT_WHO, [NODES_KEY], [self.node, NODE_KEY_PREFIX, room]) or []
        members = []
        for value in values:
            stamp, _, name = value.decode("utf-8", "replace").partition(" ")
            members.append((float(stamp), name))
        return members

    def room_idents(self, room):
        """``[(stamp, name, prefix or None)]`` of the members of ``room`` on the other nodes."""
        flat = self._lookup(SCRIPT_NAMES, [NODES_KEY], [self.node, NODE_KEY_PREFIX, room]) or []
        members = []
        for i in range(0, len(flat) - 1, 2):
            stamp, _, name = flat[i].decode("utf-8", "replace").partition(" ")
            ident = flat[i + 1].decode("utf-8", "replace") if flat[i + 1] else ""
            prefix = ident.partition(" ")[2] or None
            members.append((float(stamp), name, prefix))
        return members

    def room_counts(self):
        """``[(room, size)]`` of the rooms on the other nodes."""
        flat = self._lookup(SCRIPT_ROOMS, [NODES_KEY], [self.node, NODE_KEY_PREFIX]) or []
        return [(flat[i].decode("ascii", "replace"), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def user_counts(self):
        """``(live nodes, members on the other nodes)``, or None without Redis."""
        counts = self._lookup(SCRIPT_USERS, [NODES_KEY], [self.node, NODE_KEY_PREFIX])
        return None if counts is None else (int(counts[0]), int(counts[1]))

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


def _members(answer):
    """``({id: "name prefix"}, [(room, id, "stamp name")])`` from what ``erase`` (a script) returns."""
    ids_flat, rooms_flat = (list(answer) + [[], []])[:2]
    ids = [v.decode("utf-8", "replace") for v in ids_flat or ()]
    values = [v.decode("utf-8", "replace") for v in rooms_flat or ()]
    return (dict(zip(ids[0::2], ids[1::2])),
            list(zip(values[0::3], values[1::3], values[2::3])))


def _hset(pipe, key, mapping):
    items = list(mapping.items())
    for start in range(0, len(items), FIELDS_PER_HSET):
        pipe.hset(key, mapping=dict(items[start:start + FIELDS_PER_HSET]))

"""Accounts and bans in Redis, for a cluster (``--redis``): every node sees the same ones.

The same interface as :class:`chatroom.accounts.store.SqliteStore`, plus change notices: a node that
registers an account or changes a ban publishes it, and every node's :class:`Accounts` service
updates its caches (names and bans are looked up without I/O) and closes what a new ban covers.

A cluster node runs monkey-patched (docs/cluster.md), so these calls wait cooperatively: the service
calls them from the asking client's greenlet (``cooperative``) rather than from a worker thread.
Registration is atomic across nodes (``HSETNX``).

Keys: ``chatroom:accounts`` (hash: key -> JSON name and password hash), ``chatroom:bans`` (hash:
``kind value`` -> JSON until, reason, by), ``chatroom:offline:<key>`` (list, oldest first: the
private messages kept for an offline account, each a JSON array of :class:`Kept`'s fields);
channel ``chatroom:accounts:changes``. Keeping is one script (the bound is checked and the message
pushed atomically) and taking one ``MULTI`` (read and delete), so two nodes never hand out the
same message.
"""

import json
import logging
import time

import gevent
import redis

from .store import Kept

log = logging.getLogger("chatroom.accounts")

ACCOUNTS = "chatroom:accounts"
BANS = "chatroom:bans"
CHANGES = "chatroom:accounts:changes"
OFFLINE_PREFIX = "chatroom:offline:"
#: KEYS[1] the account's list, ARGV[1] the message, ARGV[2] the most that may wait: 1 if pushed.
SCRIPT_KEEP = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""
#: Seconds between attempts to listen for changes again after Redis went away.
RETRY = 1.0


class RedisStore:
    cooperative = True  #: called from greenlets: its sockets are gevent's
    errors = (redis.RedisError, OSError)  #: raised while Redis is away

    def __init__(self, url):
        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.listener = None

    def load_names(self):
        return [key.decode() for key in self.redis.hkeys(ACCOUNTS)]

    def get(self, key):
        raw = self.redis.hget(ACCOUNTS, key)
        if raw is None:
            return None
        record = json.loads(raw)
        return record["name"], record["password"]

    def create(self, key, name, password_hash):
        record = json.dumps({"name": name, "password": password_hash, "created": time.time()})
        if not self.redis.hsetnx(ACCOUNTS, key, record):
            return False
        self.redis.publish(CHANGES, json.dumps({"account": key}))
        return True

    def bans(self):
        now = time.time()
        found = []
        for field, raw in self.redis.hgetall(BANS).items():
            kind, _, value = field.decode().partition(" ")
            ban = json.loads(raw)
            if ban["until"] is None or ban["until"] > now:
                found.append((kind, value, ban["until"], ban["reason"]))
        return found

    def add_ban(self, kind, value, until, reason, by):
        self.redis.hset(BANS, f"{kind} {value}", json.dumps({"until": until, "reason": reason, "by": by}))
        self.redis.publish(CHANGES, json.dumps({"ban": [kind, value, until, reason]}))

    def remove_ban(self, kind, value):
        removed = self.redis.hdel(BANS, f"{kind} {value}") > 0
        self.redis.publish(CHANGES, json.dumps({"unban": [kind, value]}))
        return removed

    def keep(self, key, message, limit):
        return bool(self.redis.eval(SCRIPT_KEEP, 1, OFFLINE_PREFIX + key,
                                    json.dumps(list(message)), limit))

    def take(self, key):
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(OFFLINE_PREFIX + key, 0, -1)
        pipe.delete(OFFLINE_PREFIX + key)
        raw, _ = pipe.execute()
        return [Kept(*json.loads(item)) for item in raw]

    def listen(self, on_change, on_connect):
        """Call ``on_change(change)`` for every notice from any node, in a greenlet, until closed;
        ``on_connect()`` each time the notices start (again): changes missed meanwhile are read."""
        def run():
            while True:
                try:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(CHANGES)
                    on_connect()
                    for message in pubsub.listen():
                        if message.get("type") == "message":
                            on_change(json.loads(message["data"]))
                except (redis.RedisError, OSError, ValueError) as err:
                    log.warning("Accounts: lost the change notices from Redis (%s); retrying", err)
                    gevent.sleep(RETRY)
        self.listener = gevent.spawn(run)

    def close(self):
        if self.listener is not None:
            self.listener.kill(block=False)
        self.redis.close()

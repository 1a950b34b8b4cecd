"""The accounts service: registering, logging in, and the guard on registered nicknames.

The event loop never waits here: password hashing runs in a small pool of worker threads and the
store's I/O in one worker thread of its own, each job through a bounded queue (at most
:data:`QUEUE_LIMIT` jobs waiting). Only the greenlet of the client that asked (its reader) waits for
the answer; everyone else goes on. Nickname checks need no I/O at all: the set of registered names
is read once at start and kept up to date here.

A wrong password and an unknown account cost the same: an unknown one is checked against a dummy
hash made at start. Failed logins are limited per address and per account (:class:`FailureLimit`).
"""

import logging
import os
import time

from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from ..codec.native import ProtocolError
from ..codec.text import NAME_RE
from .passwords import DUMMY_HASH, hash_password, normalize, verify_password

log = logging.getLogger("chatroom.accounts")

#: Worker threads that hash passwords (each hash takes one core for some 40 ms and 19 MiB): one
#: core fewer than the machine has, so the event loop keeps one (measured on 2 cores: 2 threads at
#: 20 logins/s raised a chat's p99 latency from 2 to 80 ms, 1 thread only to 7 ms), at most 4.
HASH_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))
#: Most jobs waiting for the workers; more wait in their own reader greenlet for a place.
QUEUE_LIMIT = 64
#: Failed logins allowed per account, and per address, within FAIL_WINDOW seconds.
FAILS_PER_ACCOUNT = 5
FAILS_PER_ADDRESS = 20
FAIL_WINDOW = 60.0
#: Most private messages kept for one offline account (docs/protocol.md, "Messages to an offline
#: account"); past it the sender gets ``ERR mailbox-full``. It bounds what anyone can make the
#: store hold for one account (100 lines of at most --max-line bytes).
MAILBOX_MAX = 100


class FailureLimit:
    """Counts failures per key in fixed windows; no I/O, memory bounded by pruning old windows."""

    def __init__(self, limit, window=FAIL_WINDOW, clock=time.monotonic, max_keys=100_000):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self.counts = {}  # key -> [failures, window start]

    def blocked(self, key):
        entry = self.counts.get(key)
        if entry is None:
            return False
        if self.clock() - entry[1] >= self.window:
            del self.counts[key]
            return False
        return entry[0] >= self.limit

    def fail(self, key):
        now = self.clock()
        entry = self.counts.get(key)
        if entry is None or now - entry[1] >= self.window:
            if len(self.counts) >= self.max_keys:
                self.counts = {k: v for k, v in self.counts.items() if now - v[1] < self.window}
            self.counts[key] = [1, now]
        else:
            entry[0] += 1


class Accounts:
    """Accounts over a store (see :mod:`chatroom.accounts.store` for the interface)."""

    def __init__(self, store, hash_threads=HASH_THREADS, queue_limit=QUEUE_LIMIT):
        self.store = store
        self.io = ThreadPool(1)  # one thread: the store's connection is used by one at a time
        self.cpu = ThreadPool(hash_threads)
        self.slots = BoundedSemaphore(queue_limit)
        self.errors = getattr(store, "errors", ())  #: what a store that may be away raises
        #: what any store call may raise when the store fails: answered ``accounts-unavailable``
        self.failures = self.errors + getattr(store, "failures", ())
        self.names = set()  #: every account's key: read at start, kept up to date here after
        self.bans = {}  #: (kind, value) -> (until or None, reason): every ban, likewise
        try:
            self.reload()  # at start, before any client: blocking is fine
        except self.errors as err:  # Redis not up yet: read when it is (follow)
            log.warning("Accounts: store unavailable at start (%s); reading it when it answers", err)

    def reload(self):
        self.names = set(self.store.load_names())
        self.bans = {(kind, value): (until, reason)
                     for kind, value, until, reason in self.store.bans()}
        self.by_account = FailureLimit(FAILS_PER_ACCOUNT)
        self.by_address = FailureLimit(FAILS_PER_ADDRESS)
        self.dummy = DUMMY_HASH  # unknown accounts are checked against it: the same cost

    def run(self, pool, func, *args):
        """Run ``func`` in a worker thread; the calling greenlet (only) waits for its result."""
        with self.slots:
            return pool.spawn(func, *args).get()

    def store_call(self, method, *args):
        try:
            if getattr(self.store, "cooperative", False):  # network I/O that yields (Redis)
                with self.slots:
                    return getattr(self.store, method)(*args)
            return self.run(self.io, getattr(self.store, method), *args)
        except self.failures as err:
            log.warning("Accounts: store unavailable (%s)", err)
            raise ProtocolError("accounts-unavailable", "accounts are unavailable; try again later") from None

    def follow(self, on_ban):
        """With a shared store (Redis): keep the caches up to date with every node's changes;
        ``on_ban()`` is called after a ban arrives (to close what it covers)."""
        listen = getattr(self.store, "listen", None)
        if listen is None:
            return

        def on_change(change):
            if "account" in change:
                self.names.add(change["account"])
                log.info("Accounts: account %s is registered (cluster)", change["account"])
            elif "ban" in change:
                kind, value, until, reason = change["ban"]
                self.bans[(kind, value)] = (until, reason)
                log.info("Accounts: %s %s is banned (cluster)", kind, value)
                on_ban()
            elif "unban" in change:
                self.bans.pop(tuple(change["unban"]), None)
                log.info("Accounts: %s %s is no longer banned (cluster)", *change["unban"])

        def on_connect():
            self.reload()
            on_ban()

        listen(on_change, on_connect)

    def is_registered(self, nick):
        """Whether ``nick`` is an account's name (no I/O)."""
        return nick.casefold() in self.names

    def register(self, name, password):
        """Make ``name`` an account with ``password``; returns the name or raises ProtocolError."""
        key = name.casefold()
        password = normalize(password)
        if key in self.names:
            raise ProtocolError("account-exists", f"'{name}' is already registered")
        hashed = self.run(self.cpu, hash_password, password)
        if not self.store_call("create", key, name, hashed):
            self.names.add(key)
            raise ProtocolError("account-exists", f"'{name}' is already registered")
        self.names.add(key)
        log.info("Account %s registered", name)
        return name

    def login(self, name, password, address):
        """The account ``name`` if ``password`` is its password; ProtocolError otherwise.

        ``login-failed`` whether the account is unknown or the password wrong (same cost either
        way), ``rate-limited`` after too many failures for this account or from this address.
        """
        key = name.casefold()
        shown = name if NAME_RE.match(name) else repr(name[:64])  # SASL names are anything
        if self.by_account.blocked(key) or self.by_address.blocked(address):
            log.warning("Login to %s from %s refused: too many failures", shown, address)
            raise ProtocolError("rate-limited", "too many failed logins; try again later")
        try:
            password = normalize(password)
        except ProtocolError:
            password = None  # cannot be anyone's password; still costs a hash below
        record = self.store_call("get", key)
        stored = record[1] if record is not None else self.dummy
        ok = self.run(self.cpu, verify_password, password or "", stored)
        if not (ok and record is not None and password is not None):
            self.by_account.fail(key)
            self.by_address.fail(address)
            log.info("Failed login to %s from %s", shown, address)
            raise ProtocolError("login-failed", "no such account, or wrong password")
        return record[0]

    # -- messages to offline accounts -----------------------------------------------------------

    def keep(self, account, message, limit=MAILBOX_MAX):
        """Keep ``message`` (a :class:`~chatroom.accounts.store.Kept`) for the registered
        ``account`` until it logs in; ProtocolError ``mailbox-full`` when ``limit`` wait already,
        ``accounts-unavailable`` when the store fails."""
        if not self.store_call("keep", account.casefold(), message, limit):
            raise ProtocolError("mailbox-full", f"{limit} messages already wait for '{account}'; "
                                "not kept")

    def take(self, account):
        """The messages kept for ``account``, oldest first, and gone from the store."""
        return self.store_call("take", account.casefold())

    # -- bans ----------------------------------------------------------------------------------

    def banned(self, kind, value):
        """The reason ``value`` (a nick or account, any case; an address) is banned, or None."""
        key = (kind, value if kind == "address" else value.casefold())
        entry = self.bans.get(key)
        if entry is None:
            return None
        until, reason = entry
        if until is not None and until <= time.time():
            del self.bans[key]
            return None
        return reason or "banned"

    def ban(self, kind, value, minutes, reason, by):
        """Ban ``value`` (``kind``: nick, account or address) for ``minutes`` (None: for ever)."""
        value = value if kind == "address" else value.casefold()
        until = None if minutes is None else time.time() + 60 * minutes
        self.bans[(kind, value)] = (until, reason)
        self.store_call("add_ban", kind, value, until, reason, by)  # other nodes hear of it
        log.info("%s banned %s %s%s", by, kind, value, "" if minutes is None else f" for {minutes} min")

    def unban(self, value, by):
        """Lift every ban of ``value`` (as nick, account and address); returns the kinds lifted."""
        lifted = []
        for kind in ("nick", "account", "address"):
            key = (kind, value if kind == "address" else value.casefold())
            if self.bans.pop(key, None) is not None:
                lifted.append(kind)
                self.store_call("remove_ban", *key)
        if lifted:
            log.info("%s lifted the ban of %s", by, value)
        return lifted

    def close(self):
        self.io.kill()
        self.cpu.kill()
        self.store.close()

"""Where accounts and bans are kept. :class:`SqliteStore` is one file under ``--data-dir``.

Every method blocks (disk I/O): the service (:mod:`chatroom.accounts.service`) calls them from a
worker thread, never from the event loop. A store holds only what is given to it: password
hashes, never passwords. Names are keyed case-folded (``key``), as nicknames are compared.

The interface, which the Redis store implements too:

- ``load_names()``: every account's key (read once at start, to guard nicknames without I/O)
- ``get(key)``: the account's ``(name, password_hash)``, or None
- ``create(key, name, password_hash)``: a new account; False if the key is taken
- ``bans()``, ``add_ban(kind, value, until, reason, by)``, ``remove_ban(kind, value)``: bans
- ``keep(key, message, limit)``: keep a private message (a :class:`Kept`) for the offline
  account ``key``; False (and not kept) when ``limit`` of them wait already
- ``take(key)``: the messages kept for ``key``, oldest first, deleted from the store in the same
  step (so each is handed out once)
- ``close()``
"""

import os
import sqlite3
import time
from collections import namedtuple

#: A private message kept for an account that was offline: when it was sent (``time.time()``), its
#: id, the sender's name (``sender``) and ``nick!user@host`` (``source``) then, its text, whether
#: it was a notice, and whether the text is plain (from a native client) or IRC-formatted.
Kept = namedtuple("Kept", "ts msgid sender source text notice plain")

#: Schema migrations, applied in order: the database's ``user_version`` says how many ran.
MIGRATIONS = (
    """CREATE TABLE accounts (
           key TEXT PRIMARY KEY,      -- the name case-folded
           name TEXT NOT NULL,        -- as registered
           password TEXT NOT NULL,    -- $argon2id$... (or scrypt$N$r$p$salt$hash)
           created REAL NOT NULL
       )""",
    """CREATE TABLE bans (
           kind TEXT NOT NULL,        -- nick, account or address
           value TEXT NOT NULL,       -- case-folded nick or account, or an IP address
           until REAL,                -- time.time() it ends, or NULL: never
           reason TEXT NOT NULL,
           by TEXT NOT NULL,
           created REAL NOT NULL,
           PRIMARY KEY (kind, value)
       )""",
    (  # private messages kept for accounts that were offline, until they log in
        """CREATE TABLE offline (
               id INTEGER PRIMARY KEY,    -- the order they came in
               account TEXT NOT NULL,     -- the recipient account's key
               ts REAL NOT NULL,
               msgid TEXT NOT NULL,
               sender TEXT NOT NULL,      -- the sender's name then
               source TEXT NOT NULL,      -- and its nick!user@host
               text TEXT NOT NULL,
               notice INTEGER NOT NULL,
               plain INTEGER NOT NULL
           )""",
        "CREATE INDEX offline_account ON offline (account, id)",
    ),
)
DB_NAME = "chatroom.sqlite3"


class SqliteStore:
    """Accounts and bans in SQLite (WAL), one connection used by one worker thread at a time."""

    #: What a failing database raises once running (disk full, the file gone unreadable): the
    #: service answers ``accounts-unavailable`` rather than dropping the client. (Unlike Redis's
    #: ``errors``, these are not forgiven at start: the names must be read before any client.)
    failures = (sqlite3.DatabaseError,)

    def __init__(self, directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, DB_NAME)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                  timeout=10.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def migrate(self):
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in (sql,) if isinstance(sql, str) else sql:
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return version

    @property
    def version(self):
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def load_names(self):
        return [row[0] for row in self.db.execute("SELECT key FROM accounts")]

    def get(self, key):
        row = self.db.execute("SELECT name, password FROM accounts WHERE key = ?", (key,)).fetchone()
        return tuple(row) if row else None

    def create(self, key, name, password_hash):
        try:
            self.db.execute("INSERT INTO accounts (key, name, password, created) VALUES (?, ?, ?, ?)",
                            (key, name, password_hash, time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    def bans(self):
        now = time.time()
        return [tuple(row) for row in self.db.execute(
            "SELECT kind, value, until, reason FROM bans WHERE until IS NULL OR until > ?", (now,))]

    def add_ban(self, kind, value, until, reason, by):
        self.db.execute("INSERT OR REPLACE INTO bans (kind, value, until, reason, by, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (kind, value, until, reason, by, time.time()))

    def remove_ban(self, kind, value):
        return self.db.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value)).rowcount > 0

    def keep(self, key, message, limit):
        with self._transaction():
            (waiting,) = self.db.execute("SELECT COUNT(*) FROM offline WHERE account = ?",
                                         (key,)).fetchone()
            if waiting >= limit:
                return False
            self.db.execute("INSERT INTO offline (account, ts, msgid, sender, source, text, notice, "
                            "plain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, message.ts, message.msgid, message.sender, message.source,
                             message.text, int(message.notice), int(message.plain)))
        return True

    def take(self, key):
        with self._transaction():
            rows = self.db.execute("SELECT id, ts, msgid, sender, source, text, notice, plain "
                                   "FROM offline WHERE account = ? ORDER BY id", (key,)).fetchall()
            if rows:
                self.db.execute("DELETE FROM offline WHERE account = ? AND id <= ?",
                                (key, rows[-1][0]))
        return [Kept(ts, msgid, sender, source, text, bool(notice), bool(plain))
                for _, ts, msgid, sender, source, text, notice, plain in rows]

    def _transaction(self):
        return _Transaction(self.db)

    def close(self):
        self.db.close()


class _Transaction:
    """``with``: one write transaction (``BEGIN IMMEDIATE``), committed at its end or rolled back."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
        return False



"""Where accounts and bans are kept. :class:`SqliteStore` is one file under ``--data-dir``.

Every method blocks (disk I/O): the service (:mod:`chatroom.accounts.service`) calls them from a
worker thread, never from the event loop. A store holds only what is given to it: password
hashes, never passwords. Names are keyed case-folded (``key``), as nicknames are compared.

The interface, which the Redis store implements too:

- ``load_names()``: every account's key (read once at start, to guard nicknames without I/O)
- ``get(key)``: the account's ``(name, password_hash)``, or None
- ``create(key, name, password_hash)``: a new account; False if the key is taken
- ``bans()``, ``add_ban(kind, value, until, reason, by)``, ``remove_ban(kind, value)``: bans
- ``close()``
"""

import os
import sqlite3
import time

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
)
DB_NAME = "chatroom.sqlite3"


class SqliteStore:
    """Accounts and bans in SQLite (WAL), one connection used by one worker thread at a time."""

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
                self.db.execute(sql)
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

    def close(self):
        self.db.close()



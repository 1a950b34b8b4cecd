"""Room history: every message said in a room, kept in SQLite under ``--data-dir`` (or, on a
cluster node, in Redis Streams shared by every node: :mod:`chatroom.store.redis_history`).

Two halves:

- :class:`SqliteStore` is plain blocking SQLite (WAL). It runs only in threads of gevent's
  threadpool, never on the event loop: one writer at a time, readers on their own connections.
- :class:`History` is what the server holds on the event loop. ``record()`` (the registry's
  ``on_message`` hook) only appends to a bounded in-memory queue; one writer greenlet drains the
  queue every :data:`WINDOW` seconds (or as soon as :data:`BATCH` messages wait) and commits the
  batch as one transaction in a thread. Reads (scrollback, paging) block only the greenlet that
  asks, in a thread, at most :data:`READERS` at once.

Writing never slows chat. When the queue is full the newest messages are not kept (counted and
logged); when the store fails (a data directory that cannot be written, a full disk) the failed
batch is kept and retried every :data:`RETRY` seconds while new messages queue up to the bound;
``on_status(False)`` / ``on_status(True)`` tell the server when that starts and ends. A ``kill -9``
loses what was queued and not yet committed (one window, :data:`WINDOW` seconds of messages,
while the disk keeps up; at most :data:`QUEUE_LIMIT` messages when it does not); SQLite's
write-ahead log keeps the file itself consistent.
"""

import collections
import logging
import os
import sqlite3
import threading
import time

import gevent
import gevent.event
import gevent.lock

log = logging.getLogger("chatroom.history")

#: Seconds messages may wait in memory before they are committed: what a ``kill -9`` can lose.
WINDOW = 0.05
#: Messages committed at once at most; a full batch is written without waiting for the window.
BATCH = 1000
#: Messages waiting in memory at most; beyond it new messages are not kept.
QUEUE_LIMIT = 50000
#: Seconds between attempts to write while the store is failing.
RETRY = 1.0
#: Reads running at once at most (each in a thread of the pool); more wait their turn.
READERS = 4
#: Seconds between sweeps of messages older than ``--history-days``.
PRUNE_EVERY = 60.0
#: Most messages one page of history may hold (native ``HISTORY``, IRC ``CHATHISTORY``).
PAGE_MAX = 100
DB_NAME = "history.sqlite3"
#: Rooms whose last ``--scrollback`` messages are kept in memory, the least recently read going
#: first: scrollback of such a room needs no read of the store.
TAILS = 1000

#: One stored message: ``seq`` orders them; ``msgid`` and ``ts`` are what the registry stamped.
#: ``room`` is a room's name, or a private conversation's key (:func:`conversation`), whose
#: messages also name their ``target`` (the nickname they were sent to).
Message = collections.namedtuple("Message", "seq msgid ts room sender source text notice plain target",
                                 defaults=("",))


def party(member):
    """One side of a private conversation: its account if logged in to one, else its nickname."""
    account = getattr(member, "account", None)
    return "a:" + account.casefold() if account else "n:" + member.ircnick.casefold()


def conversation(one, other):
    """The history key of the private messages between parties ``one`` and ``other`` (see
    :func:`party`). It holds a space, which no room name does."""
    return "@" + " ".join(sorted((one, other)))


def other_party(key, me):
    """The other side of conversation ``key`` for party ``me`` (``me`` again for a note to
    oneself), or None when ``me`` is not in it."""
    if not key.startswith("@"):
        return None
    first, _, second = key[1:].partition(" ")
    if first == me:
        return second
    return first if second == me else None

#: One index besides the table's own order: every message written costs its B-tree updates, and
#: retention deletes as many rows as are written. Lookups by id or time scan one room's rows
#: (at most --history-max), only when a client pages back.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    msgid TEXT NOT NULL,
    ts REAL NOT NULL,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    notice INTEGER NOT NULL DEFAULT 0,
    plain INTEGER NOT NULL DEFAULT 1,
    target TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_room_seq ON messages (room, seq);
"""
_COLUMNS = "seq, msgid, ts, room, sender, source, text, notice, plain, target"




def shown_window(ref):
    """``(start, end)``: the times a client sees as ``ref``, to the millisecond (server-time and
    ``HIST`` round to it), so that a message is "at" the time it was shown with when
    ``start <= ts < end``. Times given back by a client then match the messages they came from."""
    ms = round(ref * 1000)
    return (ms - 0.5) / 1000, (ms + 0.5) / 1000


def _add_target_column(db):
    """A database from before private history has no ``target`` column: add it (once; another
    connection may be doing the same)."""
    if any(row[1] == "target" for row in db.execute("PRAGMA table_info(messages)")):
        return
    try:
        db.execute("ALTER TABLE messages ADD COLUMN target TEXT NOT NULL DEFAULT ''")
    except sqlite3.OperationalError as err:
        if "duplicate column" not in str(err):
            raise


class SqliteStore:
    """Blocking SQLite storage of room messages; every method runs in a worker thread."""

    def __init__(self, directory, max_per_room=0, max_days=0.0):
        self.path = os.path.join(directory, DB_NAME)
        self.directory = directory
        self.max_per_room = max_per_room
        self.max_days = max_days
        self._local = threading.local()
        self._counts = {}  #: messages per room, as far as the writer knows (for trimming)

    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            os.makedirs(self.directory, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a killed process loses nothing committed; a power cut may lose
            # the last commits, never the file's consistency.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            _add_target_column(db)
            self._local.db = db
        return db

    def _drop(self):
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    def open(self):
        try:
            self._db()
        except Exception:
            self._drop()
            raise

    def write(self, rows):
        """Commit ``rows`` (tuples in :data:`Message` order without ``seq``) as one transaction."""
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO messages (msgid, ts, room, sender, source,"
                               " text, notice, plain, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               rows)
                if self.max_per_room:
                    self._trim(db, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except Exception:
            self._counts.clear()  # the transaction was rolled back: count again
            self._drop()  # a broken connection is reopened on the next try
            raise

    def _trim(self, db, rows):
        """Keep ``max_per_room`` messages per room written to. A room is trimmed when it is a
        tenth over (finding the cut walks that many index entries: not on every batch)."""
        added = collections.Counter(row[2] for row in rows)
        keep = self.max_per_room
        for room, n in added.items():
            count = self._counts.get(room)
            if count is None:
                count = db.execute("SELECT COUNT(*) FROM messages WHERE room = ?",
                                   (room,)).fetchone()[0]
            else:
                count += n
            if count > keep + keep // 10:
                db.execute("DELETE FROM messages WHERE room = ? AND seq <= (SELECT seq FROM"
                           " messages WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                           (room, room, keep))
                count = keep
            self._counts[room] = count

    def prune_old(self, now=None):
        """Delete messages older than ``max_days``; returns how many."""
        if not self.max_days:
            return 0
        cutoff = (now or time.time()) - self.max_days * 86400
        db = self._db()
        # Messages are written in time order: the old ones are the first rows (no index on time).
        row = db.execute("SELECT seq FROM messages WHERE ts >= ? ORDER BY seq LIMIT 1",
                         (cutoff,)).fetchone()
        self._counts.clear()
        if row is None:
            return db.execute("DELETE FROM messages").rowcount
        return db.execute("DELETE FROM messages WHERE seq < ?", (row[0],)).rowcount

    def _select(self, sql, args):
        try:
            return [Message(*row) for row in self._db().execute(sql, args)]
        except Exception:
            self._drop()
            raise

    def latest(self, room, count, before_seq=None):
        """The last ``count`` messages of ``room`` (before ``before_seq``), oldest first."""
        if before_seq is None:
            rows = self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? ORDER BY seq DESC"
                                " LIMIT ?", (room, count))
        else:
            rows = self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq < ?"
                                " ORDER BY seq DESC LIMIT ?", (room, before_seq, count))
        rows.reverse()
        return rows

    def after(self, room, count, after_seq):
        """The first ``count`` messages of ``room`` after ``after_seq``, oldest first."""
        return self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq > ?"
                            " ORDER BY seq LIMIT ?", (room, after_seq, count))

    def find(self, room, msgid):
        """The stored message ``msgid`` of ``room``, or None."""
        rows = self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND msgid = ?",
                            (room, msgid))
        return rows[0] if rows else None

    def seq_at(self, room, ts):
        """The seq of the first message of ``room`` at or after time ``ts`` (or past the end)."""
        rows = self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND ts >= ?"
                            " ORDER BY ts, seq LIMIT 1", (room, shown_window(ts)[0]))
        if rows:
            return rows[0].seq
        rows = self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? ORDER BY seq DESC"
                            " LIMIT 1", (room,))
        return rows[0].seq + 1 if rows else 0

    def bounds(self, room, ref):
        """Where reference ``ref`` (a msgid, or a time as a float) sits in ``room``: ``(after,
        before)``, so that "after ref" is ``seq > after`` and "before ref" is ``seq < before``.
        None for a msgid not in ``room``."""
        db = self._db()
        if isinstance(ref, float):
            start, end = shown_window(ref)
            lo = db.execute("SELECT MAX(seq) FROM messages WHERE room = ? AND ts < ?",
                            (room, end)).fetchone()[0]
            hi = db.execute("SELECT MIN(seq) FROM messages WHERE room = ? AND ts >= ?",
                            (room, start)).fetchone()[0]
            return (lo or 0, hi if hi is not None else 1 << 62)
        row = db.execute("SELECT seq FROM messages WHERE room = ? AND msgid = ?",
                         (room, ref)).fetchone()
        return None if row is None else (row[0], row[0])

    def span(self, room, after, before, count, newest):
        """Up to ``count`` messages of ``room`` with ``after < seq < before``, oldest first: the
        newest such (``newest``) or the oldest."""
        order = "DESC" if newest else "ASC"
        rows = self._select(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq > ? AND"
                            f" seq < ? ORDER BY seq {order} LIMIT ?", (room, after, before, count))
        if newest:
            rows.reverse()
        return rows

    def rooms(self, since, until, count):
        """Rooms (and conversations) whose latest message is after ``since`` and before
        ``until`` (times, as shown: to the millisecond): ``(room, last ts)``, oldest first."""
        try:
            return self._db().execute(
                "SELECT room, MAX(ts) AS last FROM messages GROUP BY room HAVING last >= ?"
                " AND last < ? ORDER BY last LIMIT ?",
                (shown_window(since)[1], shown_window(until)[0], count)).fetchall()
        except Exception:
            self._drop()
            raise


class History:
    """The history store as the event loop sees it: a bounded queue in, blocking reads out."""

    def __init__(self, store, scrollback=50, on_status=None, window=WINDOW,
                 queue_limit=QUEUE_LIMIT):
        self.store = store
        self.scrollback = scrollback
        self.page_max = PAGE_MAX
        self.on_status = on_status or (lambda up: None)
        self.window = window
        self.queue_limit = queue_limit
        self.queue = collections.deque()  #: message rows not yet committed, oldest first
        self.inflight = []  #: the batch being committed (or retried)
        self.up = True
        self.dropped = 0  #: messages not kept because the queue was full
        self.written = 0
        self._wake = gevent.event.Event()
        self._readers = gevent.lock.BoundedSemaphore(READERS)
        self._pool = gevent.get_hub().threadpool
        self.cooperative = getattr(store, "cooperative", False)
        self._writer = None
        self._stopping = False
        self._pruned = 0.0
        #: room -> its last messages (a deque), or the messages said while they are being read
        #: from the store (a list). Off where other processes write the same store (a cluster).
        self._tails = collections.OrderedDict()
        self.cache = True
        #: room -> lists collecting the ids of messages said there while a read is under way
        self._watchers = {}

    # -- on the loop -----------------------------------------------------------------------------

    def start(self):
        try:
            self._call(self.store.open)
            self._call(self.store.prune_old)
            self._pruned = time.monotonic()
        except Exception as err:
            self._set_up(False, err)
        self._writer = gevent.spawn(self._write_loop)

    def stop(self, timeout=5.0):
        """Commit what is queued (a graceful shutdown loses nothing), then stop the writer."""
        if self._writer is None:
            return
        self._stopping = True
        self._wake.set()
        self._writer.join(timeout)
        self._writer.kill(block=False)
        self._writer = None

    def record(self, room, member, texts, stamps, notice=False):
        """The registry's ``on_message`` hook: queue ``texts`` said by ``member`` in ``room``."""
        queue = self.queue
        room_name = room.name
        sender, source, plain = member.name, member.prefix, int(member.plain)
        notice = int(notice)
        overflow = len(queue) + len(texts) > self.queue_limit
        tail = self._tails.get(room_name) if self._tails else None
        watchers = self._watchers.get(room_name) if self._watchers else None
        for text, (ts, msgid) in zip(texts, stamps):
            if overflow and len(queue) >= self.queue_limit:
                self._lose()
                continue
            row = (msgid, ts, room_name, sender, source, text, notice, plain, "")
            queue.append(row)
            if tail is not None:
                tail.append(Message(None, *row))
            if watchers is not None:
                for watcher in watchers:
                    watcher.append(msgid)
        if len(queue) >= BATCH or not self._wake.is_set():
            self._wake.set()

    def record_private(self, sender, target, text, stamp, notice=False):
        """The registry's ``on_private`` hook: keep a private message when one of its two sides
        is logged in to an account (only they can read it back, docs/protocol.md)."""
        if not (getattr(sender, "account", None) or getattr(target, "account", None)):
            return
        if len(self.queue) >= self.queue_limit:
            self._lose()
            return
        ts, msgid = stamp
        self.queue.append((msgid, ts, conversation(party(sender), party(target)), sender.name,
                           sender.prefix, text, int(notice), int(sender.plain), target.ircnick))
        if not self._wake.is_set():
            self._wake.set()

    def _lose(self):
        if not self.dropped:
            log.warning("history queue full (%d messages): new messages are not kept",
                        self.queue_limit)
        self.dropped += 1

    def _set_up(self, up, err=None):
        if up == self.up:
            return
        self.up = up
        if up:
            log.warning("history store recovered; %d messages were not kept meanwhile",
                        self.dropped)
            self.dropped = 0
        else:
            log.error("history store failing (%s): messages wait in memory (up to %d), "
                      "then are not kept", err, self.queue_limit)
        self.on_status(up)

    def _call(self, fn, *args):
        """Run blocking ``fn`` in a thread; this greenlet waits, the loop runs on. A
        ``cooperative`` store (its sockets are gevent's: Redis on a cluster node) is called
        right here instead, so that its client is only ever used on the loop's thread."""
        if self.cooperative:
            return fn(*args)
        ok, value = self._pool.spawn(_catching, fn, *args).get()
        if not ok:
            raise value
        return value

    def _write_loop(self):
        while True:
            self._wake.wait()
            if not self._stopping and len(self.queue) < BATCH:
                gevent.sleep(self.window)  # group commit: gather a window's messages
            self._wake.clear()
            while self.queue or self.inflight:
                if not self.inflight:
                    n = min(BATCH, len(self.queue))
                    self.inflight = [self.queue.popleft() for _ in range(n)]
                try:
                    self._call(self.store.write, self.inflight)
                except Exception as err:
                    self._set_up(False, err)
                    if self._stopping:
                        return
                    gevent.sleep(RETRY)
                    continue
                self.written += len(self.inflight)
                self.inflight = []
                self._set_up(True)
            if self.dropped and self.up:  # the disk caught up with a burst it could not take
                log.warning("history queue drained; %d messages were not kept", self.dropped)
                self.dropped = 0
            if self._stopping:
                return
            if self.store.max_days and time.monotonic() - self._pruned > PRUNE_EVERY:
                self._pruned = time.monotonic()
                try:
                    self._call(self.store.prune_old)
                except Exception as err:
                    log.warning("history: pruning failed: %s", err)

    # -- reads (block the calling greenlet only) -------------------------------------------------

    def _pending(self, room):
        """Messages of ``room`` said but not yet committed, oldest first, as :data:`Message`."""
        rows = [r for r in self.inflight if r[2] == room]
        rows += [r for r in self.queue if r[2] == room]
        return [Message(None, *r) for r in rows]

    def _read(self, fn, *args):
        with self._readers:
            return self._call(fn, *args)

    def latest(self, room, count, before=None):
        """The last ``count`` messages of ``room`` (before message id ``before``), oldest first.

        Includes what is queued and not yet on disk, so a message said just before is there.
        Raises LookupError for an unknown ``before``, and the store's error when it fails.
        """
        if self.store.max_per_room:
            count = min(count, self.store.max_per_room)
        if before is None and self.cache and 0 < count <= self.scrollback:
            tail = self._tails.get(room)
            if tail is None:
                return self._load_tail(room)[-count:]
            if type(tail) is collections.deque:
                self._tails.move_to_end(room)
                rows = list(tail)[-count:]
                if self.store.max_days:  # a quiet room's tail outlives the store's sweep
                    cutoff = time.time() - self.store.max_days * 86400
                    rows = [m for m in rows if m.ts >= cutoff]
                return rows
        return self._fetch(room, count, before)

    def _fetch(self, room, count, before=None):
        """:meth:`latest` from the store and the queue, without the kept tails."""
        pending = self._pending(room)
        ids = [m.msgid for m in pending]
        if before is not None and before not in ids:
            return self._read(self.store.latest, room, count, self._anchor(room, before))
        if before is not None:
            pending = pending[:ids.index(before)]
        # What is said while the store is read is not the asker's history (it is in the room and
        # hears it live), even if the writer commits it before the read runs.
        late = []
        self._watchers.setdefault(room, []).append(late)
        try:
            stored = self._read(self.store.latest, room, count)
        finally:
            watchers = [w for w in self._watchers[room] if w is not late]
            if watchers:
                self._watchers[room] = watchers
            else:
                del self._watchers[room]
        seen = set(ids)
        seen.update(late)
        rows = [m for m in stored if m.msgid not in seen] + pending
        return rows[-count:] if count else []

    def _load_tail(self, room):
        """Read ``room``'s scrollback and keep it in memory from now on; returns it.

        What is said in the room while the store is read is collected beside it (``record``)
        and added to what is kept, not to what is returned: the asker is in the room already and
        hears those live.
        """
        size = min(self.scrollback, self.store.max_per_room or self.scrollback)
        during = self._tails[room] = []
        while len(self._tails) > TAILS:
            self._tails.popitem(last=False)
        try:
            rows = self._fetch(room, size)
        except Exception:
            if self._tails.get(room) is during:
                del self._tails[room]
            raise
        if self._tails.get(room) is during:  # not pushed out meanwhile
            seen = {m.msgid for m in rows}
            kept = rows + [m for m in during if m.msgid not in seen]
            self._tails[room] = collections.deque(kept, maxlen=size)
        return rows

    def after(self, room, count, after):
        return self._read(self.store.after, room, count, self._anchor(room, after))

    def _anchor(self, room, ref):
        """The seq of a message reference: ``msgid=...``/a plain msgid, or ``timestamp=...``."""
        if isinstance(ref, float):
            return self._read(self.store.seq_at, room, ref)
        message = self._read(self.store.find, room, ref)
        if message is None:
            raise LookupError(ref)
        return message.seq

    def settle(self, timeout=2.0):
        """Wait (this greenlet only) until what was said so far is on disk, or ``timeout`` passes
        or the store is failing: lookups by id and time then see the latest messages too."""
        target = self.written + len(self.inflight) + len(self.queue)
        deadline = time.monotonic() + timeout
        while self.written < target and self.up and time.monotonic() < deadline:
            self._wake.set()
            gevent.sleep(0.005)

    def bounds(self, room, ref):
        return self._read(self.store.bounds, room, ref)

    def span(self, room, after, before, count, newest):
        return self._read(self.store.span, room, after, before, count, newest)

    def rooms(self, since, until, count):
        return self._read(self.store.rooms, since, until, count)


def _catching(fn, *args):
    """Run ``fn`` in a worker thread; its error comes back as a value (the pool would print it)."""
    try:
        return True, fn(*args)
    except Exception as err:
        return False, err

"""Room history (issue 11): a real bin/chat-server with --history on and its own --data-dir.

What a client sees is spelled out: ``HIST <room> <id> <time> <from> <text>`` lines, oldest first,
then ``HISTEND <room>``, right after the ``JOIN`` that put it in the room and before anything live.
Waits are on lines and on the database file itself (what a ``kill -9`` keeps is what was
committed), never on fixed sleeps.
"""

import re
import signal
import sqlite3
import time

import gevent

from chatroom.store.history import History, SqliteStore
from conftest import WAIT, wait_until

#: ``HIST <room> <id> <time> <from> <text>``, the time UTC to the millisecond.
HIST_RE = re.compile(r"^HIST (\S+) ([0-9a-f]+-[0-9a-f]+) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (.*)$")


def history_server(start_server, data_dir, *args):
    return start_server("--history", "on", "--data-dir", data_dir, *args)


def read_history(client, room, hist_re=HIST_RE):
    """The HIST lines up to ``HISTEND <room>``, as (room, id, time, from, text) tuples."""
    out = []
    while True:
        line = client.recv_line()
        if line == f"HISTEND {room}":
            return out
        m = hist_re.match(line)
        assert m, f"expected a HIST line or HISTEND {room}, got {line!r}"
        out.append(m.groups())
    return out


def connect(server, clients):
    """A new client: HELLO, JOIN lobby, then the lobby's history (returned)."""
    c = clients(server)
    return c, read_history(c, "lobby")


def say(client, *texts):
    client.send("".join(f"SEND {t}\n" for t in texts))
    assert client.sync() == []  # said: the server ran every line before the PONG


def stored(data_dir):
    """How many messages the database file holds now (what survives a kill -9)."""
    try:
        with sqlite3.connect(f"file:{data_dir}/history.sqlite3?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_scrollback_on_connect_then_live(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path, "--scrollback", "3")
    a, seen = connect(server, clients)
    assert seen == []
    say(a, "one", "two", "three", "four")
    b, seen = connect(server, clients)
    assert [(r, f, t) for r, _, _, f, t in seen] == [
        ("lobby", a.id, "two"), ("lobby", a.id, "three"), ("lobby", a.id, "four")]
    now = time.strftime("%Y-%m-%dT", time.gmtime())
    assert all(when.startswith(now) for _, _, when, _, _ in seen)
    a.send("SEND live now")
    assert b.recv_line() == f"MSG lobby {a.id} live now"  # live lines stay MSG


def test_scrollback_on_join_and_rooms_are_apart(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path)
    a, _ = connect(server, clients)
    b, _ = connect(server, clients)
    assert a.sync() == [f"JOIN lobby {b.id}"]
    a.send("JOIN dev")
    assert a.recv_line() == f"JOIN dev {a.id}"
    assert read_history(a, "dev") == []
    say(a, "in dev")
    assert b.sync() == [f"PART lobby {a.id} join"]
    b.send("JOIN dev")
    assert b.recv_line() == f"JOIN dev {b.id}"
    assert [t for *_, t in read_history(b, "dev")] == ["in dev"]
    b.send("JOIN lobby")
    assert b.recv_line() == f"JOIN lobby {b.id}"
    assert read_history(b, "lobby") == []


def test_history_pages_back(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path, "--scrollback", "2")
    a, _ = connect(server, clients)
    say(a, *(f"m{i}" for i in range(1, 8)))
    b, seen = connect(server, clients)
    assert [t for *_, t in seen] == ["m6", "m7"]
    b.send(f"HISTORY 3 {seen[0][1]}")
    page = read_history(b, "lobby")
    assert [t for *_, t in page] == ["m3", "m4", "m5"]
    b.send(f"HISTORY {page[0][1]}")  # the count defaults to --scrollback
    assert [t for *_, t in read_history(b, "lobby")] == ["m1", "m2"]
    b.send("HISTORY 10")
    assert [t for *_, t in read_history(b, "lobby")] == [f"m{i}" for i in range(1, 8)]
    b.send("HISTORY 5 1a0000000-1")
    assert b.recv_line() == "ERR no-such-message no message 1a0000000-1 in lobby"
    b.send("HISTORY 0")
    assert b.recv_line() == "ERR bad-argument usage: HISTORY [@<nick>] [<count>] [<before-id>], count 1 or more"
    b.send("HISTORY 5 not-an-id extra")
    assert b.recv_line() == "ERR bad-argument usage: HISTORY [@<nick>] [<count>] [<before-id>]"


def test_history_off_says_so(server, clients):
    a = clients(server)
    a.send("HISTORY")
    assert a.recv_line() == "ERR history-off this server keeps no history"
    assert a.sync() == []


def test_ids_unique_and_in_the_order_said(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path, "--flood-rate", "0")
    a, _ = connect(server, clients)
    b, _ = connect(server, clients)
    assert a.sync() == [f"JOIN lobby {b.id}"]
    texts = [f"n{i}" for i in range(100)]
    for i in range(0, 100, 25):  # several reads: batches and single lines alike
        say(a, *texts[i:i + 25])
    b.send("SEND from b")
    b.sync()
    b.send("HISTORY 100")
    page = read_history(b, "lobby")
    assert [t for *_, t in page] == texts[1:] + ["from b"]
    ids = [i for _, i, _, _, _ in page]
    assert len(set(ids)) == 100


def test_retention_by_count_and_a_graceful_restart(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path, "--history-max", "3")
    a, _ = connect(server, clients)
    say(a, "r1", "r2", "r3", "r4", "r5")
    b, seen = connect(server, clients)
    assert [t for *_, t in seen] == ["r3", "r4", "r5"]
    b.close()
    assert server.stop() == 0
    server = history_server(start_server, tmp_path, "--history-max", "3")
    c, seen = connect(server, clients)
    assert [(f, t) for _, _, _, f, t in seen] == [(a.id, "r3"), (a.id, "r4"), (a.id, "r5")]
    assert stored(tmp_path) == 3


def test_retention_by_age(start_server, clients, tmp_path):
    store = SqliteStore(str(tmp_path))
    now = time.time()
    store.write([("1-1", now - 3 * 86400, "lobby", "old", "old!~native@x", "three days ago", 0, 1, ""),
                 ("1-2", now - 3600, "lobby", "new", "new!~native@x", "an hour ago", 0, 1, "")])
    server = history_server(start_server, tmp_path, "--history-days", "2")
    c, seen = connect(server, clients)
    assert [(f, t) for _, _, _, f, t in seen] == [("new", "an hour ago")]
    assert stored(tmp_path) == 1


def test_kill_9_keeps_what_was_committed_and_the_file_opens_clean(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path, "--flood-rate", "0")
    a, _ = connect(server, clients)
    say(a, *(f"k{i}" for i in range(50)))
    wait_until(lambda: stored(tmp_path) == 50)  # the group commit is at most ~50 ms behind
    a.send("".join(f"SEND late{i}\n" for i in range(500)))  # may or may not be committed
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(WAIT)
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    server = history_server(start_server, tmp_path, "--scrollback", "100")
    b, seen = connect(server, clients)
    said = [f"k{i}" for i in range(50)] + [f"late{i}" for i in range(500)]
    kept = stored(tmp_path)  # what was committed: all 50 and whichever batches of the rest
    assert kept >= 50
    assert [t for *_, t in seen] == said[:kept][-100:]  # unbroken and in order


def test_a_failing_data_dir_never_stops_chat_and_history_resumes(start_server, clients, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    blocker = data_dir / "history.sqlite3"
    blocker.mkdir()  # a directory where the database file should be: it cannot be opened
    server = history_server(start_server, data_dir)
    server.wait_for(r"^ERROR: history store failing")
    server.wait_for(r"^History in .* \(failing: chat goes on without it\)$")
    a, seen = connect(server, clients)
    b, _ = connect(server, clients)
    assert seen == []
    assert a.sync() == [f"JOIN lobby {b.id}"]
    a.send("SEND still flowing")
    assert b.recv_line() == f"MSG lobby {a.id} still flowing"
    blocker.rmdir()
    for c in (a, b):
        assert c.recv_line() == "NOTICE history-up messages are saved in the room history again"
    server.wait_for(r"^WARNING: history store recovered; 0 messages were not kept meanwhile$")
    c, seen = connect(server, clients)
    assert [(f, t) for _, _, _, f, t in seen] == [(a.id, "still flowing")]
    assert stored(data_dir) == 1


class FailingStore(SqliteStore):
    """A store whose writes fail while ``failing`` is set: a full disk, injected."""

    failing = False

    def write(self, rows):
        if self.failing:
            raise OSError(28, "No space left on device")
        super().write(rows)


class _Room:
    name = "lobby"


class _Member:
    name = "ann"
    prefix = "ann!~native@127.0.0.1"
    plain = True


def test_store_failing_mid_run_keeps_the_queue_and_recovers(tmp_path):
    store = FailingStore(str(tmp_path))
    changes = []
    history = History(store, on_status=changes.append, window=0.001, queue_limit=5)
    history.start()
    history.record(_Room, _Member, ["a"], [(time.time(), "1-1")])
    _wait(lambda: store.latest("lobby", 10))
    store.failing = True
    history.record(_Room, _Member, ["b", "c"], [(time.time(), "1-2"), (time.time(), "1-3")])
    _wait(lambda: changes == [False])
    history.record(_Room, _Member, [f"x{i}" for i in range(6)],
                   [(time.time(), f"2-{i}") for i in range(6)])
    assert history.dropped == 1  # 2 in the failed batch stay, 5 queue, the sixth is not kept
    assert [m.text for m in history.latest("lobby", 3)] == ["x2", "x3", "x4"]
    store.failing = False
    _wait(lambda: changes == [False, True], timeout=WAIT)
    history.stop()
    assert [m.text for m in store.latest("lobby", 10)] == ["a", "b", "c", "x0", "x1", "x2", "x3", "x4"]


def _wait(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met within the deadline"
        gevent.sleep(0.005)


def test_terminal_client_shows_history_with_times_then_a_separator(start_server, clients, tmp_path,
                                                                  monkeypatch):
    from test_client import ClientProcess

    monkeypatch.setenv("TZ", "UTC")  # the client shows times in local time
    server = history_server(start_server, tmp_path)
    a, _ = connect(server, clients)
    a.send("NICK ann")
    assert a.recv_line() == f"NICK {a.id} ann"
    say(a, "hi all")
    user = ClientProcess(server.port)
    try:
        user.connect()
        day = time.strftime("%Y-%m-%d", time.gmtime())
        m = user.expect(rf"^\[lobby ({day} \d\d:\d\d)\] ann: hi all$")
        when = time.strptime(m.group(1), "%Y-%m-%d %H:%M")
        assert abs(time.mktime(when) - time.mktime(time.gmtime())) < 180
        user.expect_line("---- lobby: earlier messages above, live from here ----")
        a.send("SEND live")
        user.expect_line("[lobby] ann: live")
        user.type("JOIN empty")
        user.expect_line("* " + user.lines[0].split(" as ")[1] + " joined empty")
        user.type("QUIT")
        assert user.wait() == 0
        assert "earlier messages above" not in "\n".join(user.lines[-3:])  # none for an empty room
    finally:
        user.kill()


def test_scrollback_joins_the_live_lines_without_a_gap_or_a_repeat(start_server, clients, tmp_path):
    """While a sender keeps talking, a newcomer's history ends exactly where its live MSGs begin."""
    import threading

    server = history_server(start_server, tmp_path, "--flood-rate", "0", "--scrollback", "20")
    a, _ = connect(server, clients)
    said, heard = threading.Event(), threading.Event()

    def talk():  # until the newcomer has heard a live line (bounded all the same)
        for i in range(0, 200_000, 50):
            if heard.is_set():
                return
            a.send("".join(f"SEND s{n}\n" for n in range(i, i + 50)))
            if i == 500:
                said.set()

    talker = threading.Thread(target=talk)
    talker.start()
    try:
        assert said.wait(WAIT)
        b, seen = connect(server, clients)
        numbers = [int(t[1:]) for *_, t in seen]
        assert len(numbers) == 20 and numbers == list(range(numbers[0], numbers[0] + 20))
        line = b.recv_line()
        heard.set()
        assert line == f"MSG lobby {a.id} s{numbers[-1] + 1}", line
    finally:
        heard.set()
        talker.join(WAIT)


def test_history_off_writes_nothing_and_sends_no_history(start_server, clients, tmp_path):
    server = start_server("--history", "off", "--data-dir", tmp_path)
    a = clients(server)
    a.send("SEND not kept")
    assert a.sync() == []  # said before b comes
    b = clients(server)
    assert b.sync() == []  # HELLO and JOIN only: no HIST, no HISTEND
    assert a.sync() == [f"JOIN lobby {b.id}"]
    assert server.stop() == 0
    # Only the accounts database (chatroom.sqlite3 and its WAL files): no history file.
    assert not any(p.name.startswith("history") for p in tmp_path.iterdir())
    assert {p.name for p in tmp_path.iterdir()} <= {
        "chatroom.sqlite3", "chatroom.sqlite3-wal", "chatroom.sqlite3-shm"}


class SlowStore(SqliteStore):
    """Reads wait for ``go``: messages can be said (and committed) while a read is under way."""

    def __init__(self, directory):
        super().__init__(directory)
        import threading

        self.go = threading.Event()

    def latest(self, room, count, before_seq=None):
        assert self.go.wait(WAIT)
        return super().latest(room, count, before_seq)


def _say(history, *texts):
    now = time.time()
    history.record(_Room, _Member, list(texts), [(now, f"{t}-1") for t in texts])


def test_what_is_said_during_a_read_is_live_not_history_and_is_kept_in_the_tail(tmp_path):
    store = SlowStore(str(tmp_path))
    history = History(store, scrollback=10, window=0.001)
    history.start()
    try:
        _say(history, "a", "b")
        for cache in (False, True):  # a cluster node reads the store; a lone server keeps tails
            history.cache = cache
            store.go.clear()
            reader = gevent.spawn(history.latest, "lobby", 10)
            gevent.sleep(0.01)
            _say(history, f"c{cache:d}", f"d{cache:d}")  # said while the read waits...
            _wait(lambda: not history.queue and not history.inflight)  # ...committed before it runs
            store.go.set()
            seen = [m.text for m in reader.get(timeout=WAIT)]
            assert seen == (["a", "b"] if not cache else ["a", "b", "c0", "d0"])
        assert [m.text for m in history.latest("lobby", 10)] == ["a", "b", "c0", "d0", "c1", "d1"]
        _say(history, "e")
        assert [m.text for m in history.latest("lobby", 3)] == ["c1", "d1", "e"]  # from memory
    finally:
        store.go.set()
        history.stop()


def test_a_database_from_before_private_history_gains_its_column(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "history.sqlite3")
    db.executescript("""
        CREATE TABLE messages (seq INTEGER PRIMARY KEY, msgid TEXT NOT NULL, ts REAL NOT NULL,
            room TEXT NOT NULL, sender TEXT NOT NULL, source TEXT NOT NULL, text TEXT NOT NULL,
            notice INTEGER NOT NULL DEFAULT 0, plain INTEGER NOT NULL DEFAULT 1);
        INSERT INTO messages (msgid, ts, room, sender, source, text)
            VALUES ('1-1', 1.5, 'lobby', 'ann', 'ann!~native@x', 'from before');
    """)
    db.commit()
    db.close()
    store = SqliteStore(str(tmp_path))
    (old,) = store.latest("lobby", 10)
    assert (old.text, old.target) == ("from before", "")
    store.write([("1-2", 2.5, "@a:ann a:bob", "ann", "ann!~ann@x", "hi", 0, 0, "bob")])
    assert store.latest("@a:ann a:bob", 10)[0].target == "bob"
    again = SqliteStore(str(tmp_path))  # opening it again changes nothing
    assert [m.text for m in again.latest("lobby", 10)] == ["from before"]


def test_private_history_on_the_native_protocol(start_server, clients, tmp_path):
    server = history_server(start_server, tmp_path, "--flood-rate", "0")
    people = {}
    for name in ("ann", "bob"):
        c, _ = connect(server, clients)
        c.send(f"NICK {name}")
        c.send(f"REGISTER {name}'s password")
        assert c.expect("ACCOUNT ", skip=("NICK ", "JOIN ", "PART ")) == f"ACCOUNT {name}"
        people[name] = c
    ann, bob = people["ann"], people["bob"]
    guest, _ = connect(server, clients)
    ann.send("TELL bob lunch?")
    assert bob.expect("TELL ", skip=("JOIN ", "PART ", "NICK ")) == "TELL ann lunch?"
    bob.send("TELL ann at noon")
    assert ann.expect("TELL ", skip=("JOIN ", "PART ", "NICK ")) == "TELL bob at noon"
    ann.sync()
    ann.send("HISTORY @bob")
    got = read_history(ann, "@bob")
    assert [(r, f, t) for r, _, _, f, t in got] == [("@bob", "ann", "lunch?"), ("@bob", "bob", "at noon")]
    bob.sync()
    bob.send("HISTORY @ANN 1")  # the latest one; names compare case-insensitively
    assert [(f, t) for _, _, _, f, t in read_history(bob, "@ANN")] == [("bob", "at noon")]
    ann.send(f"HISTORY @bob 5 {got[1][1]}")  # paging back from an id
    assert [t for *_, t in read_history(ann, "@bob")] == ["lunch?"]
    guest.sync()
    guest.send("HISTORY @ann")  # private history is an account's
    assert guest.sync() == ["ERR not-logged-in private history is an account's: LOGIN first"]
    ann.send("LOGOUT")
    ann.sync()
    ann.send("HISTORY @bob")
    assert ann.sync() == ["ERR not-logged-in private history is an account's: LOGIN first"]

"""Room history shared by cluster nodes through Redis Streams (``--redis`` with ``--history on``).

Each test starts its own ``redis-server`` on an ephemeral port, with an append-only file fsynced
on every write, so that a ``kill -9`` of Redis and a restart keep what was stored; then one or two
``bin/chat-server --redis`` nodes. Waits are on lines and on what Redis holds, never fixed sleeps.
Skipped when redis-server is not installed.
"""

import re
import shutil
import subprocess
import time

import pytest

from conftest import WAIT, free_port, wait_until
import test_history
from test_cluster import start_node
from test_history import _Member, _Room, say

REDIS_SERVER = shutil.which("redis-server")

DOWN = "NOTICE history-down messages are not being saved in the room history"
UP = "NOTICE history-up messages are saved in the room history again"


class PersistentRedis:
    """A ``redis-server`` on a fixed ephemeral port whose data survives a kill and a restart."""

    def __init__(self, directory):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_until(self.answers)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=WAIT)

    def answers(self):
        import redis

        try:
            return self.client().ping()
        except (redis.RedisError, OSError):
            return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)


@pytest.fixture
def redis_server(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    server = PersistentRedis(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def node(start_server, redis_server):
    """Factory: ``node("n1", *args)`` is a chat server on the test's Redis, keeping history."""

    def start(name, *args):
        server = start_node(start_server, redis_server.url, name, "--history", "on", *args)
        server.wait_for(r"^History in Redis streams at redis://127\.0\.0\.1:\d+/0 \(ready\)$")
        return server

    return start


#: ``HIST <room> <id> <time> <from> <text>``; a cluster's ids end with the node's name.
HIST_RE = re.compile(r"^HIST (\S+) ([0-9a-f]+-[A-Za-z0-9_.-]+) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"
                     r" (\S+) (.*)$")


def read_history(client, room):
    """The HIST lines up to ``HISTEND <room>``, as (room, id, time, from, text) tuples."""
    return test_history.read_history(client, room, HIST_RE)


def stored(redis_server, room="lobby"):
    return redis_server.client().xlen(f"chatroom:history:{room}")


def connect(server, clients):
    c = clients(server)
    return c, read_history(c, "lobby")


def texts(rows):
    return [t for *_, t in rows]


def lines_until(client, wanted, timeout=WAIT, prefix=False):
    """Lines read up to and including ``wanted`` (or one starting with it, with ``prefix``);
    others, such as cluster notices and live messages, may come first."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        line = client.recv_line(max(0.01, deadline - time.monotonic()))
        seen.append(line)
        if line == wanted or prefix and line.startswith(wanted):
            return seen


# -- the store on its own ------------------------------------------------------------------------

def test_redis_stream_store_methods(redis_server):
    from chatroom.store.redis_history import END, RedisStreamStore

    store = RedisStreamStore(redis_server.url, max_per_room=0)
    store.open()
    assert store.latest("lobby", 10) == [] and store.find("lobby", "1-1") is None
    assert store.seq_at("lobby", time.time()) == 0 and store.rooms(0.0, 1e12, 10) == []
    # Stamped a moment before they reach Redis, as on a node (time references rely on it).
    t = time.time() - 2
    ts = [t + i / 10 for i in range(11)]
    rows = [(f"a-{i}", ts[i], "lobby", "ann", "ann!~native@x", f"m{i}", i % 2, 1, "") for i in range(10)]
    store.write(rows[:6])
    store.write(rows[4:])  # a retried batch: what is there already is not stored twice
    store.write([("b-1", t + 5, "dev", "bob", "bob!~native@x", "in dev", 0, 0, "")])
    every = store.latest("lobby", 100)
    assert [m.text for m in every] == [f"m{i}" for i in range(10)]
    assert [m.notice for m in every] == [i % 2 for i in range(10)]
    seqs = [m.seq for m in every]
    assert all(isinstance(s, int) for s in seqs) and seqs == sorted(set(seqs))
    assert (every[3].msgid, every[3].ts, every[3].room, every[3].sender, every[3].source) == (
        "a-3", ts[3], "lobby", "ann", "ann!~native@x")
    assert [m.text for m in store.latest("lobby", 3)] == ["m7", "m8", "m9"]
    assert [m.text for m in store.latest("lobby", 2, seqs[5])] == ["m3", "m4"]
    assert [m.text for m in store.after("lobby", 2, seqs[5])] == ["m6", "m7"]
    assert store.find("lobby", "a-4") == every[4]
    assert store.find("dev", "a-4") is None and store.find("lobby", "nope") is None
    assert store.bounds("lobby", "a-4") == (seqs[4], seqs[4])
    assert store.bounds("lobby", "b-1") is None
    assert store.bounds("lobby", ts[4]) == (seqs[4], seqs[4])  # a message at that very time
    assert store.bounds("lobby", ts[4] + 0.05) == (seqs[4], seqs[5])
    assert store.bounds("lobby", t - 1) == (0, seqs[0])
    assert store.bounds("lobby", t + 20) == (seqs[9], END)
    assert store.seq_at("lobby", ts[4] + 0.05) == seqs[5]
    assert store.seq_at("lobby", t + 20) == seqs[9] + 1
    assert [m.text for m in store.span("lobby", seqs[2], seqs[7], 10, False)] == [
        "m3", "m4", "m5", "m6"]
    assert [m.text for m in store.span("lobby", seqs[2], seqs[7], 2, False)] == ["m3", "m4"]
    assert [m.text for m in store.span("lobby", seqs[2], seqs[7], 2, True)] == ["m5", "m6"]
    assert store.span("lobby", seqs[2], seqs[3], 10, True) == []
    store.write([("p-1", t + 6, "@a:ann a:bob", "ann", "ann!~ann@x", "private", 0, 0, "bob")])
    assert [(m.text, m.target) for m in store.latest("@a:ann a:bob", 5)] == [("private", "bob")]
    assert every[0].target == ""
    dev = store.latest("dev", 5)
    assert [(m.text, m.plain) for m in dev] == [("in dev", 0)]
    assert store.rooms(t - 1, t + 100, 10) == [("lobby", ts[9]), ("dev", t + 5), ("@a:ann a:bob", t + 6)]
    assert store.rooms(t - 1, ts[4] + 0.05, 10) == []  # lobby's latest is later: not listed
    assert store.rooms(t - 1, t + 100, 1) == [("lobby", ts[9])]
    assert store.rooms(ts[9], t + 100, 10) == [("dev", t + 5), ("@a:ann a:bob", t + 6)]

    # Retention by count: trimmed to the limit once a room is a tenth over; ids go with them.
    trimmed = RedisStreamStore(redis_server.url, max_per_room=4)
    trimmed.write([("a-10", ts[10], "lobby", "ann", "ann!~native@x", "m10", 0, 1, "")])
    assert [m.text for m in trimmed.latest("lobby", 100)] == ["m7", "m8", "m9", "m10"]
    assert trimmed.find("lobby", "a-6") is None and trimmed.bounds("lobby", "a-6") is None
    assert redis_server.client().hlen("chatroom:history-ids:lobby") == 4

    # Retention by age: the first messages of a room, up to the first one of the last D days.
    aged = RedisStreamStore(redis_server.url, max_days=1.0)
    assert aged.prune_old(now=ts[8] + 86400 + 0.05) == 2  # m7 and m8
    assert [m.text for m in aged.latest("lobby", 100)] == ["m9", "m10"]
    assert aged.prune_old(now=t + 86400 * 10) == 4  # m9, m10, the one in dev, the private one
    assert aged.latest("lobby", 10) == [] and aged.rooms(0.0, 1e12, 10) == []
    assert redis_server.client().keys("chatroom:history*") == []
    store.close()


def test_history_over_redis_in_the_threadpool_when_not_patched(redis_server):
    """Outside a cluster node (no monkey-patching) the store's calls run in gevent's threadpool,
    as SQLite's do; the queue, batches and reads work the same."""
    import gevent

    from chatroom.store.history import History
    from chatroom.store.redis_history import RedisStreamStore

    store = RedisStreamStore(redis_server.url)
    history = History(store, window=0.001)
    assert not store.cooperative and not history.cooperative
    history.start()
    history.record(_Room, _Member, ["x", "y"], [(time.time(), "1-a"), (time.time(), "1-b")])
    deadline = time.monotonic() + WAIT
    while history.written < 2:
        assert time.monotonic() < deadline
        gevent.sleep(0.005)
    assert [m.text for m in history.latest("lobby", 10)] == ["x", "y"]
    assert [m.text for m in history.after("lobby", 10, "1-a")] == ["y"]
    history.stop()
    store.close()


# -- two nodes, one history ----------------------------------------------------------------------

def test_two_nodes_share_one_rooms_history(node, clients, redis_server):
    n1, n2 = node("n1", "--scrollback", "4"), node("n2", "--scrollback", "4")
    a, seen = connect(n1, clients)
    assert seen == []
    say(a, *(f"a{i}" for i in range(1, 6)))
    wait_until(lambda: stored(redis_server) == 5)
    b, seen = connect(n2, clients)  # on the other node: scrollback of what was said on n1
    assert [(f, t) for _, _, _, f, t in seen] == [(a.id, f"a{i}") for i in range(2, 6)]
    assert a.expect("JOIN ") == f"JOIN lobby {b.id}"
    say(b, "b1", "b2")
    assert [a.expect("MSG ") for _ in range(2)] == [f"MSG lobby {b.id} b1", f"MSG lobby {b.id} b2"]
    wait_until(lambda: stored(redis_server) == 7)
    say(a, "a6")
    wait_until(lambda: stored(redis_server) == 8)
    c, seen = connect(n1, clients)  # both nodes' messages, in the order said
    assert texts(seen) == ["a5", "b1", "b2", "a6"]
    assert b.expect("MSG ") == f"MSG lobby {a.id} a6"
    assert b.expect("JOIN ") == f"JOIN lobby {c.id}"
    # Paging back across nodes, on either node.
    c.send(f"HISTORY 3 {seen[0][1]}")
    page = read_history(c, "lobby")
    assert texts(page) == ["a2", "a3", "a4"]
    b.send(f"HISTORY 10 {page[0][1]}")
    assert texts(read_history(b, "lobby")) == ["a1"]
    b.send("HISTORY 100")
    full = read_history(b, "lobby")
    assert texts(full) == ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "a6"]
    ids = [i for _, i, _, _, _ in full]
    assert len(set(ids)) == 8
    times = [when for _, _, when, _, _ in full]
    assert times == sorted(times)
    b.send("HISTORY 5 1a0000000-1")
    assert b.expect("ERR ") == "ERR no-such-message no message 1a0000000-1 in lobby"


def test_rooms_are_apart_and_retention_by_count(node, clients, redis_server):
    n1, n2 = node("n1", "--history-max", "3"), node("n2", "--history-max", "3")
    a, _ = connect(n1, clients)
    a.send("JOIN dev")
    assert a.recv_line() == f"JOIN dev {a.id}"
    assert read_history(a, "dev") == []
    say(a, *(f"r{i}" for i in range(1, 6)))
    wait_until(lambda: stored(redis_server, "dev") == 3)
    b, seen = connect(n2, clients)
    assert seen == []  # nothing was said in the lobby
    b.send("JOIN dev")
    assert b.recv_line() == f"JOIN dev {b.id}"
    assert texts(read_history(b, "dev")) == ["r3", "r4", "r5"]
    b.send("HISTORY 10")
    assert texts(read_history(b, "dev")) == ["r3", "r4", "r5"]


def test_retention_by_age_on_a_node(node, clients, redis_server):
    from chatroom.store.redis_history import RedisStreamStore

    now = time.time()
    RedisStreamStore(redis_server.url).write([
        ("1-old", now - 3 * 86400, "lobby", "old", "old!~native@x", "three days ago", 0, 1, ""),
        ("1-new", now - 3600, "lobby", "new", "new!~native@x", "an hour ago", 0, 1, "")])
    n1 = node("n1", "--history-days", "2")  # swept at start, then every minute
    c, seen = connect(n1, clients)
    assert [(f, t) for _, _, _, f, t in seen] == [("new", "an hour ago")]
    assert stored(redis_server) == 1


def test_a_redis_restart_is_survived_and_queued_messages_are_stored_after(node, clients,
                                                                          redis_server):
    n1, n2 = node("n1"), node("n2")
    a, _ = connect(n1, clients)
    b, _ = connect(n2, clients)
    assert a.expect("JOIN ") == f"JOIN lobby {b.id}"
    say(a, "before")
    wait_until(lambda: stored(redis_server) == 1)
    redis_server.kill()
    a.send("SEND during one")
    a.send("SEND during two")
    lines_until(a, DOWN)  # the write failed: native clients of that node hear it
    n1.wait_for(r"^ERROR: history store failing")
    c = clients(n1)  # a JOIN while the store cannot be read: no history, but the client is in
    assert [line for line in lines_until(c, "HISTEND lobby")
            if not line.startswith("NOTICE ")] == ["HISTEND lobby"]
    say(c, "still chatting")
    redis_server.start()
    lines_until(a, UP)  # what waited in memory has been stored
    lines_until(c, UP)
    n1.wait_for(r"^WARNING: history store recovered; 0 messages were not kept meanwhile$")
    assert stored(redis_server) == 4
    d, seen = connect(n2, clients)
    assert texts(seen) == ["before", "during one", "during two", "still chatting"]
    assert [f for _, _, _, f, _ in seen] == [a.id, a.id, a.id, c.id]
    lines_until(b, "NOTICE cluster-up", prefix=True)  # n2 is back on Redis too
    b.send("SEND after")  # the other node writes again too
    wait_until(lambda: stored(redis_server) == 5)
    e, seen = connect(n1, clients)
    assert texts(seen)[-2:] == ["still chatting", "after"]


def test_irc_chathistory_reads_every_nodes_messages(node, clients, redis_server):
    from test_history_irc import CAPS, TIME, Irc

    n1 = node("n1", "--irc-port", "0", "--server-name", "irc.test")
    n2 = node("n2", "--irc-port", "0", "--server-name", "irc.test")
    for n in (n1, n2):
        n.irc_port = int(n.wait_for(r"IRC listening on \S+:(\d+)").group(1))
    a, _ = connect(n1, clients)
    say(a, "one", "two")
    bar = Irc(n2, "bar", CAPS)
    bar.join("#lobby")
    bar.send("PRIVMSG #lobby three")
    assert bar.until(" PRIVMSG #lobby three")  # its echo: said on n2
    assert a.expect("MSG ") == "MSG lobby bar three"
    wait_until(lambda: stored(redis_server) == 3)

    def ask(line):
        bar.send("CHATHISTORY " + line)
        ref = re.fullmatch(r":irc\.test BATCH \+(\S+) chathistory #lobby", bar.recv_line()).group(1)
        got = []
        while True:
            line = bar.recv_line()
            if line == f":irc.test BATCH -{ref}":
                return got
            m = re.fullmatch(rf"@batch={ref};time=({TIME});msgid=(\S+) :(\S+?)!\S+ PRIVMSG"
                             r" #lobby :?(.*)", line)
            assert m, line
            got.append((m.group(2), m.group(3), m.group(4)))

    every = ask("LATEST #lobby * 10")
    guest = a.id.replace(".", "-").replace(":", "-")  # a native id as an IRC nickname
    assert [(who, text) for _, who, text in every] == [(guest, "one"), (guest, "two"),
                                                       ("bar", "three")]
    ids = [i for i, _, _ in every]
    assert [t for *_, t in ask(f"BEFORE #lobby msgid={ids[2]} 10")] == ["one", "two"]
    assert [t for *_, t in ask(f"AFTER #lobby msgid={ids[0]} 1")] == ["two"]
    assert [t for *_, t in ask("AFTER #lobby timestamp=2000-01-01T00:00:00.000Z 2")] == [
        "one", "two"]
    bar.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z "
             "timestamp=2100-01-01T00:00:00.000Z 10")
    ref = re.fullmatch(r":irc\.test BATCH \+(\S+) draft/chathistory-targets",
                       bar.recv_line()).group(1)
    assert re.fullmatch(rf"@batch={ref} :irc\.test CHATHISTORY TARGETS #lobby {TIME}",
                        bar.recv_line())
    assert bar.recv_line() == f":irc.test BATCH -{ref}"
    bar.close()

"""Several bin/chat-server processes on one real redis-server behave as one chat (docs/cluster.md).

Each test starts its own ``redis-server`` on an ephemeral port (so it can kill and restart it) and
two or three servers with ``--redis``; clients on different servers talk as if on one. Skipped
when redis-server is not installed.
"""

import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import BIN, ROOT, WAIT, LineClient, free_port, wait_until

REDIS_SERVER = shutil.which("redis-server")

#: Seconds a killed node's members and nicknames outlive it in these tests (the default is 15).
TTL = "2"


class RedisServer:
    """A throwaway ``redis-server`` on a fixed ephemeral port, with no persistence."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_until(self.answers)

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        self.proc.kill()
        self.proc.wait(WAIT)


@pytest.fixture
def redis_server():
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    server = RedisServer()
    yield server
    server.kill()


def start_node(start_server, redis_url, name, *args):
    """A chat server on ``redis_url`` as node ``name``, once it says it is connected."""
    server = start_server("--redis", redis_url, "--node", name, "--flood-rate", "0",
                          "--cluster-ttl", TTL, *args)
    server.wait_for(r"Cluster: connected to Redis as node " + name)
    return server


@pytest.fixture
def node(start_server, redis_server):
    """Factory: ``node("n1", *args)`` is a chat server on the test's Redis, connected to it."""
    return lambda name, *args: start_node(start_server, redis_server.url, name, *args)


def named(clients, server, nick):
    c = clients(server)
    c.send(f"NICK {nick}")
    c.expect(f"NICK {c.id} {nick}")
    return c


def who(client):
    client.send("WHO")
    return client.expect("WHO ").split()[2:]


def test_clients_on_different_nodes_chat_in_one_room(node, clients):
    n1, n2 = node("n1"), node("n2")
    a, b, c = clients(n1), clients(n2), clients(n2)
    a.send("SEND hello from n1")
    assert b.expect("MSG ") == f"MSG lobby {a.id} hello from n1"
    assert c.expect("MSG ") == f"MSG lobby {a.id} hello from n1"
    b.send("SEND hello from n2")
    assert a.expect("MSG ") == f"MSG lobby {b.id} hello from n2"
    assert c.expect("MSG ") == f"MSG lobby {b.id} hello from n2"  # same node, as ever
    a.send("JOIN dev")
    a.expect(f"JOIN dev {a.id}")
    b.send("JOIN dev")
    a.expect(f"JOIN dev {b.id}")  # b's join crossed over
    b.send("SEND in dev")
    assert a.expect("MSG ") == f"MSG dev {b.id} in dev"
    assert not [line for line in c.sync() if line.startswith("MSG")]  # c stayed in lobby


def test_web_clients_on_different_nodes_get_frames(node, clients):
    from wsclient import WsClient

    n1, n2 = node("n1", "--web-port", "0"), node("n2")
    port = int(n1.wait_for(r"Web listening on 127\.0\.0\.1:(\d+)").group(1))
    w = WsClient(port)
    try:
        b = clients(n2)
        b.send("SEND hello from n2")
        assert w.expect("MSG ") == f"MSG lobby {b.id} hello from n2"
        b.send(f"TELL {w.id} just you")
        assert w.expect("TELL ") == f"TELL {b.id} just you"
        w.send("SEND and back")
        assert b.expect("MSG ") == f"MSG lobby {w.id} and back"
        w.send("WHO")
        assert sorted(w.expect("WHO ").split()[2:]) == sorted([w.id, b.id])
    finally:
        w.close()


def test_tell_crosses_nodes(node, clients):
    n1, n2 = node("n1"), node("n2")
    ann, b = named(clients, n1, "ann"), clients(n2)
    b.send("TELL ANN see you at 5")
    assert ann.expect("TELL ") == f"TELL {b.id} see you at 5"
    ann.send(f"TELL {b.id} by id")
    assert b.expect("TELL ") == "TELL ann by id"
    b.send("TELL nobody hello?")
    assert b.expect("ERR ").startswith("ERR no-such-nick")


def test_nickname_clash_across_nodes_is_refused(node, clients):
    n1, n2 = node("n1"), node("n2")
    ann, b = named(clients, n1, "ann"), clients(n2)
    b.send("NICK ANN")
    assert b.expect("ERR ").startswith("ERR nick-taken")
    ann.send("NICK zed")  # gives "ann" up before confirming
    ann.expect("NICK ann zed")
    b.send("NICK ANN")
    b.expect(f"NICK {b.id} ANN")
    ann.send("NICK ann")
    assert ann.expect("ERR ").startswith("ERR nick-taken")


def test_who_and_rooms_list_members_of_all_nodes(node, clients):
    n1, n2 = node("n1"), node("n2")
    ann = named(clients, n1, "ann")
    c = clients(n1)
    bob = clients(n2)
    bob.send("NICK bob")
    ann.expect(f"NICK {bob.id} bob")  # written to Redis before it was published
    everyone = sorted(["ann", "bob", c.id])
    assert sorted(who(ann)) == everyone
    # bob's node reads n1's members from Redis: n1 wrote them as they came, but nothing tells
    # the test when that write landed, so wait for it.
    wait_until(lambda: sorted(who(bob)) == everyone)
    bob.send("JOIN dev")
    ann.expect("PART lobby bob join")
    assert who(ann) == ["ann", c.id]
    ann.send("ROOMS")
    assert ann.expect("ROOMS ") == "ROOMS lobby:2 dev:1"


def test_a_killed_nodes_members_and_nicknames_expire(node, clients):
    n1, n2 = node("n1"), node("n2")
    ann, bob = named(clients, n1, "ann"), named(clients, n2, "bob")
    ann.expect(f"NICK {bob.id} bob")
    assert "bob" in who(ann)
    n2.signal(signal.SIGKILL)
    wait_until(lambda: "bob" not in who(ann), timeout=WAIT)
    c = clients(n1)
    c.send("NICK bob")
    assert c.expect(f"NICK {c.id} ") == f"NICK {c.id} bob"  # the dead node's nickname is free
    ann.send("ROOMS")
    assert ann.expect("ROOMS ") == "ROOMS lobby:2"


def parts(client, count):
    """The next ``count`` PART lines ``client`` reads (JOIN and NICK lines may come between)."""
    got = []
    while len(got) < count:
        got.append(client.expect("PART ", skip=("JOIN ", "NICK ")))
    return got


def test_a_killed_nodes_members_are_seen_leaving_once(node, clients):
    n1, n2, n3 = node("n1"), node("n2"), node("n3")
    a, d = clients(n1), clients(n2)
    bob = named(clients, n3, "bob")
    c = clients(n3)
    a.expect(f"NICK {bob.id} bob")
    d.expect(f"NICK {bob.id} bob")
    wait_until(lambda: sorted(who(a)) == sorted([a.id, d.id, "bob", c.id]))
    n3.signal(signal.SIGKILL)
    # One surviving node reaps n3 after the TTL and tells every node; each PART comes once.
    expected = sorted(["PART lobby bob disconnected", f"PART lobby {c.id} disconnected"])
    for client in (a, d):
        assert sorted(parts(client, 2)) == expected
        assert sorted(who(client)) == sorted([a.id, d.id])
    assert n1.count(r"Cluster: node n3 is gone") + n2.count(r"Cluster: node n3 is gone") == 1
    a.send("TELL bob still there?")
    assert a.expect("ERR ").startswith("ERR no-such-nick")
    assert not [line for line in d.sync() if line.startswith("PART")]
    a.sync()
    a.assert_quiet(wait=1.0)  # a second reap would come within a heartbeat (a third of the TTL)
    assert n1.count(r"Cluster: node n3 is gone") + n2.count(r"Cluster: node n3 is gone") == 1


def test_a_node_restarted_under_its_name_says_its_old_members_left(node, clients):
    ttl = ("--cluster-ttl", "60")  # nobody reaps it within the test: the restarted node tells
    n1, n2 = node("n1", *ttl), node("n2", *ttl)
    ann, bob = named(clients, n1, "ann"), named(clients, n2, "bob")
    ann.expect(f"NICK {bob.id} bob")
    n2.signal(signal.SIGKILL)
    ann.send("TELL bob are you there?")  # n2 counts as live for the TTL: accepted, and lost
    assert not [line for line in ann.sync() if line.startswith("ERR")]
    again = node("n2", *ttl)  # as the supervisor of --workers does
    assert parts(ann, 1) == ["PART lobby bob disconnected"]
    again.wait_for(r"Cluster: node n2 is gone; 1 of its members left")
    ann.send("TELL bob are you there?")
    assert ann.expect("ERR ").startswith("ERR no-such-nick")
    c = clients(again)
    c.send("NICK bob")
    c.expect(f"NICK {c.id} bob")  # the old process's nickname is free
    assert sorted(who(c)) == sorted(["ann", "bob"])  # bob is c now; the old one is gone
    assert not [line for line in ann.sync() if line.startswith("PART")]  # said once


def test_a_node_taken_for_dead_comes_back_and_its_members_join_again(node, clients):
    n1, n2 = node("n1"), node("n2")
    ann, bob = named(clients, n1, "ann"), named(clients, n2, "bob")
    c = clients(n2)
    ann.expect(f"NICK {bob.id} bob")
    wait_until(lambda: sorted(who(ann)) == sorted(["ann", "bob", c.id]))  # c is in Redis too
    n2.signal(signal.SIGSTOP)  # frozen past the TTL: n1 takes it for dead
    try:
        assert sorted(parts(ann, 2)) == sorted(["PART lobby bob disconnected",
                                                f"PART lobby {c.id} disconnected"])
        assert who(ann) == ["ann"]
    finally:
        n2.signal(signal.SIGCONT)
    # Back, n2 finds it was reaped, rewrites its state and announces its members again.
    joins = [ann.expect("JOIN ", skip=()) for _ in range(2)]
    assert sorted(joins) == sorted(["JOIN lobby bob", f"JOIN lobby {c.id}"])
    assert sorted(who(ann)) == sorted(["ann", "bob", c.id])
    n2.wait_for(r"this node was taken for dead")
    bob.send("SEND still here")
    assert ann.expect("MSG ") == "MSG lobby bob still here"
    assert not [line for line in c.sync() if line.startswith(("PART", "JOIN"))]  # it never left
    ann.send("TELL bob welcome back")
    assert bob.expect("TELL ") == "TELL ann welcome back"


def test_a_stopped_node_says_goodbye_and_leaves_at_once(node, clients):
    n1, n2 = node("n1"), node("n2")
    ann, bob = named(clients, n1, "ann"), named(clients, n2, "bob")
    ann.expect(f"NICK {bob.id} bob")
    assert n2.stop() == 0
    assert ann.expect("PART ") == "PART lobby bob server-shutdown"
    assert who(ann) == ["ann"]  # no TTL to wait for: it left Redis before it exited
    c = clients(n1)
    c.send("NICK bob")
    c.expect(f"NICK {c.id} bob")


def test_a_redis_restart_is_survived(node, clients, redis_server):
    n1, n2 = node("n1"), node("n2")
    a, c, b = clients(n1), clients(n1), named(clients, n2, "bob")
    a.expect(f"NICK {b.id} bob")
    redis_server.kill()
    assert a.expect("NOTICE ").startswith("NOTICE cluster-down")
    assert b.expect("NOTICE ").startswith("NOTICE cluster-down")
    c.expect("NOTICE cluster-down")
    a.send("SEND local only")
    assert c.expect("MSG ") == f"MSG lobby {a.id} local only"  # local chat goes on
    a.send("NICK ann")  # taken here alone; claimed in Redis when it is back
    a.expect(f"NICK {a.id} ann")
    redis_server.start()
    assert a.expect("NOTICE ", timeout=WAIT).startswith("NOTICE cluster-up")
    assert b.expect("NOTICE ", timeout=WAIT).startswith("NOTICE cluster-up")
    c.expect("NOTICE cluster-up")
    a.send("SEND across again")
    assert b.expect("MSG ") == "MSG lobby ann across again"
    assert sorted(who(b)) == sorted(["ann", "bob", c.id])  # state rewritten into the new Redis
    b.send("NICK ann")
    assert b.expect("ERR ").startswith("ERR nick-taken")


def test_one_senders_messages_arrive_in_order_on_another_node(node, clients):
    n1, n2 = node("n1"), node("n2")
    a, b = clients(n1), clients(n2)
    count = 500
    a.send_raw(b"".join(b"SEND line %d\n" % i for i in range(count)))
    got = [b.expect("MSG ").split(" ", 3)[3] for _ in range(count)]
    assert got == [f"line {i}" for i in range(count)]


def test_workers_share_one_port_as_one_chat(start_server, redis_server, clients):
    server = start_server("--workers", "2", "--redis", redis_server.url, "--node", "w",
                          "--flood-rate", "0", "--cluster-ttl", TTL)
    port = server.port
    wait_until(lambda: server.count(rf"Listening on \S+:{port}\b") == 2)
    wait_until(lambda: server.count(r"Cluster: connected to Redis as node w-\d") == 2)
    people = [named(clients, server, f"p{i}") for i in range(8)]
    people[0].send("SEND to all")
    for p in people[1:]:
        assert p.expect("MSG ") == "MSG lobby p0 to all"
    wait_until(lambda: sorted(who(people[-1])) == sorted(f"p{i}" for i in range(8)))
    assert server.stop() == 0
    for p in people:
        assert "BYE server-shutdown" in p.expect_closed()


def test_workers_reload_on_the_supervisors_sighup(start_server, redis_server, tmp_path):
    motd = tmp_path / "motd.txt"
    motd.write_text("first\n")
    server = start_server("--workers", "2", "--redis", redis_server.url, "--node", "hup",
                          "--motd", motd, "--cluster-ttl", TTL)
    wait_until(lambda: server.count(rf"Listening on \S+:{server.port}\b") == 2)
    motd.write_text("second\nthird\n")
    server.signal(signal.SIGHUP)  # what systemctl reload sends: the supervisor passes it on
    wait_until(lambda: server.count(r"Reloaded: MOTD \S+ \(2 lines\)") == 2)
    assert server.proc.poll() is None  # SIGHUP never stops it
    assert server.stop() == 0


def test_workers_need_redis():
    proc = subprocess.run([sys.executable, str(BIN / "chat-server"), "--port", "0", "--workers", "2"],
                          capture_output=True, text=True, timeout=WAIT, cwd=ROOT)
    assert proc.returncode == 2
    assert "--workers above 1 needs --redis" in proc.stderr


def test_a_node_started_without_redis_works_alone_then_joins(start_server, redis_server, clients,
                                                              node):
    redis_server.kill()
    lonely = start_server("--redis", redis_server.url, "--node", "early", "--flood-rate", "0",
                          "--cluster-ttl", TTL)
    a, b = clients(lonely), clients(lonely)
    a.send("SEND anyone?")
    assert b.expect("MSG ") == f"MSG lobby {a.id} anyone?"
    redis_server.start()
    lonely.wait_for(r"Cluster: connected to Redis as node early")
    other = node("n2")
    c = clients(other)
    assert sorted(who(c)) == sorted([a.id, b.id, c.id])  # written when it connected
    c.send("SEND found you")
    assert a.expect("MSG ") == f"MSG lobby {c.id} found you"


# -- IRC clients in the cluster -----------------------------------------------------------------


def tags_of(line):
    """The tags of an IRC line, unescaped values left as sent: ``{"msgid": "..."}``."""
    if not line.startswith("@"):
        return {}
    return dict(item.partition("=")[::2] for item in line[1:].split(" ", 1)[0].split(";"))


def parse(line):
    """``(source, command, params)`` of an IRC line, however its last parameter is written."""
    if line.startswith("@"):
        line = line.split(" ", 1)[1]
    source = None
    if line.startswith(":"):
        source, _, line = line[1:].partition(" ")
    head, colon, trailing = line.partition(" :")
    words = head.split()
    return source, words[0], words[1:] + ([trailing] if colon else [])


def says(source, command, *params):
    return source, command, list(params)


ANN = "ann!~native@127.0.0.1"
XENA = "xena!~xena@127.0.0.1"


class IrcUser:
    """A raw IRC client: a socket that registers with NICK and USER and reads lines."""

    def __init__(self, port, nick, caps=()):
        self.conn = LineClient(port, hello=False)
        self.nick = nick
        self.tags = {}  # of the last message expect() returned
        if caps:
            self.send(f"CAP LS 302\r\nCAP REQ :{' '.join(caps)}")
            self.expect("CAP", lambda msg: msg[2][1] == "ACK")
            self.send("CAP END")
        self.send(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}")
        self.expect("001")

    def send(self, line):
        self.conn.send_raw(line.encode("utf-8") + b"\r\n")

    def line(self, timeout=None):
        line = self.conn.recv_line(timeout).rstrip("\r")
        if line.startswith("PING "):
            self.send("PONG " + line[5:])
        return line

    def expect(self, command, where=None, timeout=None):
        """Read until a message with ``command`` (and for which ``where(msg)`` holds, if given):
        numerics and the like may come first. Returns it parsed: ``(source, command, params)``;
        its tags are in ``self.tags``."""
        deadline = time.monotonic() + (timeout or WAIT)
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            msg = parse(line)
            if msg[1] == command and (where is None or where(msg)):
                self.tags = tags_of(line)
                return msg

    def join(self, *channels):
        self.send("JOIN " + ",".join(channels))
        for channel in channels:
            while self.expect("366")[2][1] != channel:
                pass

    def sync(self, token="sync"):
        """Every message (parsed) queued before the answer to a PING."""
        self.send(f"PING {token}")
        got = []
        while True:
            msg = parse(self.line())
            if msg[1] == "PONG" and msg[2][-1] == token:
                return got
            got.append(msg)

    def close(self):
        self.conn.close()


@pytest.fixture
def irc_node(node):
    """Factory: ``irc_node("n1")`` is a cluster node with an IRC listener too (its port in .irc)."""

    def start(name, *args):
        server = node(name, "--irc-port", "0", *args)
        server.irc = int(server.wait_for(r"IRC listening on \S+:(\d+)").group(1))
        return server

    return start


@pytest.fixture
def irc_users():
    made = []

    def connect(server, nick, *caps):
        user = IrcUser(server.irc, nick, caps)
        made.append(user)
        return user

    yield connect
    for user in made:
        user.close()


def test_native_and_irc_clients_on_different_nodes_talk_both_ways(irc_node, clients, irc_users):
    n1, n2 = irc_node("n1"), irc_node("n2")
    ann = named(clients, n1, "ann")
    b = clients(n1)  # unnamed: IRC knows it by the guest nickname of its id
    b.send("JOIN elsewhere")
    xena = irc_users(n2, "xena")
    xena.join("#lobby")
    ann.expect("JOIN lobby xena")
    ann.send("SEND hello irc")
    assert xena.expect("PRIVMSG") == says(ANN, "PRIVMSG", "#lobby", "hello irc")
    xena.send("PRIVMSG #lobby :hello native")
    assert ann.expect("MSG ") == "MSG lobby xena hello native"
    xena.send("NOTICE #lobby :a notice")
    assert ann.expect("MSG ") == "MSG lobby xena a notice"
    ann.send("NICK anne")
    ann.expect("NICK ann anne")
    assert xena.expect("NICK") == says(ANN, "NICK", "anne")
    xena.send("NICK xavier")
    assert ann.expect("NICK ", skip=()) == "NICK xena xavier"
    ann.send("TELL XAVIER psst")
    assert xena.expect("PRIVMSG") == says("anne!~native@127.0.0.1", "PRIVMSG", "xavier", "psst")
    xena.send("PRIVMSG anne :psst back")
    assert ann.expect("TELL ") == "TELL xavier psst back"
    xena.send("PRIVMSG nobody :hello?")
    assert xena.expect("401")[2][:2] == ["xavier", "nobody"]
    xena.send("PART #lobby :gone fishing")
    assert ann.expect("PART ", skip=()) == "PART lobby xavier gone fishing"
    xena.send(f"PRIVMSG {b.id.replace('.', '-').replace(':', '-')} :to a guest")
    assert b.expect("TELL ") == "TELL xavier to a guest"


def test_an_irc_client_in_two_rooms_is_seen_in_both_on_another_node(irc_node, clients, irc_users):
    n1, n2 = irc_node("n1"), irc_node("n2")
    xena = irc_users(n1, "xena")
    yuri = irc_users(n2, "yuri")
    dev, ops = clients(n2), clients(n2)
    dev.send("JOIN dev")
    dev.expect(f"JOIN dev {dev.id}")
    ops.send("JOIN ops")
    ops.expect(f"JOIN ops {ops.id}")
    yuri.join("#dev", "#ops")
    xena.join("#dev", "#ops")
    dev.expect("JOIN dev xena", skip=("JOIN dev yuri",))
    ops.expect("JOIN ops xena", skip=("JOIN ops yuri",))
    assert sorted([yuri.expect("JOIN"), yuri.expect("JOIN")]) == [
        says(XENA, "JOIN", "#dev"), says(XENA, "JOIN", "#ops")]
    xena.send("PRIVMSG #dev,#ops :to both")
    assert dev.expect("MSG ") == "MSG dev xena to both"
    assert ops.expect("MSG ") == "MSG ops xena to both"
    assert yuri.expect("PRIVMSG") == says(XENA, "PRIVMSG", "#dev", "to both")
    assert yuri.expect("PRIVMSG") == says(XENA, "PRIVMSG", "#ops", "to both")
    xena.send("QUIT :bye now")
    assert dev.expect("PART ", skip=()) == "PART dev xena quit: bye now"
    assert ops.expect("PART ", skip=()) == "PART ops xena quit: bye now"
    assert yuri.expect("QUIT") == says(XENA, "QUIT", "Quit: bye now")
    assert not [msg for msg in yuri.sync() if msg[1] == "QUIT"]  # once for both rooms


def test_names_who_and_list_count_every_nodes_members(irc_node, clients, irc_users):
    n1, n2 = irc_node("n1"), irc_node("n2")
    xena = irc_users(n1, "xena", "userhost-in-names")
    yuri = irc_users(n2, "yuri")
    guest = clients(n2)  # a native member without a nickname: IRC knows it as a guest nick
    guest.send("JOIN dev")
    guest.expect(f"JOIN dev {guest.id}")
    gnick = guest.id.replace(".", "-").replace(":", "-")
    yuri.join("#dev")
    watcher = clients(n1)  # native WHO spans the cluster: n2's members are in Redis once it says so
    watcher.send("JOIN dev")
    watcher.expect(f"JOIN dev {watcher.id}")
    wait_until(lambda: len(who(watcher)) == 3)
    watcher.send("JOIN elsewhere")
    watcher.expect(f"JOIN elsewhere {watcher.id}")
    xena.join("#dev")  # its NAMES: itself, then the members on n2 in the order they came
    yuri.expect("JOIN")
    xena.send("NAMES #dev")
    names = xena.expect("353")[2][3].split()
    assert names == ["@xena!~xena@127.0.0.1", f"{gnick}!~native@127.0.0.1", "yuri!~yuri@127.0.0.1"]
    yuri.send("NAMES #dev")  # without userhost-in-names: nicknames
    assert yuri.expect("353")[2][3].split() == [f"@{gnick}", "yuri", "xena"]
    xena.send("WHO #dev")
    listed = [msg[2][5] for msg in xena.sync() if msg[1] == "352"]
    assert listed == ["xena", gnick, "yuri"]
    xena.send("LIST #dev")
    assert xena.expect("322")[2][1:3] == ["#dev", "3"]
    # Questions about one person find them on any server
    xena.send("WHOIS yuri")
    assert xena.expect("311")[2] == ["xena", "yuri", "~yuri", "127.0.0.1", "*", "yuri"]
    assert xena.expect("318")[2][1] == "yuri"
    xena.send("ISON yuri nobody YURI")
    assert xena.expect("303")[2] == ["xena", "yuri yuri"]
    xena.send("USERHOST yuri")
    assert xena.expect("302")[2] == ["xena", "yuri=+~yuri@127.0.0.1"]
    xena.send("WHO yuri")
    assert xena.expect("352")[2][1:7] == ["*", "~yuri", "127.0.0.1", "chatroom.local", "yuri", "H"]
    xena.send("WHOIS nobody")
    assert xena.expect("401")[2][1] == "nobody"


def test_lusers_counts_every_nodes_users_servers_and_channels(irc_node, clients, irc_users):
    n1, n2 = irc_node("n1"), irc_node("n2")
    xena = irc_users(n1, "xena")
    yuri = irc_users(n2, "yuri")
    guest = clients(n2)  # native, in the lobby: a user and a channel of the cluster's too
    yuri.join("#far")

    def lusers():
        xena.send("LUSERS")
        return {msg[1]: msg[2][1:] for msg in xena.sync() if msg[1] in ("251", "254", "255", "265", "266")}

    def all_in():
        got = lusers()
        return got["266"][0] == "3" and got["254"][0] == "2"

    # Until n2 has written its members and rooms to Redis, n1 counts fewer: wait for them.
    wait_until(all_in)
    got = lusers()
    assert got["251"] == ["There are 3 users and 0 invisible on 2 servers"]
    assert got["254"][0] == "2"  # lobby (the guest's) and #far (yuri's); xena is in none
    assert got["255"] == ["I have 1 clients and 1 servers"]
    assert got["265"] == ["1", "1", "Current local users 1, max 1"]
    assert got["266"] == ["3", "3", "Current global users 3, max 3"]
    guest.close()
    wait_until(lambda: lusers()["266"][:2] == ["2", "3"])  # fewer now; the most stays


def test_a_killed_nodes_irc_member_is_reaped_from_every_room(irc_node, clients, irc_users):
    n1, n2 = irc_node("n1"), irc_node("n2")
    lobby, dev = clients(n1), clients(n1)
    dev.send("JOIN dev")
    dev.expect(f"JOIN dev {dev.id}")
    yuri = irc_users(n1, "yuri")
    yuri.join("#lobby", "#dev")
    xena = irc_users(n2, "xena")
    xena.join("#lobby", "#dev")
    lobby.expect("JOIN lobby xena")
    dev.expect("JOIN dev xena")
    while yuri.expect("JOIN") != says(XENA, "JOIN", "#dev"):
        pass
    n2.signal(signal.SIGKILL)
    assert lobby.expect("PART ", skip=()) == "PART lobby xena disconnected"
    assert dev.expect("PART ", skip=()) == "PART dev xena disconnected"
    assert yuri.expect("QUIT") == says(XENA, "QUIT", "disconnected")
    assert not [msg for msg in yuri.sync() if msg[1] == "QUIT"]
    again = irc_users(n1, "xena")  # the dead node's nickname is free
    again.join("#dev")


def test_workers_share_the_irc_port_too(start_server, redis_server, clients, irc_users):
    server = start_server("--workers", "2", "--irc-port", "0", "--redis", redis_server.url,
                          "--node", "w", "--flood-rate", "0", "--cluster-ttl", TTL)
    wait_until(lambda: server.count(r"IRC listening on ") == 2)
    ports = {int(m) for m in re.findall(r"IRC listening on \S+:(\d+)", "\n".join(server.lines))}
    assert len(ports) == 1
    server.irc = ports.pop()
    wait_until(lambda: server.count(r"Cluster: connected to Redis as node w-\d") == 2)
    people = [irc_users(server, f"p{i}") for i in range(6)]
    for p in people:
        p.join("#lobby")
    native_one = named(clients, server, "nat")
    people[0].send("PRIVMSG #lobby :to all")
    for p in people[1:]:
        assert p.expect("PRIVMSG") == says("p0!~p0@127.0.0.1", "PRIVMSG", "#lobby", "to all")
    assert native_one.expect("MSG ") == "MSG lobby p0 to all"
    assert server.stop() == 0


def test_a_message_has_one_msgid_on_every_node(irc_node, clients, irc_users):
    n1, n2 = irc_node("n1"), irc_node("n2")
    caps = ("message-tags", "server-time", "echo-message")
    xena, near = irc_users(n1, "xena", *caps), irc_users(n1, "near", *caps)
    far = irc_users(n2, "far", *caps)
    plain = irc_users(n2, "plain")  # no tags asked for: none shown
    for user in (xena, near, far, plain):
        user.join("#dev")
    native = clients(n2)
    native.send("JOIN dev")
    guest = native.id.replace(".", "-").replace(":", "-")
    xena.expect("JOIN", lambda msg: msg[0].startswith(guest + "!"))
    xena.send("@+draft/react=wave PRIVMSG #dev :stamped")
    got = {}
    for user in (xena, near, far):  # xena: its echo
        assert user.expect("PRIVMSG") == says(XENA, "PRIVMSG", "#dev", "stamped")
        got[user.nick] = dict(user.tags)
    assert got["xena"]["msgid"] == got["near"]["msgid"] == got["far"]["msgid"]
    assert got["xena"]["time"] == got["far"]["time"]
    assert got["far"]["+draft/react"] == "wave"
    assert plain.expect("PRIVMSG") == says(XENA, "PRIVMSG", "#dev", "stamped") and not plain.tags
    assert native.expect("MSG ") == "MSG dev xena stamped"
    far.send("PRIVMSG xena :direct")
    assert xena.expect("PRIVMSG") == says("far!~far@127.0.0.1", "PRIVMSG", "xena", "direct")
    mine = xena.tags["msgid"]
    assert far.expect("PRIVMSG") == says("far!~far@127.0.0.1", "PRIVMSG", "xena", "direct")
    assert far.tags["msgid"] == mine  # the echo of a message to another node: the same id


def test_irc_clients_get_cluster_notices_as_irc(irc_node, irc_users, redis_server):
    n1 = irc_node("n1")
    xena = irc_users(n1, "xena")
    redis_server.kill()
    source, command, params = xena.expect("NOTICE", lambda msg: "cluster-down" in msg[2][-1])
    assert params[0] == "xena" and params[1].startswith("*** cluster-down: ")
    redis_server.start()
    _, _, params = xena.expect("NOTICE", lambda msg: "cluster-up" in msg[2][-1], timeout=WAIT)
    assert params == ["xena", "*** cluster-up: connection between servers restored"]


# -- metrics of a cluster node ---------------------------------------------------------------------

def _metric(port, name):
    from prometheus_client.parser import text_string_to_metric_families
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_cluster_link_state_is_in_the_metrics(node, redis_server):
    n1 = node("m1", "--metrics-port", "0")
    port = int(n1.wait_for(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    assert _metric(port, "chatroom_cluster_up") == 1
    redis_server.kill()
    wait_until(lambda: _metric(port, "chatroom_cluster_up") == 0, timeout=WAIT * 2)
    redis_server.start()
    wait_until(lambda: _metric(port, "chatroom_cluster_up") == 1, timeout=WAIT * 2)


def _free_pair():
    """A port P with P+1 and P+2 free, below the ephemeral range (where nothing else picks them)."""
    import random

    for _ in range(100):
        base = random.randrange(20000, 30000)
        try:
            for port in (base + 1, base + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no two free ports in a row")


def test_each_worker_serves_metrics_on_its_own_port(start_server, redis_server, clients):
    base = _free_pair()
    server = start_server("--workers", "2", "--redis", redis_server.url, "--node", "mw",
                          "--cluster-ttl", TTL, "--metrics-port", base)
    wait_until(lambda: server.count(r"Metrics on http://127\.0\.0\.1:\d+/metrics") == 2)
    ports = sorted(int(m) for m in __import__("re").findall(
        r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", "\n".join(server.lines)))
    assert ports == [base + 1, base + 2]
    people = [clients(server) for _ in range(6)]
    wait_until(lambda: sum(_metric(p, "chatroom_connections") for p in ports) == len(people))
    assert all(_metric(p, "chatroom_cluster_up") == 1 for p in ports)

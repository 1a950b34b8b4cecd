"""bin/chat-load end to end: small runs against a real bin/chat-server, checked through --json.

No timing assertions: these prove the tool connects, counts, checks and reports correctly; how
fast things go is for ``make bench``.
"""

import json
import subprocess
import sys

import pytest
from conftest import BIN, ROOT, free_port, wait_until

from chatroom.load import servers

#: Seconds one load run may take before the test fails (runs here take about a second).
RUN_TIMEOUT = 60


def chat_load(*args):
    """Run ``bin/chat-load ARGS``; returns the completed process (stdout and stderr as text)."""
    cmd = [sys.executable, str(BIN / "chat-load"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def load_json(*args):
    done = chat_load(*args, "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def assert_clean(r, receivers, senders, per_sender):
    """Everything sent arrived once, in order, at every receiver and at every other sender."""
    total = senders * per_sender
    assert r["sent"] == total
    assert r["expected"] == receivers * total + senders * total - total
    assert r["delivered"] == r["expected"]
    assert (r["lost"], r["duplicates"], r["out_of_order"], r["disconnected"]) == (0, 0, 0, 0)
    lat = r["latency_ms"]
    assert lat["samples"] > 0
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["delivered_per_sec"] > 0 and r["elapsed_seconds"] > 0


def test_every_line_arrives_once_in_order_with_a_spawned_server():
    r = load_json("--spawn-server", "--receivers", 45, "--senders", 5, "--messages", 400,
                  "--check", "all")
    assert_clean(r, 45, 5, 400)
    assert r["clients"]["checked"] == 50
    assert r["latency_ms"]["samples"] == r["delivered"]
    rss = r["server_rss_kib"]
    assert rss["baseline"] > 0 and rss["peak"] >= rss["connected"] > 0
    assert r["server_dropped"] == 0


def test_counting_receivers_against_a_running_server(start_server):
    server = start_server("--flood-rate", "0")
    r = load_json("--port", server.port, "--server-pid", server.pid, "--receivers", 45,
                  "--senders", 5, "--messages", 400, "--check", 3)
    assert_clean(r, 45, 5, 400)
    assert r["clients"]["checked"] == 3  # spread over receivers and senders alike
    assert r["server_rss_kib"]["connected"] > 0
    wait_until(lambda: server.count(r"Connection has been established") == 50)


def test_two_processes_split_the_clients():
    r = load_json("--spawn-server", "--receivers", 45, "--senders", 5, "--messages", 400,
                  "--procs", 2, "--check", "all")
    assert r["procs"] == 2
    assert_clean(r, 45, 5, 400)
    assert r["clients"]["checked"] == 50


def test_idle_clients_stay_connected_and_hear_nothing(start_server):
    server = start_server("--flood-rate", "0")
    r = load_json("--port", server.port, "--receivers", 10, "--senders", 2, "--messages", 100,
                  "--idle", 20, "--source-addrs", 3)
    assert_clean(r, 10, 2, 100)
    assert r["clients"]["idle"] == 20 and r["clients"]["total"] == 32
    wait_until(lambda: server.count(r"Connection has been established with 127\.0\.0\.3:") > 0)
    assert r["idle_alive"] == 20 and r["idle_heard"] == 0
    assert server.count(r"Dropped ") == 0


def test_stalled_receiver_is_dropped_and_the_others_get_everything():
    r = load_json("--spawn-server", "--receivers", 10, "--senders", 1, "--messages", 20000,
                  "--size", 1000, "--stalled", 1)
    assert_clean(r, 10, 1, 20000)
    assert r["stalled_dropped"] == 1
    assert r["server_dropped"] == 1


def test_summary_at_a_steady_rate():
    done = chat_load("--spawn-server", "--receivers", 5, "--senders", 2, "--messages", 20,
                     "--rate", 200)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "delivered   240 of 240" in out
    assert "lost 0, duplicates 0, out of order 0, disconnected 0" in out
    assert "p99" in out and "server RSS" in out


def test_setup_failure_is_reported():
    done = chat_load("--port", free_port(), "--receivers", 2, "--senders", 1)
    assert done.returncode == 2
    assert "failed to connect" in done.stderr


# -- --transport ws: the native protocol over the web listener -------------------------------------


def test_websocket_every_line_arrives_once_in_order_with_a_spawned_server():
    r = load_json("--spawn-server", "--transport", "ws", "--receivers", 20, "--senders", 3,
                  "--messages", 300, "--check", "all")
    assert r["transport"] == "ws"
    assert_clean(r, 20, 3, 300)
    assert r["clients"]["checked"] == 23
    assert r["latency_ms"]["samples"] == r["delivered"]
    assert r["server_dropped"] == 0


def test_websocket_two_processes_counting_receivers_and_idle_clients():
    r = load_json("--spawn-server", "--transport", "ws", "--receivers", 30, "--senders", 4,
                  "--messages", 500, "--procs", 2, "--check", 2, "--idle", 6)
    assert r["procs"] == 2 and r["transport"] == "ws"
    assert_clean(r, 30, 4, 500)
    assert r["clients"]["checked"] == 4  # 2 in each process; the rest count frames' lines
    assert r["idle_alive"] == 6 and r["idle_heard"] == 0


def test_websocket_against_a_running_server_and_its_origin_check(start_server):
    server = start_server("--flood-rate", "0", "--max-per-ip", "0", "--web-port", "0")
    web_port = int(server.wait_for(r"Web listening on 127\.0\.0\.1:(\d+)").group(1))
    # The listener's own origin (http://127.0.0.1:PORT, what chat-load sends) is allowed.
    r = load_json("--transport", "ws", "--port", web_port, "--server-pid", server.pid,
                  "--receivers", 8, "--senders", 2, "--messages", 100)
    assert_clean(r, 8, 2, 100)
    wait_until(lambda: server.count(r"WebSocket chatroom\.v1 from") == 10)
    other = start_server("--web-port", "0", "--web-origin", "http://elsewhere.test:1")
    other_port = int(other.wait_for(r"Web listening on 127\.0\.0\.1:(\d+)").group(1))
    done = chat_load("--transport", "ws", "--port", other_port, "--receivers", 1, "--senders", 1)
    assert done.returncode == 2
    assert "failed to connect" in done.stderr and "handshake refused" in done.stderr
    assert "403" in done.stderr


def test_websocket_refuses_what_it_does_not_speak():
    done = chat_load("--transport", "ws", "--protocol", "irc", "--spawn-server")
    assert done.returncode != 0 and "chat-load: --transport ws speaks the native protocol only" in done.stderr
    done = chat_load("--transport", "ws", "--tls", "--port", free_port())
    assert done.returncode != 0 and "chat-load: --transport ws does not do TLS" in done.stderr
    done = chat_load("--transport", "ws")
    assert done.returncode != 0 and "--transport ws needs --port" in done.stderr


def test_websocket_stream_unframes_split_frames_answers_pings_and_closes():
    """Server frames split at every awkward place come out as lines; written lines go out as
    masked frames a server-side wsproto reads back; a ping gets its pong, a close its close."""
    import gevent
    from gevent import socket as gsocket
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection, Pong, TextMessage

    from chatroom.codec import websocket as codec
    from chatroom.load.ws import WebSocket

    long_line = b"MSG load l1 " + b"y" * 300  # a 16-bit length
    huge_line = b"MSG load l1 " + b"z" * 70000  # a 64-bit length
    stream = b"".join(codec.frame(codec.TEXT, b"MSG load l2 L 0 %d 1 x" % i) for i in range(30))
    stream += codec.frame(codec.TEXT, long_line) + codec.frame(0x9, b"tok")
    stream += bytes((0x01, 5)) + b"MSG l" + bytes((0x80, 9)) + b"oad l3 hi"  # a fragmented message
    stream += codec.frame(codec.TEXT, huge_line) + codec.close_frame(codec.NORMAL, "bye")
    stream += codec.frame(codec.TEXT, b"after the close: not read")
    ours, theirs = gsocket.socketpair()
    wsock = WebSocket(ours)
    got = []

    def read():
        while True:
            data = wsock.recv(4096)
            if not data:
                return
            got.append(data)

    reader = gevent.spawn(read)
    wsock.sendall(b"JOIN load\nSEND " + b"w" * 200 + b"\nPING ready\n")
    sizes = [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 4000]
    pos = k = 0
    while pos < len(stream):
        theirs.sendall(stream[pos:pos + sizes[k % len(sizes)]])
        pos += sizes[k % len(sizes)]
        k += 1
        gevent.sleep(0)
    reader.join(timeout=10)
    assert reader.dead
    lines = b"".join(got).split(b"\n")
    assert lines.pop() == b""
    assert lines == ([b"MSG load l2 L 0 %d 1 x" % i for i in range(30)]
                     + [long_line, b"MSG load l3 hi", huge_line])
    # What the client wrote, read by wsproto as a server (which refuses unmasked frames).
    server_side = Connection(ConnectionType.SERVER)
    theirs.settimeout(5)
    events = []
    while not any(isinstance(e, CloseConnection) for e in events):
        data = theirs.recv(65536)
        assert data
        server_side.receive_data(data)
        events += list(server_side.events())
    assert [e.data for e in events if isinstance(e, TextMessage)] == [
        "JOIN load", "SEND " + "w" * 200, "PING ready"]
    assert [e.payload for e in events if isinstance(e, Pong)] == [b"tok"]
    assert events[-1].code == codec.NORMAL
    ours.close()
    theirs.close()


def test_websocket_stream_unframes_runs_of_one_size_exactly():
    """The unframing of runs of same-size frames (its fast path) gives what a frame-by-frame walk
    would, whatever the mix of sizes, control frames and read boundaries."""
    import random

    from chatroom.codec import websocket as codec
    from chatroom.load.ws import WebSocket

    rng = random.Random(7)
    lines = []
    frames = []
    pings = 0
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.02:
            frames.append(codec.frame(0x9, b"p"))  # a ping: answered, no line
            pings += 1
            continue
        size = rng.choice((0, 1, 60, 61, 125) if kind < 0.9 else (126, 300, 70000))
        body = bytes(rng.choice(b"\x81abc ") for _ in range(size))  # 0x81 in payloads too
        repeat = rng.choice((1, 1, 3, 4, 20))
        frames += [codec.frame(codec.TEXT, body)] * repeat
        lines += [body + b"\n"] * repeat
    stream = b"".join(frames)

    class Pipe:
        sent = []

        def __init__(self):
            self.pos = 0

        def recv(self, size):
            n = min(size, rng.choice((1, 7, 100, 4096, 65536)))
            data = stream[self.pos:self.pos + n]
            self.pos += len(data)
            return data

        def sendall(self, data):
            self.sent.append(data)

    wsock = WebSocket(Pipe())
    got = []
    while True:
        data = wsock.recv(65536)
        if not data:
            break
        got.append(data)
    assert b"".join(got) == b"".join(lines)
    assert len(Pipe.sent) == pings


# -- --protocol irc, against ngIRCd (until this server has its IRC listener) ----------------------


@pytest.fixture
def ngircd(tmp_path):
    """A private ngIRCd on a free loopback port, configured as the benchmarks run it."""
    if servers.ngircd_binary() is None:
        pytest.skip("ngircd is not installed (Debian: apt-get install ngircd)")
    server = servers.ServerProcess(servers.ngircd_command(str(tmp_path)),
                                   listening=servers.NGIRCD_LISTENING)
    yield server
    server.stop()


def test_irc_every_line_arrives_once_in_order(ngircd):
    r = load_json("--protocol", "irc", "--port", ngircd.port, "--server-pid", ngircd.pid,
                  "--receivers", 20, "--senders", 3, "--messages", 300, "--check", "all")
    assert_clean(r, 20, 3, 300)
    assert r["clients"]["checked"] == 23
    assert r["latency_ms"]["samples"] == r["delivered"]
    assert r["server_rss_kib"]["connected"] > 0


def test_irc_counting_receivers_operator_senders_and_idle_clients(ngircd):
    r = load_json("--protocol", "irc", "--port", ngircd.port, "--receivers", 30, "--senders", 4,
                  "--messages", 500, "--check", 2, "--procs", 2, "--idle", 6,
                  "--irc-oper", ":".join(servers.NGIRCD_OPER))
    assert_clean(r, 30, 4, 500)
    assert r["clients"]["checked"] == 4  # 2 in each process
    assert r["idle_alive"] == 6 and r["idle_heard"] == 0


def test_irc_flags_are_checked():
    done = chat_load("--protocol", "irc", "--size", 1000)
    assert done.returncode != 0 and "--size is at most" in done.stderr
    done = chat_load("--irc-oper", "load:load")
    assert done.returncode != 0 and "--irc-oper" in done.stderr


def test_irc_counting_receiver_counts_across_reads_and_answers_pings():
    """Lines split at every awkward place: PRIVMSGs counted once each, each PING answered once."""
    import gevent
    from gevent import socket as gsocket

    from chatroom.load.irc import IrcCountingReceiver

    relayed = b":l7!~l7@127.0.0.1 PRIVMSG #load :L 3 %d 123 xxxxxxxx\r\n"
    stream = b"".join(relayed % i for i in range(40))
    stream += b"PING :tok-1\r\n" + b"".join(relayed % i for i in range(40, 50))
    stream += b":load.test PING :tok-2\r\n" + relayed % 50 + b"PING tok-3\r\n"
    receiver = IrcCountingReceiver(markers=0)
    ours, theirs = gsocket.socketpair()
    receiver.sock = ours
    receiver.pattern = b" PRIVMSG #load :"
    reader = gevent.spawn(receiver.run)
    # Chunks of 1 to 37 bytes: every pattern, line end and PING is split somewhere.
    sizes = [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
    pos = k = 0
    while pos < len(stream):
        theirs.sendall(stream[pos:pos + sizes[k % len(sizes)]])
        pos += sizes[k % len(sizes)]
        k += 1
        gevent.sleep(0.001)  # one read per chunk
    theirs.shutdown(gsocket.SHUT_WR)
    reader.join(timeout=10)
    answers = b""
    theirs.settimeout(5)
    while True:
        data = theirs.recv(65536)
        if not data:
            break
        answers += data
        if answers.count(b"\r\n") == 3:
            break
    assert receiver.lines == 51
    assert answers == b"PONG :tok-1\r\nPONG :tok-2\r\nPONG tok-3\r\n"
    ours.close()
    theirs.close()

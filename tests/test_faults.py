"""Fault handling of a real ``bin/chat-server``: broken, silent, slow and hostile clients, limits, shutdown.

Every test starts its own server with small explicit limits so each fault shows within seconds,
and checks both sides: what the faulty client gets (``ERR``/``BYE``, the connection closed) and
that everyone else is unaffected (their messages keep flowing, nothing of the fault leaks to them).
"""

import os
import re
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatroom.codec import native
from chatroom.codec.lines import LineFramer
from conftest import ROOT, WAIT

#: Longest server line the readers here accept (a WHO of a big room is long, but not this long).
MAX_EVENT = 1 << 20

#: A client that joins a room and then never reads again, as its own process so the test can
#: SIGSTOP it like a frozen program. It shrinks its receive buffer and MSS before connecting, so the
#: kernel holds only ~100 KiB for it and the server's own outbox limits are what stop the backlog.
#: It prints its id once it is in the room, then waits on stdin without touching the socket.
STUCK_CLIENT = r"""
import socket, sys
from chatroom.codec import native
from chatroom.codec.lines import LineFramer
port, room = int(sys.argv[1]), sys.argv[2]
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
sock.settimeout(10)
sock.connect(("127.0.0.1", port))
if room != "lobby":
    sock.sendall(native.format_command("JOIN", room))
framer, me = LineFramer(1 << 20), None
while True:
    data = sock.recv(4096)
    if not data:
        sys.exit("closed before joining")
    events = [native.parse_event(line) for line in framer.feed(data)]
    for ev in events:
        if ev.name == "HELLO":
            me = ev.args[0]
    if any(ev.name == "JOIN" and ev.args == (room, me) for ev in events):
        break
print(me, flush=True)
sys.stdin.read()
"""


class StuckClient:
    """A :data:`STUCK_CLIENT` process in ``room``; ``id`` is its connection id."""

    def __init__(self, server, room="lobby"):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", STUCK_CLIENT, str(server.port), room],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        assert ready, "stuck client did not join in time"
        self.id = self.proc.stdout.readline().strip()
        assert self.id, "stuck client exited before joining"

    def stop(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(WAIT)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def stuck():
    """Factory for :class:`StuckClient` processes, all killed after the test."""
    made = []

    def make(server, room="lobby"):
        made.append(StuckClient(server, room))
        return made[-1]

    yield make
    for s in made:
        s.kill()


def gather(clients, done=None, timeout=WAIT):
    """Read all ``clients`` at once in one selector loop, so dozens keep up with a fast sender.

    A client is finished when ``done(client, line)`` is true for a line it got, or when its
    connection closes (with ``done=None`` only then). Returns ``{client: (lines, closed)}``;
    fails if a client is unfinished at ``timeout``.
    """
    sel = selectors.DefaultSelector()
    framers, lines, closed = {}, {c: [] for c in clients}, {c: False for c in clients}
    unfinished = set(clients)

    def take(c, raw):
        for line in framers[c].feed(raw):
            line = line.decode("utf-8", "replace")
            lines[c].append(line)
            if done is not None and c in unfinished and done(c, line):
                unfinished.discard(c)

    for c in clients:
        framers[c] = LineFramer(MAX_EVENT)
        leftover, c._buf = c._buf, b""  # bytes LineClient already read past its last line
        take(c, leftover)
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    try:
        while unfinished and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                c = key.data
                try:
                    raw = c.sock.recv(MAX_EVENT)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    raw = b""
                if raw:
                    take(c, raw)
                else:
                    closed[c] = True
                    unfinished.discard(c)
                    sel.unregister(c.sock)
    finally:
        sel.close()
        for c in clients:
            c.sock.settimeout(c.timeout)
    assert not unfinished, f"{len(unfinished)} of {len(clients)} readers unfinished; e.g. " + repr(
        lines[next(iter(unfinished))][-3:])
    return {c: (lines[c], closed[c]) for c in clients}


def background(fn, *args):
    """Run ``fn(*args)`` in a thread; returns a future (``.result(timeout)``)."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def join_room(room, *clients):
    for c in clients:
        c.send(f"JOIN {room}")
        c.expect(f"JOIN {room} {c.id}")


def texts_from(lines, room, sender):
    prefix = f"MSG {room} {sender} "
    return [line[len(prefix):] for line in lines if line.startswith(prefix)]


def answer_pings_until(client, finished, limit=50):
    """Read ``client``'s lines, answering each ``PING`` with its ``PONG``, until ``finished(lines)``."""
    lines = []
    for _ in range(limit):
        line = client.recv_line()
        lines.append(line)
        if line.startswith("PING "):
            client.send("PONG " + line.split(" ", 1)[1])
        if finished(lines):
            return lines
    raise AssertionError(f"not finished after {limit} lines: {lines[-5:]}")


def seen_all(*wanted):
    """A ``gather`` condition: true once every one of ``wanted`` lines has arrived, in any order."""
    left = set(wanted)

    def done(client, line):
        left.discard(line)
        return not left

    return done


def dropped_lines(server, client_id):
    return server.count(rf"Dropped {re.escape(client_id)}: ")


# -- clients that vanish --------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_killed_mid_line_is_parted_and_its_half_line_never_relayed(start_server, clients, how):
    server = start_server()
    b, c = clients(server), clients(server)
    a = clients(server)  # last, so nothing is left unread on it (close() would then send RST)
    a.send_raw(b"SEND half")
    if how == "reset":  # SO_LINGER 0: close() sends RST instead of FIN, as a killed host would
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()
    for other in (b, c):
        assert other.expect(f"PART lobby {a.id}") == f"PART lobby {a.id} disconnected"
        assert other.sync() == []  # nothing else came: no MSG with the half line
    server.wait_for(rf"Connection closed with {re.escape(a.id)} \(disconnected\)")
    if how == "close":
        server.wait_for(rf"{re.escape(a.id)} closed mid-line \(9 bytes dropped\)")


# -- silent and half-open clients -----------------------------------------------------------------

def test_silent_client_is_pinged_then_dropped_while_one_that_answers_stays(start_server, clients):
    server = start_server("--idle-timeout", 1, "--ping-timeout", 1)
    silent, alive = clients(server), clients(server)
    assert re.fullmatch(r"PING \S+", silent.expect("PING "))
    lines = answer_pings_until(
        alive, lambda lines: f"PART lobby {silent.id} ping-timeout" in lines)
    assert silent.expect_closed() == ["BYE ping-timeout"]
    server.wait_for(rf"Connection closed with {re.escape(silent.id)} \(ping-timeout\)")
    assert any(line.startswith("PING ") for line in lines)
    # A second round: the answering client is pinged again and, answering, is still here.
    answer_pings_until(alive, lambda lines: lines[-1].startswith("PING "))
    alive.sync()
    assert server.count(rf"Connection closed with {re.escape(alive.id)}") == 0


def test_half_open_peer_that_stops_answering_is_dropped(start_server, clients, stuck):
    server = start_server("--idle-timeout", 1, "--ping-timeout", 1)
    gone = stuck(server)
    gone.stop()  # the peer's host froze: its kernel still ACKs, nothing answers
    watcher = clients(server)
    answer_pings_until(watcher, lambda lines: f"PART lobby {gone.id} ping-timeout" in lines)
    server.wait_for(rf"Connection closed with {re.escape(gone.id)} \(ping-timeout\)")
    watcher.sync()


# -- a frozen reader in a busy room ---------------------------------------------------------------

def test_stopped_reader_is_dropped_while_49_others_get_5000_messages_in_order(start_server, clients, stuck):
    count, readers = 5000, 49
    server = start_server("--flood-rate", 0, "--outbox-limit", 256 * 1024, "--outbox-soft-limit", 0,
                          "--send-timeout", 5)
    sender = clients(server)
    join_room("big", sender)
    frozen = stuck(server, "big")
    frozen.stop()
    others = [clients(server) for _ in range(readers)]
    join_room("big", *others)

    last = f"MSG big {sender.id} {count - 1:05d} "
    reading = background(gather, others, lambda c, line: line.startswith(last), 60)
    pad = "x" * 120
    sender.send_raw(b"".join(native.format_command("SEND", f"{i:05d} {pad}") for i in range(count)))
    sender.send("PING after")
    sender.expect("PONG after")  # every line was taken in: the sender was never held up

    got = reading.result(WAIT * 7)
    expected = [f"{i:05d} {pad}" for i in range(count)]
    for c in others:
        assert texts_from(got[c][0], "big", sender.id) == expected
    server.wait_for(rf"Dropped {re.escape(frozen.id)}: (slow-consumer|send-timeout)")
    assert dropped_lines(server, frozen.id) == 1
    assert all(f"PART big {frozen.id} slow-consumer" in got[c][0]
               or f"PART big {frozen.id} send-timeout" in got[c][0] for c in others)


# -- outbox limits and the send deadline, one non-reading client each ------------------------------

MIB = 1024 * 1024

OUTBOX_CASES = {
    "hard-limit": (("--outbox-limit", 64 * 1024, "--outbox-soft-limit", 0, "--send-timeout", 60),
                   "slow-consumer"),
    "soft-limit": (("--outbox-limit", 16 * MIB, "--outbox-soft-limit", 16 * 1024,
                    "--outbox-soft-seconds", 1, "--send-timeout", 60), "slow-consumer"),
    "send-timeout": (("--outbox-limit", 16 * MIB, "--outbox-soft-limit", 0, "--send-timeout", 1),
                     "send-timeout"),
}


@pytest.mark.parametrize("case", list(OUTBOX_CASES))
def test_non_reading_client_is_dropped_by_each_limit(start_server, clients, stuck, case):
    """400 KB to a client that reads nothing, then silence: the limit under test must drop it."""
    args, reason = OUTBOX_CASES[case]
    server = start_server("--flood-rate", 0, *args)
    frozen = stuck(server)
    sender = clients(server)
    sender.send_raw(b"".join(native.format_command("SEND", f"{i} " + "y" * 1000) for i in range(400)))
    assert sender.expect(f"PART lobby {frozen.id}", timeout=WAIT) == f"PART lobby {frozen.id} {reason}"
    m = server.wait_for(rf"Dropped {re.escape(frozen.id)}: (\S+) \((\d+) bytes queued\)")
    assert m.group(1) == reason
    queued = int(m.group(2))
    if case == "hard-limit":
        assert queued > 64 * 1024
    elif case == "soft-limit":
        assert 16 * 1024 < queued <= 16 * MIB
    assert dropped_lines(server, frozen.id) == 1
    sender.sync()  # the sender was never disturbed


def test_soft_limit_drops_a_non_reader_in_a_busy_room_too(start_server, clients, stuck):
    server = start_server("--flood-rate", 0, "--outbox-limit", 16 * MIB, "--outbox-soft-limit", 16 * 1024,
                          "--outbox-soft-seconds", 1, "--send-timeout", 60)
    frozen = stuck(server)
    sender = clients(server)
    sender.send_raw(b"".join(native.format_command("SEND", f"{i} " + "y" * 1000) for i in range(400)))
    # The room keeps talking, a line every 0.1 s, until the frozen member is dropped.
    deadline = time.monotonic() + WAIT
    while not dropped_lines(server, frozen.id):
        assert time.monotonic() < deadline, "soft limit never dropped the non-reader"
        sender.send("SEND tick")
        time.sleep(0.1)
    m = server.wait_for(rf"Dropped {re.escape(frozen.id)}: slow-consumer \((\d+) bytes queued\)")
    assert int(m.group(1)) <= 16 * MIB
    assert sender.expect(f"PART lobby {frozen.id}") == f"PART lobby {frozen.id} slow-consumer"


# -- hostile input --------------------------------------------------------------------------------

def test_a_mebibyte_without_line_end_is_cut_off_and_others_carry_on(start_server, clients):
    server = start_server("--flood-rate", 0)
    big, b, c = clients(server), clients(server), clients(server)
    blob = b"SEND " + b"A" * (MIB - 5)
    big.send_raw(blob[:32 * 1024])  # half-way to the no-line-end limit: the server still serves others
    b.send("SEND during")
    assert c.expect("MSG ") == f"MSG lobby {b.id} during"
    assert c.sync() == []

    def send_rest():
        try:
            big.send_raw(blob[32 * 1024:])
        except OSError:
            pass  # the server closed the connection part-way, as it should

    rest = background(send_rest)
    lines = big.expect_closed()
    rest.result(WAIT)
    assert lines[-1] == "BYE no-line-end"
    assert any(line.startswith("ERR no-line-end ") for line in lines[:-1])
    for other in (b, c):
        assert other.expect(f"PART lobby {big.id}") == f"PART lobby {big.id} no-line-end"
    server.wait_for(rf"Connection closed with {re.escape(big.id)} \(no-line-end\)")
    b.send("SEND after")
    assert c.expect("MSG ") == f"MSG lobby {b.id} after"


def test_overlong_line_is_refused_and_the_connection_stays(start_server, clients):
    server = start_server("--max-line", 64)
    a, b = clients(server), clients(server)
    a.send("SEND " + "L" * 100)
    assert a.expect("ERR ").startswith("ERR line-too-long ")
    a.send("SEND short")
    assert b.expect("MSG ") == f"MSG lobby {a.id} short"


def test_invalid_utf8_is_refused_and_the_connection_works_after(start_server, clients):
    server = start_server()
    a, b = clients(server), clients(server)
    a.send_raw(b"SEND caf\xc3\x28 \xff\n")
    assert a.expect("ERR ").startswith("ERR invalid-utf8 ")
    a.send("SEND caf\u00e9")
    assert b.expect("MSG ") == f"MSG lobby {a.id} caf\u00e9"  # and not the invalid line before it
    assert a.sync() == []


def test_flooder_is_rate_limited_then_dropped_while_others_keep_talking(start_server, clients):
    server = start_server("--flood-rate", 20, "--flood-burst", 10)
    flooder, b, c = clients(server), clients(server), clients(server)
    sent = []

    def flood():  # 200 lines/s, ten times the limit, until the server hangs up
        deadline = time.monotonic() + WAIT
        try:
            while time.monotonic() < deadline:
                flooder.send(f"SEND flood {len(sent)}")
                sent.append(1)
                time.sleep(0.005)
        except OSError:
            pass

    flooding = background(flood)
    for i in range(10):
        b.send(f"SEND b {i}")
        time.sleep(0.02)
    got = gather([c], seen_all(f"MSG lobby {b.id} b 9", f"PART lobby {flooder.id} flood"))[c][0]
    assert texts_from(got, "lobby", b.id) == [f"b {i}" for i in range(10)]
    flooding.result(WAIT * 2)
    lines = flooder.expect_closed()
    assert lines[-1] == "BYE flood"
    assert any(line.startswith("ERR rate-limited ") for line in lines)
    assert len(texts_from(got, "lobby", flooder.id)) < len(sent)
    server.wait_for(rf"Connection closed with {re.escape(flooder.id)} \(flood\)")
    b.send("SEND still here")
    assert c.expect("MSG ") == f"MSG lobby {b.id} still here"


# -- connection limits ----------------------------------------------------------------------------

def test_connections_over_max_clients_are_refused_until_one_leaves(start_server, clients):
    server = start_server("--max-clients", 3)
    server.wait_for(r"Listening on .*max 3 clients")
    first, *rest = [clients(server) for _ in range(3)]
    extra = clients(server, hello=False)
    assert extra.expect_closed() == ["BYE server-full"]
    server.wait_for(r"Refused \S+: server-full")
    assert rest[-1].sync() == []  # the refused connection never joined the chat
    first.close()
    server.wait_for(rf"Connection closed with {re.escape(first.id)}")
    again = clients(server)
    assert again.id


def test_per_ip_limit_refuses_a_third_from_one_address_but_not_another(start_server, clients):
    server = start_server("--max-per-ip", 2)
    a, b = clients(server), clients(server)
    third = clients(server, hello=False)
    assert third.expect_closed() == ["BYE too-many-connections"]
    server.wait_for(r"Refused 127\.0\.0\.1:\d+: too-many-connections")
    other = clients(server, source="127.0.0.2")
    assert other.id.startswith("127.0.0.2:")
    a.close()
    server.wait_for(rf"Connection closed with {re.escape(a.id)}")
    assert clients(server).id.startswith("127.0.0.1:")
    b.sync()  # the others were never disturbed


# -- shutdown and start-up ------------------------------------------------------------------------

def test_sigterm_under_load_delivers_everything_accepted_then_bye(start_server, clients):
    count = 2000
    server = start_server("--flood-rate", 0, "--shutdown-timeout", 3)
    receivers = [clients(server) for _ in range(5)]
    sender, busy = clients(server), clients(server)
    reading = background(gather, receivers, None, WAIT * 3)  # read every line until the server hangs up

    def chatter():  # keeps sending while the server shuts down; it may lose its last lines
        deadline, i = time.monotonic() + WAIT, 0
        try:
            while time.monotonic() < deadline:
                busy.send(f"SEND busy {i}")
                i += 1
                time.sleep(0.001)
        except OSError:
            pass

    chatting = background(chatter)
    sender.send_raw(b"".join(native.format_command("SEND", f"n {i}") for i in range(count)))
    sender.sync("accepted")  # every one of the count lines was taken in before the shutdown
    server.signal(signal.SIGTERM)
    assert server.proc.wait(WAIT) == 0
    got = reading.result(WAIT * 3)
    chatting.result(WAIT * 2)
    for c in receivers:
        lines, closed = got[c]
        assert texts_from(lines, "lobby", sender.id) == [f"n {i}" for i in range(count)]
        assert lines[-1] == "BYE server-shutdown" and closed
    server.wait_for(r"Server stopped")


def test_sigterm_right_after_start_exits_cleanly(start_server):
    """A supervisor may signal as soon as the server says it listens: that must be a clean stop."""
    for _ in range(3):
        server = start_server()
        server.signal(signal.SIGTERM)
        assert server.proc.wait(WAIT) == 0
        server.wait_for(r"Server stopped")


def test_listening_line_reports_the_open_files_limit(start_server):
    server = start_server()
    m = server.wait_for(r"Listening on \S+ \(.*open-files limit (\d+)")
    with open(f"/proc/{server.pid}/limits") as f:
        soft = next(line.split()[3] for line in f if line.startswith("Max open files"))
    assert m.group(1) == soft


# -- a short randomized run (the long one is tests/test_soak.py, make soak) -----------------------

def test_short_soak(start_server):
    from test_soak import run_soak

    run_soak(start_server, clients=60, rounds=1, seconds=6, check_memory=False)

"""Soak: hundreds of clients chatting, switching rooms, leaving and misbehaving at random, in rounds.

Each round, observers sit in every room from start to finish while chatters (well-behaved) send
numbered messages, move between rooms, change nicknames, ask WHO, now and then send a line of
invalid UTF-8, and leave (QUIT or close) to come back as new connections. Misbehaving clients flood,
send a megabyte without a line end, vanish mid-line (FIN or RST), or stop reading. Afterwards:

- every observer got exactly the messages each chatter sent in its room, in order, and no chatter
  saw anyone's messages out of order; no half line was ever relayed;
- each misbehaving client got the disconnect it earned;
- the server is back to its baseline: file descriptors (/proc/<pid>/fd), greenlets and clients
  (its ``Stats:`` line on SIGUSR1), and resident memory within a margin of the first round's.

The clients are greenlets in this process (gevent sockets, no monkey-patching). ``make soak`` runs
the long version; tests/test_faults.py runs a short one in ``make test``.
"""

import os
import random
import re
import signal
import socket
import time
from collections import Counter, defaultdict

import gevent
import gevent.event
import gevent.lock
import pytest
from gevent import socket as gsocket

from chatroom.codec import native
from chatroom.codec.lines import LineFramer
from conftest import WAIT

#: Server limits for the soak: small, so every limit is hit within seconds.
SERVER_ARGS = (
    "--flood-rate", 20, "--flood-burst", 10,
    "--idle-timeout", 2, "--ping-timeout", 2,
    "--outbox-limit", 256 * 1024, "--outbox-soft-limit", 64 * 1024, "--outbox-soft-seconds", 2,
    "--send-timeout", 3, "--shutdown-timeout", 2,
)
ROOMS = ("lobby", "r1", "r2", "r3", "r4")
#: Observers per room.
OBSERVERS = 2
#: Seconds between a chatter's lines: well under the flood rate of 20 lines/s.
CHAT_PAUSE = (0.1, 0.4)
#: Lines a chatter sends in one connection before it leaves and reconnects.
LIFE_LINES = (5, 40)
#: Longest server line accepted (WHO of a room of hundreds).
MAX_EVENT = 1 << 20
#: Resident memory the server may gain after the first round (fragmentation, caches), in KiB.
RSS_SLACK_KB = 8 * 1024
#: Reasons a client that stopped reading may be dropped for.
STOPPED_REASONS = {"ping-timeout", "slow-consumer", "send-timeout"}


class SoakClient:
    """A gevent connection with a reader greenlet that answers PING and tallies what arrives.

    MSG lines are recorded per sender key (the first word of the text, the rest its sequence
    number); ``ERR`` codes are counted; one waiter at a time can wait for a particular event.
    """

    def __init__(self, port, key, small_buffers=False, read=True):
        self.key = key
        self.sock = gsocket.socket()
        if small_buffers:  # the kernel then holds only ~100 KiB for it: limits bite sooner
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        self.framer = LineFramer(MAX_EVENT)
        self.id = None
        self.msgs = defaultdict(list)  # sender key -> sequence numbers, in arrival order
        self.errs = Counter()
        self.bye = None
        self.last = None  # the last line received
        self.nick = None
        self.closed = gevent.event.Event()
        self._send_lock = gevent.lock.Semaphore()
        self._want = None  # (predicate, AsyncResult)
        self.reader = gevent.spawn(self._read) if read else None

    # -- sending ---------------------------------------------------------------------------------

    def send(self, data):
        if isinstance(data, str):
            data = native.format_command(*data.split(" ", 1))
        with self._send_lock:
            self.sock.sendall(data)

    def request(self, line, predicate, timeout=WAIT):
        """Send ``line`` and wait for an event satisfying ``predicate``; returns the event."""
        waiter = gevent.event.AsyncResult()
        self._want = (predicate, waiter)
        self.send(line)
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            raise AssertionError(f"{self.key}: no answer to {line!r}; last line {self.last!r}") from None

    def sync(self, token="sync"):
        return self.request(f"PING {token}", lambda ev: ev.name == "PONG" and ev.args == (token,))

    def hello(self):
        """Wait for HELLO and the lobby JOIN; returns the id."""
        waiter = gevent.event.AsyncResult()
        self._want = (lambda ev: ev.name == "JOIN" and ev.args == ("lobby", self.id), waiter)
        waiter.get(timeout=WAIT)
        return self.id

    def join(self, room):
        self.request(f"JOIN {room}", lambda ev: ev.name == "JOIN" and ev.args == (room, self.nick or self.id))

    def close(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        self.sock.close()  # gevent finishes the close in the hub: keep the hub running after this
        if self.reader is not None:
            self.reader.kill(timeout=WAIT)

    # -- receiving -------------------------------------------------------------------------------

    def _read(self):
        try:
            self.sock.settimeout(None)  # the round's end closes it; a stalled reader fails the checks
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for line in self.framer.feed(data):
                    self._event(line.decode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            self.closed.set()
            if self._want is not None:
                self._want[1].set_exception(EOFError(f"{self.key}: closed, last line {self.last!r}"))
                self._want = None

    def _event(self, line):
        self.last = line
        ev = native.parse_event(line)
        if ev.name == "MSG":
            key, _, seq = ev.args[2].partition(" ")
            self.msgs[key].append(int(seq) if seq.isdigit() else seq)
        elif ev.name == "PING":
            self.send(f"PONG {ev.args[0]}" if ev.args else "PONG")
        elif ev.name == "HELLO":
            self.id = ev.args[0]
        elif ev.name == "ERR":
            self.errs[ev.args[0]] += 1
        elif ev.name == "BYE":
            self.bye = ev.args[0]
        want = self._want
        if want is not None and want[0](ev):
            self._want = None
            want[1].set(ev)


class Round:
    """One soak round against ``server``: builds the clients, runs them, checks what they saw."""

    def __init__(self, server, number, clients, seconds, rng):
        self.server = server
        self.number = number
        self.seconds = seconds
        self.rng = rng
        self.stop = gevent.event.Event()
        self.observers = {}  # SoakClient -> room
        self.lives = []  # (key, [(room, seq)...]) of every chatter connection
        self.problems = []  # what went wrong, for one assertion at the end
        self.outcomes = defaultdict(list)  # misbehaviour -> (client id, BYE reason or None)
        self.stopped_ids = []
        self.open = []  # every SoakClient, closed at the end
        misbehaving = max(4, clients // 7)
        self.plan = ["flooder", "no-line-end", "vanisher", "stopper"] * (misbehaving // 4)
        self.plan += ["chatter"] * max(1, clients - len(ROOMS) * OBSERVERS - len(self.plan))
        self.serial = 0
        self.checked = 0  # messages the observers were checked for

    def connect(self, prefix, **kw):
        self.serial += 1
        c = SoakClient(self.server.port, f"{prefix}{self.number}x{self.serial}", **kw)
        self.open.append(c)
        return c

    def run(self):
        for room in ROOMS:
            for _ in range(OBSERVERS):
                c = self.connect("o")
                c.hello()
                c.join(room)
                self.observers[c] = room
        workers = [gevent.spawn(self.guard, getattr(self, role.replace("-", "_")))
                   for role in self.plan]
        gevent.sleep(self.seconds)
        self.stop.set()
        done = gevent.joinall(workers, timeout=WAIT * 3)
        if len(done) != len(workers):
            self.problems.append(f"{len(workers) - len(done)} clients did not finish")
            gevent.killall(workers, timeout=WAIT)
        for c in self.observers:
            self.guard(c.sync, "final")
        self.check()
        for cid in self.stopped_ids:  # a client that stopped reading is dropped, not kept forever
            if not gwait(lambda: close_reasons(self.server, cid) & STOPPED_REASONS):
                self.problems.append(f"stopped reader {cid} still connected: {close_reasons(self.server, cid)}")
        for c in self.open:
            c.close()

    def guard(self, fn, *args):
        try:
            fn(*args)
        except (Exception, gevent.Timeout) as err:  # collected and reported together
            self.problems.append(f"{fn.__name__}: {type(err).__name__}: {err}")

    # -- well-behaved ----------------------------------------------------------------------------

    def chatter(self):
        rng = self.rng
        gevent.sleep(rng.uniform(0, 1))
        while not self.stop.is_set():
            c = self.connect("c")
            c.hello()
            sent, room, invalid = [], "lobby", 0
            self.lives.append((c.key, sent, c))
            for seq in range(rng.randint(*LIFE_LINES)):
                if self.stop.is_set():
                    break
                action = rng.random()
                if action < 0.65:
                    c.send(f"SEND {c.key} {seq}")
                    sent.append((room, seq))
                elif action < 0.8:
                    room = rng.choice(ROOMS)
                    c.join(room)
                elif action < 0.85:
                    c.nick = f"n{c.key}-{seq}"
                    c.request(f"NICK {c.nick}", lambda ev, c=c: ev.name == "NICK" and ev.args[1] == c.nick)
                elif action < 0.95:
                    c.request("WHO", lambda ev: ev.name == "WHO")
                else:
                    c.send(b"SEND caf\xc3\x28 " + c.key.encode() + b"\n")
                    invalid += 1
                gevent.sleep(rng.uniform(*CHAT_PAUSE))
            c.sync("bye")
            if c.errs != Counter({"invalid-utf8": invalid} if invalid else {}):
                self.problems.append(f"{c.key}: ERR {dict(c.errs)}, expected {invalid} invalid-utf8")
            if rng.random() < 0.5:
                c.request("QUIT done", lambda ev: ev.name == "BYE")
                if c.bye != "quit":
                    self.problems.append(f"{c.key}: BYE {c.bye} after QUIT")
            elif c.bye is not None or c.closed.is_set():
                self.problems.append(f"{c.key}: closed by the server ({c.bye}, last {c.last!r})")
            c.close()

    # -- misbehaving -----------------------------------------------------------------------------

    def flooder(self):
        self.misbehave("flooder", lambda c: c.send(b"".join(
            native.format_command("SEND", f"{c.key} {i}") for i in range(300))))

    def no_line_end(self):
        self.misbehave("no-line-end", lambda c: c.send(b"SEND " + b"N" * (1 << 20)))

    def misbehave(self, kind, act):
        rng = self.rng
        while not self.stop.is_set():
            gevent.sleep(rng.uniform(0.2, 2))
            c = self.connect("m")
            c.hello()
            c.join(rng.choice(ROOMS))
            try:
                act(c)
            except OSError:
                pass  # the server hung up while we were still sending, as it should
            c.closed.wait(WAIT)
            self.outcomes[kind].append((c.id, c.bye))
            c.close()

    def vanisher(self):
        rng = self.rng
        while not self.stop.is_set():
            gevent.sleep(rng.uniform(0.2, 2))
            c = self.connect("v")
            c.hello()
            c.join(rng.choice(ROOMS))
            c.send(f"SEND {c.key} 0")
            c.send(f"SEND partial-{c.key} 1".encode())  # no line end: must never be relayed
            c.close(reset=rng.random() < 0.5)

    def stopper(self):
        c = self.connect("s", small_buffers=True)
        c.hello()
        c.join(self.rng.choice(ROOMS))
        c.reader.kill()  # from now on nothing is read: PINGs go unanswered, the outbox grows
        self.stopped_ids.append(c.id)
        self.stop.wait()

    # -- checks ----------------------------------------------------------------------------------

    def check(self):
        p = self.problems
        for o, room in self.observers.items():
            if o.closed.is_set() or o.errs or o.bye:
                p.append(f"observer {o.key} in {room}: closed={o.closed.is_set()} {dict(o.errs)} {o.bye}")
            for key, sent, _ in self.lives:
                want = [seq for r, seq in sent if r == room]
                self.checked += len(want)
                if o.msgs.get(key, []) != want:
                    got = o.msgs.get(key, [])
                    p.append(f"observer in {room} got {len(got)} of {len(want)} from {key}: "
                             f"missing {sorted(set(want) - set(got))[:5]}, order ok={got == sorted(got)}")
            if any(k.startswith("partial-") for k in o.msgs):
                p.append(f"observer in {room} got a half line: {[k for k in o.msgs if 'partial' in k]}")
        for _, _, c in self.lives:
            if c.msgs.get(c.key):
                p.append(f"{c.key} got its own messages back")
            for key, seqs in c.msgs.items():
                if key.startswith("c") and seqs != sorted(set(seqs)):
                    p.append(f"{c.key} got {key}'s messages out of order or twice: {seqs[:10]}")
        expected_bye = {"flooder": "flood", "no-line-end": "no-line-end"}
        for kind, results in self.outcomes.items():
            wrong = [(cid, bye) for cid, bye in results if bye != expected_bye[kind]]
            if wrong:
                p.append(f"{kind}: {len(wrong)} of {len(results)} got the wrong BYE, e.g. {wrong[:3]}")


def gwait(predicate, timeout=WAIT):
    """Poll ``predicate`` without blocking the other greenlets; returns whether it came true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def server_fds(server):
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def server_rss_kb(server):
    with open(f"/proc/{server.pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))


def server_stats(server):
    """Ask the server for its ``Stats:`` line (SIGUSR1); returns it as a dict of ints."""
    start = len(server.lines)
    server.proc.send_signal(signal.SIGUSR1)
    m = server.wait_for(r"Stats: (.*)", start=start)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def close_reasons(server, client_id):
    rx = re.compile(rf"(?:Connection closed with|Dropped) {re.escape(client_id)}:? \(?([a-z-]+)")
    return {m.group(1) for m in map(rx.search, server.lines) if m}


def run_soak(start_server, clients, rounds, seconds, check_memory=True, seed=None):
    """Run ``rounds`` rounds of ``clients`` clients for ``seconds`` each; fails on any problem."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    server = start_server(*SERVER_ARGS)
    fds0 = server_fds(server)
    stats0 = server_stats(server)
    rss_after_first = None
    for number in range(1, rounds + 1):
        r = Round(server, number, clients, seconds, rng)
        r.run()
        assert not r.problems, f"round {number} (seed {seed}): " + "\n".join(r.problems[:20])
        assert r.checked and r.stopped_ids and all(r.outcomes[k] for k in ("flooder", "no-line-end")), (
            "the round did not exercise everything", r.checked, r.stopped_ids, dict(r.outcomes))
        assert gwait(lambda: server_fds(server) == fds0), (
            f"round {number}: server holds {server_fds(server)} fds, {fds0} at start")
        stats = server_stats(server)
        assert stats["clients"] == stats["members"] == stats["rooms"] == stats["nicks"] == 0, stats
        assert stats["greenlets"] <= stats0["greenlets"], (stats0, stats)
        rss = server_rss_kb(server)
        print(f"round {number}: {r.serial} connections, {r.checked} messages checked, "
              f"{sum(map(len, r.outcomes.values()))} misbehaving, RSS {rss} KiB, {stats}")
        if rss_after_first is None:
            rss_after_first = rss
        elif check_memory:
            assert rss <= rss_after_first + RSS_SLACK_KB, (
                f"round {number}: server RSS {rss} KiB, {rss - rss_after_first} KiB over round 1's")
    assert server.stop() == 0


@pytest.mark.soak
@pytest.mark.timeout(600)  # four rounds of 30 s and their checks: about two and a half minutes
def test_soak(start_server):
    run_soak(start_server, clients=int(os.environ.get("SOAK_CLIENTS", 400)),
             rounds=int(os.environ.get("SOAK_ROUNDS", 4)),
             seconds=float(os.environ.get("SOAK_SECONDS", 30)))

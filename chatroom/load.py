"""Load generator: many gevent clients talk in one room and measure delivery, loss and latency.

``bin/chat-load`` connects ``--receivers`` reading clients and ``--senders`` talking clients (plus
optional ``--idle`` silent ones and ``--stalled`` ones that never read) to a chat server, moves
them all into one room, and after a start barrier has every sender say ``--messages`` lines::

    SEND L <sender> <seq> <monotonic_ns> <padding>

Every client in the room (senders too, for the others' lines) receives them. *Checked* receivers
frame each line with :class:`LineFramer` and verify per-sender order, loss and duplicates,
and record latency (``monotonic_ns`` is one clock for every process on the machine). Checking a
line costs the generator more CPU than relaying it costs the server, so in a big room only a
sample (``--check``, evenly spread) checks; the rest count ``MSG`` lines with ``bytes.count`` in C
and so measure throughput and totals. A sender ends with ``SEND E <sender> <count>`` so receivers
know when they have it all.

Senders never run away from the readers: a sender keeps at most ``--window`` lines in flight
beyond the slowest checked receiver in its own process (or, with none, beyond its own
``PING``/``PONG`` round trips), so the server's outboxes stay far below its slow-consumer limit.

``--procs P`` splits the clients over P worker processes (this module run with a hidden
``--worker`` flag) that connect, report ready, start together on ``go`` and print their results
as JSON lines; the coordinating process merges them.
"""

import argparse
import array
import collections
import dataclasses
import json
import math
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time

import gevent
import gevent.event
from gevent import socket
from gevent.pool import Pool
from gevent.socket import wait_read

from .codec.lines import LineFramer
from .transport import sockets
from . import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Connects (and their handshakes) in flight at once per process: far below the server's listen
#: backlog (1024), so a connect storm never overflows it and costs a SYN retry of a second or more.
CONNECT_CONCURRENCY = 200
#: Seconds one TCP connect may take.
CONNECT_TIMEOUT = 10.0
#: Seconds for every client of a process to connect, join its room and pass the barrier.
SETUP_TIMEOUT = 120.0
#: Bytes asked of the kernel per recv: big reads frame many lines per wake-up. Below glibc's
#: mmap threshold, so a read does not cost an mmap/munmap pair.
RECV_SIZE = 65536
#: After the senders stop, receivers wait for lines in flight while they keep arriving: until
#: none has come for DRAIN_SECONDS, and never longer than DRAIN_LIMIT in all (a slow server may
#: still be relaying a backlog; what has not arrived by then counts as lost).
DRAIN_SECONDS = 5.0
DRAIN_LIMIT = 30.0
#: Seconds between looks at the receivers' progress while draining.
DRAIN_POLL = 0.05
#: Longest a window-blocked sender waits before it looks at its receivers' progress again (it
#: is woken as soon as a checked receiver reads anything, so this only bounds a missed wake-up).
PACE_WAIT = 0.05
#: Most lines a sender writes in one sendall.
BATCH = 16
#: Default lines one sender may have in flight beyond its slowest checked receiver. With 10
#: senders of 64-byte lines that is some 120 KiB queued per reader, half the server's soft
#: slow-consumer limit (256 KiB).
DEFAULT_WINDOW = 128
#: Default checked (fully verified, timed) clients per process. Senders pace on them, and a
#: checked client costs the generator some 0.7 us a line against 0.06 us for a counting one, so
#: each one more holds the whole room back: at 100/10, 16 of them cap a run at half of what 2
#: let the server reach. Two still time and check every line of every sender.
DEFAULT_CHECK = 2
#: Most checked receivers a sender looks at for its window (evenly spread over them).
PACE_SAMPLE = 16
#: Default message text size in bytes (the text after ``SEND``).
DEFAULT_SIZE = 64
#: Default seconds the senders may send (a hard cap on every run).
DEFAULT_DURATION = 30.0
#: Seconds between progress updates (the live line, worker reports, server RSS samples).
PROGRESS_INTERVAL = 0.5
#: At the end, bytes and seconds spent reading a stalled receiver's backlog to learn whether the
#: server dropped it (an EOF after the backlog) or still holds it.
STALLED_DRAIN_BYTES = 64 * 1024 * 1024
STALLED_DRAIN_SECONDS = 2.0
#: Seconds an idle client may take to answer the PING that checks it at the end of a run.
IDLE_CHECK_TIMEOUT = 10.0
#: File descriptors a process keeps free beyond its sockets (pipes, logs, the listener check).
FD_RESERVE = 64
#: Gaps (missing sequence numbers) remembered per checked receiver to tell late from duplicate.
MISSING_LIMIT = 100_000
#: Seconds a spawned server may take to print ``Listening on`` and to stop after SIGTERM.
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_TIMEOUT = 10.0
#: Server output lines kept for error reports.
SERVER_TAIL_LINES = 50
#: Seconds a worker process may take to report its result after the senders' deadline and drain.
WORKER_FINISH_SLACK = 30.0
#: Seconds a worker is given to close its sockets and exit after the run (or a stop) before SIGKILL.
WORKER_EXIT_TIMEOUT = 10.0

PING_READY = b"PING ready\n"
PONG_READY = b"PONG ready"
MARK_DATA = b"L"
MARK_END = b"E"


class SetupError(Exception):
    """The clients could not all connect, join and pass the barrier."""


@dataclasses.dataclass
class Config:
    """What one run does; a worker process gets it as JSON with its ``index``."""

    host: str = "127.0.0.1"
    port: int = 7777
    room: str = "load"
    receivers: int = 10
    senders: int = 1
    idle: int = 0
    stalled: int = 0
    messages: int = 1000
    duration: float = DEFAULT_DURATION
    rate: float = 0.0
    size: int = DEFAULT_SIZE
    window: int = DEFAULT_WINDOW
    check: int = DEFAULT_CHECK  # < 0: every receiver checks
    source_addrs: int = 1
    procs: int = 1
    index: int = 0
    tls: bool = False  #: speak TLS (the server's --tls-port); the certificate is not checked

    def share(self, total):
        """This process's (count, first global index) of ``total`` clients of one kind."""
        base, extra = divmod(total, self.procs)
        i = self.index
        return base + (1 if i < extra else 0), i * base + min(i, extra)


# -- clients --------------------------------------------------------------------------------------


#: Set by --tls: a client context that encrypts but does not check the certificate (a load tool
#: measures the cost of TLS, not whom it trusts).
TLS_CONTEXT = None


def use_tls():
    global TLS_CONTEXT
    import ssl

    import gevent.ssl

    TLS_CONTEXT = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    TLS_CONTEXT.check_hostname = False
    TLS_CONTEXT.verify_mode = ssl.CERT_NONE


class Client:
    """One connection: connect (from a chosen source address), join a room, pass the barrier."""

    __slots__ = ("sock", "id", "framer", "closed")

    def __init__(self):
        self.sock = None
        self.id = None
        self.framer = None
        self.closed = None  #: why the connection ended, once it has

    def connect(self, host, port, source, room):

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            if source:
                sock.bind((source, 0))
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if TLS_CONTEXT is not None:
                sock = TLS_CONTEXT.wrap_socket(sock)
            sock.settimeout(SETUP_TIMEOUT)
            sock.sendall(b"JOIN " + room.encode() + b"\n" + PING_READY)
            framer = LineFramer()
            joined = False
            while True:
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise SetupError(f"server closed the connection during setup (id {self.id})")
                for line in framer.feed(data):
                    if type(line) is not bytes:
                        continue
                    if line.startswith(b"HELLO ") and self.id is None:
                        self.id = line.split(b" ")[1].decode()
                    elif line.startswith(b"JOIN ") and line.split(b" ")[1:3] == [
                            room.encode(), (self.id or "").encode()]:
                        joined = True
                    elif line == PONG_READY:
                        if not joined:
                            raise SetupError(f"no 'JOIN {room} {self.id}' before PONG")
                        self.framer = framer
                        sock.settimeout(None)
                        self.sock = sock
                        return
                    elif line.startswith((b"BYE ", b"ERR ")):
                        raise SetupError(f"server said {line.decode(errors='replace')!r} during setup")
        except BaseException:
            sock.close()
            raise

    def close(self):
        if self.sock is not None:
            self.sock.close()


class CheckedReceiver(Client):
    """Frames every line; checks per-sender order, loss and duplicates; records latency."""

    __slots__ = ("last", "missing", "count", "duplicates", "out_of_order", "latencies", "finals",
                 "markers", "done", "last_ns", "bye", "pong", "pacer")

    def __init__(self, markers):
        super().__init__()
        self.last = {}  #: sender index (bytes) -> highest seq seen
        self.missing = {}  #: sender index -> set of seqs skipped so far (arrive later = out of order)
        self.count = 0  #: data lines received, duplicates included
        self.duplicates = 0
        self.out_of_order = 0
        self.latencies = array.array("q")  #: ns from send to receipt, one per data line
        self.finals = {}  #: sender index -> lines it says it sent (from its end marker)
        self.markers = markers  #: end markers to see before this receiver has everything
        self.done = gevent.event.Event()  #: set once every end marker has arrived
        if markers <= 0:
            self.done.set()
        self.last_ns = 0  #: when the last data line arrived
        self.bye = None
        self.pong = -1  #: highest PONG token seen (senders pace on it without checked receivers)
        self.pacer = None  #: the :class:`Pacer` to tell of progress, if senders pace on this client

    def run(self):
        recv = self.sock.recv
        feed = self.framer.feed
        pacer = self.pacer
        last = self.last
        lat = self.latencies.append
        clock = time.monotonic_ns
        try:
            while True:
                data = recv(RECV_SIZE)
                if not data:
                    self.closed = self.bye or "eof"
                    return
                now = clock()
                n = 0
                for line in feed(data):
                    if type(line) is not bytes:
                        continue
                    f = line.split(b" ", 7)
                    if len(f) == 8 and f[3] == MARK_DATA and f[0] == b"MSG":
                        s = f[4]
                        seq = int(f[5])
                        if seq == last.get(s, -1) + 1:
                            last[s] = seq
                        else:
                            self._irregular(s, seq)
                        lat(now - int(f[6]))
                        n += 1
                    else:
                        self._other(f)
                if n:
                    self.count += n
                    self.last_ns = now
                    if pacer is not None and pacer.waiting:
                        pacer.event.set()
        except OSError as err:
            self.closed = self.bye or f"error: {err}"

    def _irregular(self, s, seq):
        """A line that is not the next one from its sender: a gap, a late arrival or a duplicate."""
        prev = self.last.get(s, -1)
        if seq > prev:
            gap = self.missing.setdefault(s, set())
            if len(gap) + seq - prev < MISSING_LIMIT:
                gap.update(range(prev + 1, seq))
            self.last[s] = seq
            return
        gap = self.missing.get(s)
        if gap and seq in gap:
            gap.discard(seq)
            self.out_of_order += 1
        else:
            self.duplicates += 1

    def _other(self, f):
        name = f[0]
        if name == b"MSG" and len(f) >= 6 and f[3] == MARK_END:
            self.finals[f[4]] = int(f[5])
            if len(self.finals) >= self.markers:
                self.done.set()
        elif name == b"PONG" and len(f) == 2 and f[1].isdigit():
            self.pong = max(self.pong, int(f[1]))
            if self.pacer is not None:
                self.pacer.event.set()
        elif name == b"BYE":
            self.bye = b" ".join(f[1:]).decode(errors="replace")

    @property
    def unique(self):
        return self.count - self.duplicates


class CountingReceiver(Client):
    """Counts ``MSG`` lines with ``bytes.count`` only: no per-line Python work at all."""

    __slots__ = ("lines", "last_ns", "markers")

    #: One receive buffer shared by every counting receiver of a process: a greenlet fills it and
    #: counts it before it can yield, so no two use it at once.
    buffer = None

    def __init__(self, markers):
        super().__init__()
        self.lines = 0  #: ``MSG`` lines (data and end markers) since the barrier
        self.last_ns = 0
        self.markers = markers  #: end markers among those lines, once all have come

    def run(self):
        if CountingReceiver.buffer is None:
            CountingReceiver.buffer = bytearray(RECV_SIZE)
        buf = CountingReceiver.buffer
        recv_into = self.sock.recv_into
        clock = time.monotonic_ns
        pattern = b"\nMSG "
        # Up to 4 bytes before this chunk, for a "\nMSG " split across two reads. A line start
        # (framer holding nothing) counts as a "\n" before it.
        tail = b"" if self.framer.buffered else b"\n"
        self.framer = None
        try:
            while True:
                n = recv_into(buf)
                if not n:
                    self.closed = "eof"
                    return
                c = buf.count(pattern, 0, n)
                if tail:
                    c += (tail + buf[:4]).count(pattern)
                tail = bytes(buf[n - 4:n]) if n >= 4 else (tail + buf[:n])[-4:]
                if c:
                    self.lines += c
                    self.last_ns = clock()
        except OSError as err:
            self.closed = f"error: {err}"


class Pacer:
    """Wakes the senders blocked on their window when a checked client they pace on reads."""

    __slots__ = ("event", "waiting")

    def __init__(self):
        self.event = gevent.event.Event()
        self.waiting = 0  #: senders waiting; readers skip the wake-up while there are none

    def wait(self):
        self.waiting += 1
        try:
            self.event.wait(PACE_WAIT)
        finally:
            self.waiting -= 1


class Talker:
    """One sender's lines, said through a receiving client's socket and paced by a window.

    The client (checked or counting) goes on reading what the other senders say; the talker only
    writes. Its window is measured on ``pace``, checked clients in the same process; a talker
    with none (it is alone) paces on ``PING``/``PONG`` round trips, its own client being checked.
    """

    __slots__ = ("client", "index", "key", "sent", "pace", "pacer", "end_ns")

    def __init__(self, client, index, pacer):
        self.client = client
        self.pacer = pacer
        self.index = index
        self.key = str(index).encode()
        self.sent = 0
        self.end_ns = 0  #: when this sender stopped (its last line written, or its deadline)
        self.pace = ()

    def acked(self):
        """Highest seq of ours that every pace client has (or the server answered, without any)."""
        key = self.key
        if self.pace:
            return min(r.last.get(key, -1) for r in self.pace)
        return self.client.pong

    def say(self, cfg, t0, deadline):
        sendall = self.client.sock.sendall
        clock = time.monotonic_ns
        head = b"SEND L " + self.key + b" "
        header_len = len(head) + len(b"%d %d " % (cfg.messages, t0)) - len(b"SEND ")
        pad = b"x" * max(1, cfg.size - header_len)
        interval = int(1e9 / cfg.rate) if cfg.rate > 0 else 0
        # Senders start evenly staggered over one interval, so the room sees a steady stream.
        phase = interval * self.index // max(1, cfg.senders)
        seq = 0
        total = cfg.messages
        window = cfg.window
        use_ping = not self.pace
        try:
            while seq < total:
                now = clock()
                if now >= deadline:
                    break
                n = min(BATCH, total - seq, window - (seq - 1 - self.acked()))
                if interval:
                    due = (now - t0 - phase) // interval + 1 - seq
                    if due <= 0:
                        gevent.sleep(min((t0 + phase + seq * interval - now) / 1e9, 1.0))
                        continue
                    n = min(n, due)
                if n <= 0:
                    # Clear, look again, then wait: no wake-up is lost in between (greenlets
                    # switch only when one waits).
                    self.pacer.event.clear()
                    if window - (seq - 1 - self.acked()) <= 0:
                        self.pacer.wait()
                    continue
                stamp = b" %d " % now + pad + b"\n"
                batch = b"".join([head + b"%d" % i + stamp for i in range(seq, seq + n)])
                seq += n
                if use_ping:
                    batch += b"PING %d\n" % (seq - 1)
                sendall(batch)
                self.sent = seq
            sendall(b"SEND E " + self.key + b" %d\n" % seq)
        except OSError as err:
            self.client.closed = self.client.closed or f"error: {err}"
        finally:
            self.end_ns = clock()


# -- one process's share of the clients -----------------------------------------------------------


class Worker:
    """The clients of one process: connect them, run the talk, report what they saw."""

    def __init__(self, cfg):
        self.cfg = cfg
        if cfg.tls and TLS_CONTEXT is None:
            use_tls()
        n_recv, _ = cfg.share(cfg.receivers)
        n_send, first_sender = cfg.share(cfg.senders)
        n_idle, first_idle = cfg.share(cfg.idle)
        n_stalled, _ = cfg.share(cfg.stalled)
        # Every client in the room receives: the receivers, and the senders (the others' lines).
        # The checked ones are spread evenly over all of them.
        hearing = n_recv + n_send
        checks = hearing if cfg.check < 0 else min(hearing, max(1, cfg.check))
        checked_at = {round(j * hearing / checks) for j in range(checks)} if checks else set()
        self.hearing = []
        for i in range(hearing):
            markers = cfg.senders - (1 if i >= n_recv else 0)  # a sender hears all others' ends
            kind = CheckedReceiver if i in checked_at else CountingReceiver
            self.hearing.append(kind(markers))
        self.receivers = self.hearing[:n_recv]
        pacer = Pacer()
        self.talkers = [Talker(c, first_sender + k, pacer)
                        for k, c in enumerate(self.hearing[n_recv:])]
        self.checked = [c for c in self.hearing if type(c) is CheckedReceiver]
        self.counting = [c for c in self.hearing if type(c) is CountingReceiver]
        self.idle = [(Client(), f"idle-{first_idle + i}") for i in range(n_idle)]
        self.stalled = [Client() for _ in range(n_stalled)]
        for t in self.talkers:
            pace = [c for c in self.checked if c is not t.client]
            if len(pace) > PACE_SAMPLE:
                pace = [pace[round(j * len(pace) / PACE_SAMPLE)] for j in range(PACE_SAMPLE)]
            t.pace = pace  # empty only when t's own client is the one checked client
            for c in pace or [t.client]:
                c.pacer = pacer
        self.readers = []
        self.connect_seconds = 0.0
        self.stalled_dropped = 0
        self.cpu_seconds = 0.0  #: CPU this process used from the start until drained
        self.idle_alive = 0  #: idle clients that answered a PING at the end
        self.idle_heard = 0  #: lines other than that PONG that idle clients had received

    @property
    def clients(self):
        return len(self.hearing) + len(self.idle) + len(self.stalled)

    def sources(self):
        """Source address for each of this process's connections, spread over --source-addrs."""
        k = max(1, self.cfg.source_addrs)
        if k == 1:
            while True:
                yield None
        n = self.cfg.index
        while True:
            yield f"127.0.0.{1 + n % k}"
            n += self.cfg.procs

    def connect(self):
        """Connect every client (idle ones first), at most CONNECT_CONCURRENCY at once."""
        cfg = self.cfg
        started = time.monotonic()
        pool = Pool(CONNECT_CONCURRENCY)
        source = self.sources()
        jobs = [(c, room) for c, room in self.idle]
        jobs += [(c, cfg.room) for c in self.stalled + self.hearing]
        failures = []

        def one(client, room, src):
            try:
                client.connect(cfg.host, cfg.port, src, room)
            except Exception as err:  # noqa: BLE001 - reported, and the run stops
                failures.append(f"{type(err).__name__}: {err}")
                return
            if isinstance(client, CheckedReceiver | CountingReceiver):
                self.readers.append(gevent.spawn(client.run))

        for client, room in jobs:
            if failures:
                break
            pool.spawn(one, client, room, next(source))
        if not pool.join(timeout=SETUP_TIMEOUT):
            pool.kill(block=False)
            failures.append(f"setup not done within {SETUP_TIMEOUT:g} s")
        if failures:
            self.close()
            raise SetupError(f"{len(failures)} of {len(jobs)} clients failed to connect or join "
                             f"(first: {failures[0]})")
        self.connect_seconds = time.monotonic() - started

    def run(self, t0, on_drained=None):
        """Senders talk from ``t0`` (monotonic ns) until done or the duration; receivers drain.

        ``on_drained()`` is called once every line is in (or the drain gave up), before the
        checks of stalled and idle clients that end a run.
        """
        cfg = self.cfg
        cpu = own_cpu()
        deadline = t0 + int(cfg.duration * 1e9)
        talking = [gevent.spawn(t.say, cfg, t0, deadline) for t in self.talkers]
        gevent.joinall(talking, timeout=max(0.0, (deadline - time.monotonic_ns()) / 1e9) + 1.0)
        self._drain()
        self.cpu_seconds = own_cpu() - cpu
        if on_drained is not None:
            on_drained()
        self.stalled_dropped = sum(1 for c in self.stalled if _drained_to_eof(c.sock))
        self._check_idle()

    def _drain(self):
        """Wait for lines in flight: until all arrived, or none for DRAIN_SECONDS, or DRAIN_LIMIT."""
        clock = time.monotonic
        hard_end = clock() + DRAIN_LIMIT
        seen = -1
        quiet_since = clock()
        while clock() < hard_end:
            if all(c.done.is_set() for c in self.checked if c.closed is None):
                total = self._total_sent()
                if total is not None and all(
                        c.lines >= self._expected_data(c, total) + c.markers
                        for c in self.counting if c.closed is None):
                    return
            delivered = self.progress()["delivered"]
            if delivered != seen:
                seen = delivered
                quiet_since = clock()
            elif clock() - quiet_since > DRAIN_SECONDS:
                return
            gevent.sleep(DRAIN_POLL)

    def _check_idle(self):
        """A PING round trip on every idle client: still connected, and heard nothing else?"""
        pool = Pool(CONNECT_CONCURRENCY)
        answers = pool.map(_idle_round_trip, [c for c, _ in self.idle])
        self.idle_alive = sum(1 for heard in answers if heard is not None)
        self.idle_heard = sum(heard for heard in answers if heard)

    def _total_sent(self):
        """Lines all senders (in every process) sent, once every end marker is known, else None."""
        finals = {}
        for c in self.checked:
            finals.update(c.finals)
        for t in self.talkers:
            finals[t.key] = t.sent
        return sum(finals.values()) if len(finals) >= self.cfg.senders else None

    def _expected_data(self, client, total):
        """Data lines ``client`` should hear: everything sent, less its own if it is a sender."""
        own = next((t.sent for t in self.talkers if t.client is client), 0)
        return total - own

    def progress(self):
        return {
            "sent": sum(t.sent for t in self.talkers),
            "delivered": sum(c.count for c in self.checked)
            + sum(max(0, c.lines - c.markers) for c in self.counting),
        }

    def result(self):
        """This process's figures as plain data (JSON-able), for merging."""
        total = self._total_sent()
        counted = 0
        extra = 0
        for c in self.counting:
            data = max(0, c.lines - c.markers)
            expected = self._expected_data(c, total) if total is not None else data
            counted += min(data, expected)
            extra += max(0, data - expected)
        checked = self.checked
        hist = collections.Counter(map(_bucket, _all_latencies(checked)))
        closed = collections.Counter(c.closed for c in self.hearing if c.closed is not None)
        return {
            "sent": sum(t.sent for t in self.talkers),
            "delivered": sum(c.unique for c in checked) + counted,
            "duplicates": sum(c.duplicates for c in checked) + extra,
            "out_of_order": sum(c.out_of_order for c in checked),
            "checked": len(checked),
            "last_ns": max((c.last_ns for c in self.hearing), default=0),
            "senders_end_ns": max((t.end_ns for t in self.talkers), default=0),
            "latency_hist": {str(k): v for k, v in hist.items()},
            "latency_max_ns": max((max(c.latencies) for c in checked if c.latencies), default=0),
            "latency_sum_ns": sum(sum(c.latencies) for c in checked),
            "disconnected": dict(closed),
            "stalled_dropped": self.stalled_dropped,
            "idle_alive": self.idle_alive,
            "idle_heard": self.idle_heard,
            "connect_seconds": self.connect_seconds,
            "cpu_seconds": self.cpu_seconds,
        }

    def close(self):
        gevent.killall(self.readers, block=False)
        for c in self.hearing + self.stalled:
            c.close()
        for c, _ in self.idle:
            c.close()


def _all_latencies(receivers):
    for r in receivers:
        yield from r.latencies


def _bucket(ns):
    """Latency histogram bucket: microseconds to 3 significant digits (exact below 1 ms)."""
    us = max(0, ns) // 1000
    if us < 1000:
        return us
    digits = len(str(us)) - 3
    return us // 10 ** digits * 10 ** digits


def _idle_round_trip(client):
    """PING an idle client; None if it is gone, else how many other lines came before the PONG."""
    sock = client.sock
    heard = 0
    try:
        sock.settimeout(IDLE_CHECK_TIMEOUT)
        sock.sendall(b"PING idle\n")
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                return None
            for line in client.framer.feed(data):
                if line == b"PONG idle":
                    return heard
                heard += 1
    except OSError:
        return None


def _drained_to_eof(sock):
    """Read a stalled client's backlog, bounded; True if the server had closed it (EOF)."""
    end = time.monotonic() + STALLED_DRAIN_SECONDS
    got = 0
    try:
        while got < STALLED_DRAIN_BYTES:
            left = end - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            data = sock.recv(RECV_SIZE)
            if not data:
                return True
            got += len(data)
    except socket.timeout:
        return False
    except OSError:
        return True
    return False


# -- merging and reporting ------------------------------------------------------------------------


def percentile(hist, q):
    """The ``q`` quantile (0..1) of a {bucket_us: count} histogram, in microseconds."""
    total = sum(hist.values())
    if not total:
        return 0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket
    return max(hist)


def merge(cfg, t0, parts, watch):
    """One result from the workers' ``parts`` and the :class:`ServerWatch` ``watch``."""
    sent = sum(p["sent"] for p in parts)
    delivered = sum(p["delivered"] for p in parts)
    expected = cfg.receivers * sent + max(0, cfg.senders - 1) * sent
    hist = collections.Counter()
    for p in parts:
        hist.update({int(k): v for k, v in p["latency_hist"].items()})
    samples = sum(hist.values())
    # The run took until the last line arrived, or, when the senders were cut off by the
    # duration (a stalled server), until they stopped: whichever is later.
    last_ns = max((p["last_ns"] for p in parts), default=0)
    if sent and delivered < expected:
        last_ns = max([last_ns] + [p["senders_end_ns"] for p in parts])
    elapsed = (last_ns - t0) / 1e9 if last_ns > t0 else 0.0
    disconnected = collections.Counter()
    for p in parts:
        disconnected.update(p["disconnected"])
    lat_sum = sum(p["latency_sum_ns"] for p in parts)
    server_cpu, wall = watch.busy()
    load_cpu = sum(p["cpu_seconds"] for p in parts)
    return {
        "server": {"host": cfg.host, "port": cfg.port},
        "room": cfg.room,
        "clients": {"receivers": cfg.receivers, "senders": cfg.senders, "idle": cfg.idle,
                    "stalled": cfg.stalled, "total": cfg.receivers + cfg.senders + cfg.idle + cfg.stalled,
                    "checked": sum(p["checked"] for p in parts)},
        "procs": cfg.procs,
        "messages_per_sender": cfg.messages,
        "rate_per_sender": cfg.rate,
        "size": cfg.size,
        "window": cfg.window,
        "duration_limit": cfg.duration,
        "connect_seconds": round(max(p["connect_seconds"] for p in parts), 3),
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "lost": max(0, expected - delivered),
        "duplicates": sum(p["duplicates"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "elapsed_seconds": round(elapsed, 4),
        "delivered_per_sec": round(delivered / elapsed, 1) if elapsed else 0.0,
        "sent_per_sec": round(sent / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": percentile(hist, 0.50) / 1000,
            "p90": percentile(hist, 0.90) / 1000,
            "p99": percentile(hist, 0.99) / 1000,
            "max": max((p["latency_max_ns"] for p in parts), default=0) / 1e6,
            "mean": round(lat_sum / samples / 1e6, 3) if samples else 0.0,
            "samples": samples,
        },
        "disconnected": sum(disconnected.values()),
        "disconnect_reasons": dict(disconnected),
        "stalled_dropped": sum(p["stalled_dropped"] for p in parts),
        "idle_alive": sum(p["idle_alive"] for p in parts),
        "idle_heard": sum(p["idle_heard"] for p in parts),
        "server_rss_kib": watch.rss_result(),
        # CPU used from the start of the talk until every line was in, as a share of that
        # wall time: the server's of one core, the generator's of its --procs processes.
        "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
        "server_cpu_share": round(server_cpu / wall, 3) if server_cpu is not None and wall else None,
        "load_cpu_seconds": round(load_cpu, 2),
        "load_cpu_share": round(load_cpu / wall / cfg.procs, 3) if wall else None,
    }


def read_rss(pid):
    """VmRSS and VmHWM of process ``pid`` in KiB, from /proc (None where unavailable)."""
    if not pid:
        return None, None
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def read_cpu(pid):
    """CPU seconds (user + system) process ``pid`` has used, from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerWatch:
    """The server's RSS and CPU time at the moments a run cares about.

    Named samples: ``baseline`` (before any client), ``connected`` (after the barrier, when the
    clock starts), ``drained`` (every line in), ``end``; the RSS peak is sampled as the run goes.
    """

    def __init__(self, pid):
        self.pid = pid
        self.rss = {}
        self.cpu = {}
        self.at = {}
        self.peak = None

    def sample(self, name=None):
        if not self.pid:
            return
        rss, _ = read_rss(self.pid)
        if rss is None:
            return
        if name:
            self.rss[name] = rss
            self.cpu[name] = read_cpu(self.pid)
            self.at[name] = time.monotonic()
        self.peak = max(self.peak or 0, rss)

    def rss_result(self):
        if not self.rss:
            return None
        out = dict(self.rss)
        out["peak"] = self.peak
        out["hwm"] = read_rss(self.pid)[1]
        return out

    def busy(self):
        """(server CPU seconds, wall seconds) from the start of the talk until every line was in."""
        try:
            return (self.cpu["drained"] - self.cpu["connected"],
                    self.at["drained"] - self.at["connected"])
        except (KeyError, TypeError):
            return None, None


def own_cpu():
    """CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib is not None else "?"


def format_summary(r):
    """The human-readable report of one merged result."""
    c = r["clients"]
    lat = r["latency_ms"]
    lines = [
        f"chat-load: {c['receivers']:,} receivers + {c['senders']:,} senders in room '{r['room']}'"
        + (f", {c['idle']:,} idle" if c["idle"] else "")
        + (f", {c['stalled']:,} stalled" if c["stalled"] else "")
        + f" on {r['server']['host']}:{r['server']['port']} ({r['procs']} process"
        + ("es)" if r["procs"] > 1 else ")"),
        f"  connect     {c['total']:,} clients in {r['connect_seconds']:.2f} s",
        f"  sent        {r['sent']:,} messages ({r['sent_per_sec']:,.0f} msg/s)",
        f"  delivered   {r['delivered']:,} of {r['expected']:,} "
        f"({r['delivered_per_sec']:,.0f} msg/s over {r['elapsed_seconds']:.2f} s)",
        f"  latency     p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms  "
        f"max {lat['max']:.2f} ms  ({lat['samples']:,} samples from {c['checked']:,} checked clients)",
        f"  problems    lost {r['lost']:,}, duplicates {r['duplicates']:,}, "
        f"out of order {r['out_of_order']:,}, disconnected {r['disconnected']:,}"
        + (f" {r['disconnect_reasons']}" if r["disconnected"] else ""),
    ]
    if c["stalled"]:
        lines.append(f"  stalled     {r['stalled_dropped']} of {c['stalled']} dropped by the server")
    if c["idle"]:
        lines.append(f"  idle        {r['idle_alive']:,} of {c['idle']:,} still connected at the end, "
                     f"{r['idle_heard']:,} lines heard")
    rss = r.get("server_rss_kib")
    if rss:
        lines.append(
            f"  server RSS  {_mib(rss.get('baseline'))} before clients, {_mib(rss.get('connected'))} "
            f"connected, {_mib(rss.get('end'))} at the end, peak {_mib(rss.get('peak'))}")
    if r.get("server_cpu_share") is not None:
        lines.append(f"  CPU         server {r['server_cpu_share']:.0%} of a core, load generator "
                     f"{r['load_cpu_share']:.0%} of {r['procs']} (until every line was in)")
    return "\n".join(lines)


# -- a server to test against ---------------------------------------------------------------------


class ServerProcess:
    """A server command as a subprocess: waits for ``Listening on HOST:PORT``, drains its output.

    Output is read by a thread so the server never blocks on a full pipe; lines saying
    ``Dropped`` are counted and the last lines kept for error reports.
    """

    LISTENING = re.compile(r"Listening on \[?([^\]\s]+?)\]?:(\d+)")

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self.pid = self.proc.pid
        self.tail = collections.deque(maxlen=SERVER_TAIL_LINES)
        self.dropped = 0
        self._listening = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        try:
            self.host, self.port = self._listening.get(timeout=SERVER_START_TIMEOUT)
        except queue.Empty:
            self.stop()
            raise SetupError("server printed no 'Listening on HOST:PORT'; output:\n" + self.output())
        if self.host is None:
            self.stop()
            raise SetupError("server exited before listening; output:\n" + self.output())

    def _read(self):
        told = False
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if not told:
                m = self.LISTENING.search(line)
                if m:
                    self._listening.put((m.group(1), int(m.group(2))))
                    told = True
            if "Dropped " in line:
                self.dropped += 1
        if not told:
            self._listening.put((None, None))

    def output(self):
        return "\n".join(self.tail)

    def stop(self):
        """SIGTERM, wait (bounded), then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(SERVER_STOP_TIMEOUT)
        self._thread.join(SERVER_STOP_TIMEOUT)
        return self.proc.returncode


def chat_server_command(*extra):
    """``bin/chat-server`` on a free port with the limits a load run must not trip switched off."""
    return [sys.executable, os.path.join(ROOT, "bin", "chat-server"), "--port", "0",
            "--flood-rate", "0", "--max-per-ip", "0", *extra]


# -- running: in this process, or over worker processes -------------------------------------------


class Progress:
    """The live progress line, on a terminal only."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.started = time.monotonic()
        self.prev = (self.started, 0)

    def show(self, sent, delivered):
        if not self.enabled:
            return
        now = time.monotonic()
        t, d = self.prev
        rate = (delivered - d) / (now - t) if now > t else 0.0
        self.prev = (now, delivered)
        sys.stdout.write(f"\r[{now - self.started:6.1f} s] sent {sent:,}  delivered {delivered:,}"
                         f"  ({rate:,.0f} msg/s)\033[K")
        sys.stdout.flush()

    def clear(self):
        if self.enabled:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()


def run_in_process(cfg, watch, progress):
    """Run every client in this process; returns the merged result."""
    worker = Worker(cfg)
    watch.sample("baseline")
    try:
        worker.connect()
        watch.sample("connected")
        t0 = time.monotonic_ns()
        progress.started = time.monotonic()

        def tick():
            while True:
                gevent.sleep(PROGRESS_INTERVAL)
                watch.sample()
                p = worker.progress()
                progress.show(p["sent"], p["delivered"])

        ticker = gevent.spawn(tick)
        try:
            worker.run(t0, on_drained=lambda: watch.sample("drained"))
        finally:
            ticker.kill()
        watch.sample("end")
        return merge(cfg, t0, [worker.result()], watch)
    finally:
        worker.close()
        progress.clear()


class WorkerProcess:
    """One worker subprocess: JSON lines from its stdout go to a shared queue."""

    def __init__(self, cfg, events):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "chatroom.load", "--worker", json.dumps(dataclasses.asdict(cfg))]
        self.index = cfg.index
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                                     env=env, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events):
        for line in self.proc.stdout:
            try:
                events.put((self.index, json.loads(line)))
            except ValueError:
                sys.stderr.write(line)
        events.put((self.index, {"event": "exit", "code": self.proc.wait()}))

    def tell(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def stop(self):
        try:
            self.proc.wait(WORKER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_in_workers(cfg, watch, progress):
    """Split the clients over ``cfg.procs`` worker processes; start them together; merge."""
    events = queue.Queue()
    watch.sample("baseline")
    workers = [WorkerProcess(dataclasses.replace(cfg, index=i), events) for i in range(cfg.procs)]
    try:
        ready = {}
        deadline = time.monotonic() + SETUP_TIMEOUT + 10
        while len(ready) < len(workers):
            index, ev = _next_event(events, deadline, "worker setup")
            if ev["event"] == "ready":
                ready[index] = ev
            elif ev["event"] in ("error", "exit"):
                raise SetupError(f"worker {index}: {ev.get('error') or 'exited with ' + str(ev.get('code'))}")
        watch.sample("connected")
        t0 = time.monotonic_ns()
        progress.started = time.monotonic()
        for w in workers:
            w.tell(f"go {t0}")
        results = {}
        latest = {}
        drained = set()
        deadline = time.monotonic() + cfg.duration + DRAIN_LIMIT + WORKER_FINISH_SLACK
        while len(results) < len(workers):
            index, ev = _next_event(events, deadline, "worker results")
            if ev["event"] == "progress":
                latest[index] = ev
                if index == 0:
                    watch.sample()
                    progress.show(sum(p["sent"] for p in latest.values()),
                                  sum(p["delivered"] for p in latest.values()))
            elif ev["event"] == "drained":
                drained.add(index)
                if len(drained) == len(workers):
                    watch.sample("drained")
            elif ev["event"] == "result":
                results[index] = ev["result"]
                watch.sample("end")
            elif ev["event"] == "error" or (ev["event"] == "exit" and index not in results):
                raise SetupError(f"worker {index}: {ev.get('error') or 'exited with ' + str(ev.get('code'))}")
        return merge(cfg, t0, list(results.values()), watch)
    finally:
        for w in workers:
            w.tell("stop")
        for w in workers:
            w.stop()
        progress.clear()


def _next_event(events, deadline, what):
    left = deadline - time.monotonic()
    try:
        return events.get(timeout=max(0.01, left))
    except queue.Empty:
        raise SetupError(f"{what} did not finish in time") from None


def worker_main(cfg_json):
    """Hidden ``--worker`` mode: connect, say ready, wait for ``go T0``, run, print the result."""
    cfg = Config(**json.loads(cfg_json))
    raise_nofile_limit()

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    worker = Worker(cfg)
    try:
        try:
            worker.connect()
        except SetupError as err:
            emit({"event": "error", "error": str(err)})
            return 2
        emit({"event": "ready", "clients": worker.clients})
        fd = sys.stdin.fileno()
        wait_read(fd, timeout=SETUP_TIMEOUT + 10)
        line = os.read(fd, 1024).decode().split()
        if len(line) != 2 or line[0] != "go":
            return 2
        t0 = int(line[1])

        def tick():
            while True:
                gevent.sleep(PROGRESS_INTERVAL)
                emit({"event": "progress", **worker.progress()})

        ticker = gevent.spawn(tick)
        try:
            worker.run(t0, on_drained=lambda: emit({"event": "drained"}))
        finally:
            ticker.kill()
        emit({"event": "result", "result": worker.result()})
        return 0
    finally:
        worker.close()


def raise_nofile_limit():
    """Raise the open-files soft limit to the hard limit (as the server does); (before, after)."""
    before, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return before, sockets.raise_nofile_limit()


def build_parser():
    p = argparse.ArgumentParser(
        prog="chat-load",
        description="Load generator: receivers and senders in one room; reports throughput, "
                    "latency, loss, duplicates and order.")
    a = p.add_argument
    a("--host", default=None, help="server address (default 127.0.0.1)")
    a("--port", type=int, default=None, help="server port (default 7777)")
    a("--spawn-server", action="store_true",
      help="start bin/chat-server on a free port (flood limit and per-IP limit off) and stop it after")
    a("--server-pid", type=int, default=0, help="PID of the server, to report its RSS")
    a("--room", default="load", help="room every client joins (default %(default)s)")
    a("--receivers", type=int, default=10, help="reading clients (default %(default)s)")
    a("--senders", type=int, default=1, help="talking clients, also in the room (default %(default)s)")
    a("--messages", type=int, default=1000, help="lines per sender (default %(default)s)")
    a("--duration", type=float, default=DEFAULT_DURATION,
      help="seconds the senders may send, a hard cap (default %(default)s)")
    a("--rate", type=float, default=0.0,
      help="lines a second per sender, 0 = as fast as the window allows (default %(default)s)")
    a("--size", type=int, default=DEFAULT_SIZE, help="bytes of text per line (default %(default)s)")
    a("--window", type=int, default=DEFAULT_WINDOW,
      help="lines a sender may have in flight beyond its slowest checked receiver (default %(default)s)")
    a("--check", default=str(DEFAULT_CHECK),
      help="receivers per process that verify and time every line, 'all' for all; the rest "
           "only count lines (default %(default)s)")
    a("--idle", type=int, default=0, help="extra connected, silent clients, each in a room of its own")
    a("--stalled", type=int, default=0, help="extra receivers in the room that never read")
    a("--source-addrs", type=int, default=1,
      help="spread clients over source addresses 127.0.0.1..127.0.0.K (default %(default)s)")
    a("--procs", type=int, default=1, help="worker processes to split the clients over (default %(default)s)")
    a("--tls", action="store_true",
      help="connect over TLS (point --port at the server's --tls-port); the certificate is not checked")
    a("--json", action="store_true", help="print the result as one JSON object")
    a("--worker", help=argparse.SUPPRESS)
    return p


def config_from_args(args):
    check = -1 if args.check == "all" else int(args.check)
    cfg = Config(
        host=args.host or settings.DEFAULT_HOST,
        port=args.port if args.port is not None else settings.DEFAULT_PORT,
        room=args.room, receivers=args.receivers, senders=args.senders, idle=args.idle,
        stalled=args.stalled, messages=args.messages, duration=args.duration, rate=args.rate,
        size=args.size, window=args.window, check=check, source_addrs=args.source_addrs,
        procs=max(1, args.procs), tls=args.tls)
    for name in ("receivers", "senders", "idle", "stalled", "messages"):
        if getattr(cfg, name) < 0:
            raise SystemExit(f"chat-load: --{name} must not be negative")
    if not 1 <= cfg.source_addrs <= 254:
        raise SystemExit("chat-load: --source-addrs must be 1 to 254 (127.0.0.1 .. 127.0.0.254)")
    if cfg.window < 1 or cfg.duration <= 0 or cfg.size < 1:
        raise SystemExit("chat-load: --window, --duration and --size must be positive")
    return cfg


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    cfg = config_from_args(args)
    before, after = raise_nofile_limit()
    if after != before:
        print(f"chat-load: open-files limit raised from {before} to {after}", file=sys.stderr)
    per_proc = -(-(cfg.receivers + cfg.senders + cfg.idle + cfg.stalled) // cfg.procs)
    if per_proc + FD_RESERVE > after:
        print(f"chat-load: {per_proc:,} clients per process do not fit the open-files limit "
              f"({after}); use more --procs", file=sys.stderr)
        return 2
    server = None
    try:
        if args.spawn_server:
            server = ServerProcess(chat_server_command("--host", cfg.host))
            cfg.port = server.port
        pid = server.pid if server else args.server_pid
        progress = Progress(sys.stdout.isatty())
        watch = ServerWatch(pid)
        runner = run_in_workers if cfg.procs > 1 else run_in_process
        result = runner(cfg, watch, progress)
        if server is not None:
            result["server_dropped"] = server.dropped
            result["server"]["pid"] = server.pid
    except SetupError as err:
        print(f"chat-load: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

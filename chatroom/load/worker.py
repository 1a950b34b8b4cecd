"""One process's share of the clients: connect them, run the talk, drain, and report the figures."""

import collections
import resource
import time

import gevent
from gevent import socket
from gevent.pool import Pool

from . import clients as sockets_module
from .clients import CheckedReceiver, Client, CountingReceiver, Pacer, Talker
from .config import DRAIN_LIMIT, DRAIN_SECONDS, RECV_SIZE, SETUP_TIMEOUT, SetupError
from .irc import IrcCheckedReceiver, IrcClient, IrcCountingReceiver

#: For each ``--protocol``: the classes of (a client that only joins, a checked receiver, a
#: counting receiver).
PROTOCOLS = {
    "native": (Client, CheckedReceiver, CountingReceiver),
    "irc": (IrcClient, IrcCheckedReceiver, IrcCountingReceiver),
}

#: Idle clients' closing PING round trips in flight at once per process.
ROUND_TRIPS_IN_FLIGHT = 200
#: Seconds between looks at the receivers' progress while draining.
DRAIN_POLL = 0.05
#: Most checked receivers a sender looks at for its window (evenly spread over them).
PACE_SAMPLE = 16
#: At the end, bytes and seconds spent reading a stalled receiver's backlog to learn whether the
#: server dropped it (an EOF after the backlog) or still holds it.
STALLED_DRAIN_BYTES = 64 * 1024 * 1024
STALLED_DRAIN_SECONDS = 2.0
#: Seconds an idle client may take to answer the PING that checks it at the end of a run.
IDLE_CHECK_TIMEOUT = 10.0


class Worker:
    """The clients of one process: connect them, run the talk, report what they saw."""

    def __init__(self, cfg):
        self.cfg = cfg
        if cfg.tls and sockets_module.TLS_CONTEXT is None:
            sockets_module.use_tls()
        sockets_module.WEB_SOCKET = cfg.transport == "ws"
        joiner, checked, counting = PROTOCOLS[cfg.protocol]
        n_recv, first_recv = cfg.share(cfg.receivers)
        n_send, first_sender = cfg.share(cfg.senders)
        n_idle, first_idle = cfg.share(cfg.idle)
        n_stalled, first_stalled = cfg.share(cfg.stalled)
        # Every client in the room receives: the receivers, and the senders (the others' lines).
        # The checked ones are spread evenly over all of them.
        hearing = n_recv + n_send
        checks = hearing if cfg.check < 0 else min(hearing, max(1, cfg.check))
        checked_at = {round(j * hearing / checks) for j in range(checks)} if checks else set()
        self.hearing = []
        for i in range(hearing):
            markers = cfg.senders - (1 if i >= n_recv else 0)  # a sender hears all others' ends
            kind = checked if i in checked_at else counting
            self.hearing.append(kind(markers))
        self.receivers = self.hearing[:n_recv]
        pacer = Pacer()
        self.talkers = [Talker(c, first_sender + k, pacer)
                        for k, c in enumerate(self.hearing[n_recv:])]
        self.checked = [c for c in self.hearing if isinstance(c, CheckedReceiver)]
        self.counting = [c for c in self.hearing if isinstance(c, CountingReceiver)]
        self.idle = [(joiner(), f"idle-{first_idle + i}") for i in range(n_idle)]
        self.stalled = [joiner() for _ in range(n_stalled)]
        # A name for each client, unique over every process (IRC nicknames): its number among
        # all clients, counted receivers, senders, idle, stalled.
        r, s, i = cfg.receivers, cfg.senders, cfg.idle
        numbers = ([first_recv + k for k in range(n_recv)] + [r + first_sender + k for k in range(n_send)]
                   + [r + s + first_idle + k for k in range(n_idle)]
                   + [r + s + i + first_stalled + k for k in range(n_stalled)])
        clients = self.hearing + [c for c, _ in self.idle] + self.stalled
        self.names = {c: f"l{n}" for c, n in zip(clients, numbers, strict=True)}
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
        """Connect every client (idle ones first), at most ``CONNECTS_IN_FLIGHT`` at once."""
        cfg = self.cfg
        started = time.monotonic()
        pool = Pool(PROTOCOLS[cfg.protocol][0].CONNECTS_IN_FLIGHT)
        source = self.sources()
        jobs = [(c, room) for c, room in self.idle]
        jobs += [(c, cfg.room) for c in self.stalled + self.hearing]
        failures = []

        oper = tuple(cfg.irc_oper.split(":", 1)) if cfg.irc_oper else None
        talking = {t.client for t in self.talkers}

        def one(client, room, src):
            try:
                client.connect(cfg.host, cfg.port, src, room, self.names[client],
                               oper if client in talking else None)
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
        pool = Pool(ROUND_TRIPS_IN_FLIGHT)
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
        sock.sendall(client.ping(b"idle"))
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                return None
            for line in client.framer.feed(data):
                if client.pong_token(line) == b"idle":
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


def own_cpu():
    """CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

"""The socket clients of a load run: connect and join, check or count what arrives, say lines.

:class:`Client` connects and passes the start barrier; :class:`CheckedReceiver` frames every line
and checks order, loss and duplicates and records latency; :class:`CountingReceiver` only counts
lines, in C; :class:`Talker` says one sender's lines through a client's socket, paced by a window
on the checked receivers (:class:`Pacer` wakes it when they read).
"""

import array
import time

import gevent
import gevent.event
from gevent import socket

from ..codec.lines import LineFramer
from . import ws
from .config import RECV_SIZE, SETUP_TIMEOUT, SetupError

#: Set by :func:`use_tls` (``--tls``): a client context that encrypts but does not check the
#: certificate (a load tool measures the cost of TLS, not whom it trusts).
TLS_CONTEXT = None


def use_tls():
    global TLS_CONTEXT
    import ssl

    import gevent.ssl

    TLS_CONTEXT = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    TLS_CONTEXT.check_hostname = False
    TLS_CONTEXT.verify_mode = ssl.CERT_NONE


#: Set by the worker for ``--transport ws``: each client connects to the web listener, upgrades to
#: a WebSocket and speaks through :class:`.ws.WebSocket`, which frames and unframes its lines.
WEB_SOCKET = False

#: Seconds one TCP connect may take.
CONNECT_TIMEOUT = 10.0
#: Longest a window-blocked sender waits before it looks at its receivers' progress again (it
#: is woken as soon as a checked receiver reads anything, so this only bounds a missed wake-up).
PACE_WAIT = 0.05
#: Most lines a sender writes in one sendall.
BATCH = 16
#: Gaps (missing sequence numbers) remembered per checked receiver to tell late from duplicate.
MISSING_LIMIT = 100_000

PING_READY = b"PING ready\n"
PONG_READY = b"PONG ready"
MARK_DATA = b"L"
MARK_END = b"E"


class Client:
    """One connection: connect (from a chosen source address), join a room, pass the barrier.

    This class speaks the native protocol; :mod:`.irc` has the same clients speaking IRC. What
    differs is the handshake (:meth:`handshake`) and the dialect below: how a sender frames its
    text, and where a received line says it is a data line (``MSG <room> <from> L ...``: field 0
    is ``MSG``, field 3 the data mark; an IRC ``:from PRIVMSG #room :L ...`` has ``PRIVMSG`` in
    field 1 and ``:L`` in field 3, so the checked receivers' loop is the same for both).
    """

    __slots__ = ("sock", "id", "framer", "closed")

    #: Connects (and their handshakes) in flight at once per process: far below the server's
    #: listen backlog (1024), so a connect storm never overflows it and costs a SYN retry of a
    #: second or more.
    CONNECTS_IN_FLIGHT = 200
    #: The line end a client writes.
    EOL = b"\n"
    #: A received line of a sender's, split on its first 7 spaces: ``f[KIND_AT] == KIND``, and
    #: ``f[3]`` is ``DATA_FIELD`` for a data line or ``END_FIELD`` for an end marker (the text's
    #: first word: :data:`MARK_DATA` or :data:`MARK_END`). The sender's key, the sequence number
    #: (or, in an end marker, the count) and the send time follow in fields 4 to 6.
    KIND_AT = 0
    KIND = b"MSG"
    DATA_FIELD = MARK_DATA
    END_FIELD = MARK_END

    def __init__(self):
        self.sock = None
        self.id = None
        self.framer = None
        self.closed = None  #: why the connection ended, once it has

    def connect(self, host, port, source, room, name=None, oper=None):
        """Connect, join ``room`` and pass the barrier. ``name`` is the nickname and ``oper`` the
        ``(name, password)`` to become an IRC operator with, where the protocol has them."""
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
            if WEB_SOCKET:
                sock = ws.upgrade(sock, host, port)
            self.framer = self.handshake(sock, room, name, oper)
            sock.settimeout(None)
            self.sock = sock
        except BaseException:
            sock.close()
            raise

    def handshake(self, sock, room, name, oper):
        """Join ``room``, then a ``PING``/``PONG`` round trip; returns the framer (it may hold the
        start of a line that came after)."""
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
                    return framer
                elif line.startswith((b"BYE ", b"ERR ")):
                    raise SetupError(f"server said {line.decode(errors='replace')!r} during setup")

    def say_prefix(self, room):
        """What a sender writes before the text of a line to ``room``."""
        return b"SEND "

    def ping(self, token):
        """A ``PING`` line whose answer carries ``token`` (bytes)."""
        return b"PING " + token + self.EOL

    def pong_token(self, line):
        """The token of a ``PONG`` line, or None for any other line."""
        return line[5:] if line.startswith(b"PONG ") else None

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
        kind_at, kind, mark = self.KIND_AT, self.KIND, self.DATA_FIELD
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
                    if len(f) == 8 and f[3] == mark and f[kind_at] == kind:
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
                    c += (tail + buf[:min(n, 4)]).count(pattern)
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
        client = self.client
        sendall = client.sock.sendall
        clock = time.monotonic_ns
        say, eol = client.say_prefix(cfg.room), client.EOL
        head = say + MARK_DATA + b" " + self.key + b" "
        header_len = len(head) + len(b"%d %d " % (cfg.messages, t0)) - len(say)
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
                stamp = b" %d " % now + pad + eol
                batch = b"".join([head + b"%d" % i + stamp for i in range(seq, seq + n)])
                seq += n
                if use_ping:
                    batch += client.ping(b"%d" % (seq - 1))
                sendall(batch)
                self.sent = seq
            sendall(say + MARK_END + b" " + self.key + b" %d" % seq + eol)
        except OSError as err:
            client.closed = client.closed or f"error: {err}"
        finally:
            self.end_ns = clock()

"""The transport: listening sockets, every client's socket, and the bytes between them and the registry.

One :class:`ChatServer` owns the registry's hooks, every connected :class:`Client` and the limits
they share; each :class:`Listener` (a ``gevent.server.StreamServer``) owns one listening socket and
the kind of client it accepts (the native protocol, IRC). Greenlets run only while there is work:
a reader while bytes have arrived, a writer while the client's socket is full. Bytes flow one way::

    socket -> framer -> client.run_line -> Registry -> member outboxes -> flush -> socket

Writing is coalesced: the registry appends frames to outboxes and marks them ready; once per
turn of the event loop a single callback (:meth:`ChatServer._flush`) joins each ready outbox into
one buffer and does one non-blocking ``send``, for at most :data:`FLUSH_SLICE` clients: the rest
wait for the next turn, after the loop has polled and read again, so a line that arrives while a
big room's fan-out is going out joins the outboxes not yet sent. Only when the kernel will not
take it all does a writer greenlet start for that client, wait for the socket to drain (bounded
by the send deadline and the soft outbox limit), and exit when the outbox is empty.
"""

import gc
import logging
import socket
import time
from collections import Counter

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import wait_write
from greenlet import greenlet

from .. import settings
from ..codec.lines import LineTooLong
from ..codec.native import format_addr
from ..core.registry import Registry
from .sockets import BACKLOG, tune_socket
from .tls import WOULD_BLOCK, handshake, make_context

log = logging.getLogger("chatroom.server")

#: Most bytes asked of the kernel per recv: big reads let one wake-up frame many lines at once.
#: Capped at an eighth of the outbox limit, as one read's lines fan out to every recipient's
#: outbox before the next flush (a MSG line is at most a few times its SEND line).
RECV_SIZE = 65536
#: Bytes joined from an outbox for one send. Joining a client's whole backlog at once would copy
#: megabytes the kernel cannot take yet (its socket buffer is a few hundred KiB at most).
SEND_CHUNK = 256 * 1024
#: Pool slots beyond --max-clients, used only to greet excess connections with
#: ``BYE server-full``; when these are busy too, new connections wait in the listen backlog.
REJECT_SLOTS = 64
#: Seconds a rejected or quitting connection is given to take its last line.
CLOSE_LINGER = 2.0
#: Shortest wait, in seconds, the writer schedules (a deadline already due is checked at once).
WAIT_MIN = 0.001
#: Bounds, in seconds, of the idle sweep's period (a quarter of the shortest timeout between).
SWEEP_MIN = 0.05
SWEEP_MAX = 1.0
#: Ejected for flooding once this many lines over the rate are pending (they decay at the rate).
FLOOD_STRIKES_PER_BURST = 2
#: Clients one flush sends to before the loop polls the sockets again (about 2 ms of sends).
#: A fan-out to a big room goes out in slices; a line that arrives meanwhile is read between
#: them and joins the outboxes not yet sent, so one send carries both lines, and nobody's
#: input waits for a whole room's sends.
FLUSH_SLICE = 256


class Listener(StreamServer):
    """One listening socket; every connection it accepts becomes a ``client_class`` of ``server``."""

    def __init__(self, server, address, client_class, pool, tls=False):
        self.server = server
        self.client_class = client_class
        self.tls = tls  #: whether connections handshake TLS (with ``server.tls_context``) first
        name = getattr(client_class, "protocol_name", "")
        self.label = " ".join(filter(None, (name, "TLS" if tls else ""))) or "native"
        self._adopted = set()  # sockets handle() kept open past its return (see do_close)
        backlog = BACKLOG if isinstance(address, tuple) else None  # a socket listens already
        super().__init__(address, self.handle, spawn=pool, backlog=backlog)

    def handle(self, sock, address):
        conn = sock
        if self.tls:
            server = self.server
            accounts = server.accounts
            if accounts is not None and accounts.banned("address", address[0]):
                # Not worth a handshake; a plain-text BYE would be junk to a TLS client.
                log.warning("Refused %s: banned (before the TLS handshake)", format_addr(address))
                return
            # A handshake under way counts against --max-per-ip like a connection: one address
            # cannot fill the accept pool with handshakes that never finish.
            ip = address[0]
            shaking = server.handshaking
            if server.max_per_ip and server.per_ip.get(ip, 0) + shaking.get(ip, 0) >= server.max_per_ip:
                log.warning("Refused %s: too-many-connections (before the TLS handshake)",
                            format_addr(address))
                server.refusals["too-many-connections"] += 1
                return
            shaking[ip] = shaking.get(ip, 0) + 1
            try:
                conn = handshake(server.tls_context, sock, format_addr(address),
                                 server.tls_handshake_timeout)
            finally:
                if shaking[ip] > 1:
                    shaking[ip] -= 1
                else:
                    del shaking[ip]
            if conn is None:
                return
        if self.server.accept(conn, address, self.client_class):
            self._adopted.add(sock)

    def do_close(self, sock, *args):
        """StreamServer closes a socket when its handler returns; a client's lives on."""
        if sock in self._adopted:
            self._adopted.discard(sock)
        else:
            sock.close()


class ChatServer:
    """The clients of every listener, the limits they share, and the bytes to and from them.

    Greenlets exist only while there is work: the accept handler sets a client up and reads what
    it sent; a read watcher starts a reader greenlet when more arrives, which reads once, runs
    the lines and parks the watcher again; a writer greenlet runs only while the client's socket
    is full. An idle client is a socket, a watcher and a :class:`Client` (under 5 KiB of server
    memory, measured), where a parked greenlet alone would cost 8 KiB of saved stack.
    """

    #: Tunables, set from the command line; see ``--help`` and the README's limits table.
    max_clients = settings.default("max-clients")
    max_per_ip = settings.default("max-per-ip")
    max_line = settings.default("max-line")
    flood_rate = settings.default("flood-rate")
    flood_burst = settings.default("flood-burst")
    send_timeout = settings.default("send-timeout")
    idle_timeout = settings.default("idle-timeout")
    ping_timeout = settings.default("ping-timeout")
    shutdown_timeout = settings.default("shutdown-timeout")
    server_name = settings.default("server-name")
    web_origins = None  #: origins a WebSocket handshake may come from; None: the listener's own
    web_any_origin = False  #: --web-origin '*': any origin
    web_max_message = settings.default("web-max-message")
    tls_handshake_timeout = settings.default("tls-handshake-timeout")
    tls_cert = None  #: PEM file of the certificate chain of the TLS listeners
    tls_key = None  #: PEM file of its private key
    motd = None  #: the IRC message of the day, a list of lines, or None
    history = None  #: the room history (:class:`chatroom.store.history.History`), or None
    accounts = None  #: the accounts service (chatroom.accounts.service.Accounts), or None
    password = None  #: the server password (--password-file), NFKC and UTF-8 encoded, or None
    opers = frozenset()  #: case-folded account names of the server operators (--oper)
    register_before_connect = True  #: IRC REGISTER before the connection is registered

    def __init__(self, registry=None, **tunables):
        for name, value in tunables.items():
            if not hasattr(type(self), name):
                raise TypeError(f"unknown tunable {name!r}")
            setattr(self, name, value)
        self.registry = registry if registry is not None else Registry()
        self.registry.on_ready = self._schedule_flush
        self.registry.on_evict = self._evicted
        self.loop = gevent.get_hub().loop
        self.listeners = []
        self.clients = {}  # Client -> None, in connection order
        self.per_ip = {}  # ip -> open connections
        self.handshaking = {}  # ip -> TLS handshakes under way (not yet in per_ip)
        self.stopping = False
        self.started = None  #: time.time() at start, for IRC's 003
        self.peak_users = 0  #: most members seen at once (IRC's LUSERS)
        self.peak_global = 0  #: most members seen at once on every node of a cluster (LUSERS)
        self._flush_scheduled = False
        # Resumes a sliced flush once the loop has polled: of the lowest priority, so it runs
        # after the reads that poll found, and so after their lines are in the outboxes.
        self._resume = self.loop.timer(0.0, 0.0, False, getattr(self.loop, "MINPRI", -2))
        self._sweeper = None
        # Plain counters that chatroom/metrics.py reads at scrape time: bumped once per read, per
        # send or per connection event, never per recipient of a message.
        self.bytes_in = 0  #: bytes read from clients
        self.lines_in = 0  #: lines framed from them (over-long ones included)
        self.bytes_out = 0  #: bytes the kernel took for them
        self.frames_out = 0  #: frames (lines, or a shared multi-line reply) handed to their sockets
        self.connects = Counter()  #: client class -> connections accepted
        self.disconnects = Counter()  #: reason (without a QUIT's text) -> connections closed
        self.evictions = Counter()  #: reason -> clients the registry dropped (slow, stuck)
        self.refusals = Counter()  #: reason -> connections refused at accept
        self.recv_size = max(4096, min(RECV_SIZE, self.registry.outbox_limit // 8))
        # The pool bounds handler greenlets (set-up and first read) of every listener; the
        # client count itself is enforced in accept(), so excess connections hear why.
        self.pool = Pool(self.max_clients + REJECT_SLOTS)
        self.tls_context = None  #: built on the first TLS listener, replaced by reload_tls()

    def listen(self, address, client_class, tls=False):
        """Add a listener on ``address`` (a pair, or a bound socket) for ``client_class``.

        With ``tls`` its connections handshake TLS with ``tls_cert`` and ``tls_key`` first
        (OSError or ssl.SSLError here when they cannot be loaded).
        """
        if tls and self.tls_context is None:
            self.tls_context = make_context(self.tls_cert, self.tls_key)
        listener = Listener(self, address, client_class, self.pool, tls)
        self.listeners.append(listener)
        return listener

    def reload_tls(self):
        """Load the certificate and key again (SIGHUP): new connections get them, open ones stay.

        A certificate that does not load is logged and the one in use is kept. Returns whether
        the new one is in use.
        """
        if self.tls_context is None:
            return False
        try:
            context = make_context(self.tls_cert, self.tls_key)
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            log.error("TLS certificate not reloaded, keeping the one in use: %s", err)
            return False
        self.tls_context = context
        log.info("TLS certificate reloaded from %s", self.tls_cert)
        return True

    def start(self):
        self.started = time.time()
        for listener in self.listeners:
            listener.start()
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep)

    # -- connection lifecycle --------------------------------------------------------------------

    def accept(self, sock, address, client_class):
        """Set up a new connection; returns whether the socket lives on as a client's."""
        client_id = format_addr(address)
        ip = address[0]
        refusal = None
        if self.stopping:
            refusal = "server-shutdown"
        elif len(self.clients) >= self.max_clients:
            refusal = "server-full"
        elif self.max_per_ip and self.per_ip.get(ip, 0) >= self.max_per_ip:
            refusal = "too-many-connections"
        elif self.accounts is not None and self.accounts.banned("address", ip):
            refusal = "banned"
        if refusal is not None:
            log.warning("Refused %s: %s", client_id, refusal)
            self.refusals[refusal] += 1
            self._send_last_words(sock, client_class.refusal(self, refusal))
            self._linger_close(sock)
            return False
        tune_socket(sock)
        sock.settimeout(0.0)  # every read and write is non-blocking; waits are explicit
        watcher = self.loop.io(sock.fileno(), 1)  # 1: readable
        client = client_class(client_id, sock, address, watcher, self)
        self.clients[client] = None
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        self.connects[client_class] += 1
        log.info("Connection has been established with %s", client_id)
        client.start(self)
        self._read(client)
        return True

    def upgrade(self, old, new, data=b""):
        """``old``'s connection goes on as ``new`` (an HTTP request upgraded to a WebSocket).

        ``new`` has ``old``'s socket and read watcher; ``old`` was never in the registry and is
        now closed to the transport (its reader stops), and the limits count ``new`` instead.
        ``data``: bytes that came after the request, ``new``'s first. Returns a disconnect
        reason for ``new``, or None.
        """
        old.closing = True
        old.gone = "upgraded"
        self.clients.pop(old, None)
        self.clients[new] = None
        new.start(self)
        reason = self._run_chunk(new, data) if data else None
        if reason is not None:
            gevent.spawn(self._close, new, reason)
        elif not new.closing:
            new.watcher.start(self._on_readable, new)
        return reason
    def is_oper_account(self, account):
        return account is not None and account.casefold() in self.opers

    def ban_reason(self, client):
        """Why ``client`` is banned (its address, nickname or account), or None."""
        accounts = self.accounts
        if accounts is None:
            return None
        return (accounts.banned("address", client.host)
                or (client.nick and accounts.banned("nick", client.nick))
                or (client.account and accounts.banned("account", client.account)))

    def kill(self, client):
        """Close another client's connection with ``killed`` (an operator's KILL)."""
        if client in self.clients:
            gevent.spawn(self._close, client, "killed")

    def enforce_bans(self):
        """Close every connection a ban now covers, on every listener, with ``banned``."""
        for client in list(self.clients):
            if self.ban_reason(client):
                gevent.spawn(self._close, client, "banned")

    def _on_readable(self, client):
        """Read watcher callback, in the hub: bytes (or EOF) wait; start a reader greenlet."""
        client.watcher.stop()
        gevent.spawn(self._read, client)

    def _read(self, client):
        """Read once and run the lines, then park on the read watcher until more arrives.

        One read a turn: the loop polls every other socket (and flushes) before this one is
        read again, so a client with a backlog cannot starve the others.
        """
        if client.closing:
            return
        try:
            data = client.sock.recv(self.recv_size)
            if data:
                self.bytes_in += len(data)
                client.last_seen = self.loop.now()
                client.ping_sent = 0.0
                reason = self._run_chunk(client, data)
            else:
                cut = client.framer.eof()
                if cut:
                    log.info("%s closed mid-line (%d bytes dropped)", client.id, cut)
                reason = "disconnected"
        except WOULD_BLOCK:
            reason = None  # nothing yet: a new client that has not spoken, or half a TLS record
        except OSError:
            reason = "disconnected"
        except Exception:
            log.exception("error reading from %s", client.id)
            reason = "server-error"
        if reason is not None:
            self._close(client, reason)
        elif not client.closing:
            if client.tls and client.sock.pending():
                # Decrypted bytes wait in the TLS layer, not the kernel: the read watcher would
                # never fire for them. Read them on the next turn, after everyone else.
                gevent.spawn(self._read, client)
            else:
                client.watcher.start(self._on_readable, client)

    def _run_chunk(self, client, data):
        """Frame ``data`` and run its lines; returns a disconnect reason, or None to go on.

        A client may batch what its lines say (``run_line`` collects, ``run_batch`` sends): the
        messages of one read then go out as one fan-out, and the batch is run before anything
        else the client says or hears from here, so the order of its lines is kept.
        """
        run = client.run_line
        flood = self.flood_rate
        reason = None
        lines = client.framer.feed(data)
        self.lines_in += len(lines)
        for line in lines:
            if type(line) is bytes:
                if flood:
                    reason = self._flood_check(client)
                    if reason is not None:
                        if reason == "dropped":
                            reason = None
                            continue
                        break
                reason = run(self, line)
                if reason is not None:
                    break
            else:
                client.run_batch(self)
                if isinstance(line, LineTooLong):
                    self.registry.reply(client, client.line_too_long(self, line.size))
                else:
                    reason = client.on_event(self, line)
                    if reason is not None:
                        break
            if client.closing:
                reason = client.gone or "disconnected"
                break
        client.run_batch(self)
        return reason

    def _flood_check(self, client):
        """Token bucket on lines; returns None (go on), "dropped", or "flood" (disconnect)."""
        now = self.loop.now()
        elapsed = now - client.stamp
        client.stamp = now
        rate = self.flood_rate
        tokens = client.tokens + elapsed * rate
        client.tokens = tokens if tokens < self.flood_burst else float(self.flood_burst)
        if client.tokens >= 1.0:
            client.tokens -= 1.0
            return None
        strikes = max(0.0, client.strikes - elapsed * rate) + 1.0
        client.strikes = strikes
        if strikes > self.flood_burst * FLOOD_STRIKES_PER_BURST:
            return "flood"
        client.run_batch(self)
        self.registry.reply(client, client.rate_limited(self, rate))
        return "dropped"

    def _sweep(self):
        """Once a second or so: PING clients silent for the idle timeout, drop the unanswered."""
        while True:
            idle, answer = self.idle_timeout, self.ping_timeout
            gevent.sleep(max(SWEEP_MIN, min(SWEEP_MAX, (idle or SWEEP_MAX) / 4, answer / 4)))
            if not idle:
                continue
            now = self.loop.now()
            for client in list(self.clients):
                if client.ping_sent:
                    if now - client.ping_sent > answer and not client.closing:
                        gevent.spawn(self._close, client, "ping-timeout")
                elif now - client.last_seen > idle:
                    client.ping_sent = now
                    self.registry.reply(client, client.ping(self, str(int(now))))

    def _forget(self, client):
        """Count ``client`` out of the connection limits; the first call does it, later ones nothing."""
        if client.closing:
            return False
        client.closing = True
        self.clients.pop(client, None)
        ip = client.addr[0]
        left = self.per_ip.get(ip, 1) - 1
        if left:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)
        return True

    def _close(self, client, reason):
        """Take ``client`` out of the chat, give it its last bytes and ``BYE``, close its socket."""
        if not self._forget(client):
            return
        self.disconnects[reason.partition(":")[0]] += 1  # "quit: <text>" counts as "quit"
        client.watcher.stop()
        self.registry.remove(client, reason, announce=not self.stopping)
        client.gone = reason
        if reason != "disconnected":
            self.registry.send(client, client.bye(self, reason))
            self._drain(client, self.shutdown_timeout if self.stopping else CLOSE_LINGER)
        log.info("Connection closed with %s (%s)", client.id, reason)
        self._discard(client)

    def _evicted(self, client, reason):
        """Registry hook: ``client`` was evicted. Too far behind: close it without waiting.

        Put out for another reason (``kicked``), it still reads: it gets what it has queued (who
        put it out and why) and its goodbye, as when it quits.
        """
        if reason not in ("slow-consumer", "send-timeout"):
            gevent.spawn(self._close, client, reason)
            return
        if not self._forget(client):
            return
        self.evictions[reason] += 1
        self.disconnects[reason] += 1
        log.warning("Dropped %s: %s (%d bytes queued)", client.id, reason, client.queued)
        if not client.pending:  # only at a line boundary, or the BYE would end someone's line
            self._send_last_words(client.sock, client.bye(self, reason))
        self._discard(client)

    def _discard(self, client):
        client.outbox.clear()
        client.pending = None
        client.queued = 0
        writer = client.writer
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        client.writer = None
        client.watcher.stop()
        client.watcher.close()
        client.sock.close()

    @staticmethod
    def _linger_close(sock):
        """Close a refused connection after its peer has read the refusal.

        Closing a socket that holds unread bytes (a request the client sent at once) resets the
        connection, and a reset can destroy the refusal before the client reads it. So: end our
        side, discard what the peer sends until it closes too, for at most CLOSE_LINGER seconds.
        """
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(CLOSE_LINGER)
            with gevent.Timeout(CLOSE_LINGER, False):
                while sock.recv(4096):
                    pass
        except OSError:
            pass
        finally:
            sock.close()

    @staticmethod
    def _send_last_words(sock, data):
        """One non-blocking try to send a final line; a full or dead socket just misses it."""
        try:
            sock.settimeout(0.0)
            sock.send(data)
        except OSError:
            pass

    # -- writing ---------------------------------------------------------------------------------

    def _schedule_flush(self):
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.run_callback(self._flush)

    def _resume_flush(self):
        self._flush_scheduled = False
        self._schedule_flush()  # behind the readers the last poll started: their lines go too

    def _flush(self):
        """One non-blocking send of everything queued to each ready client, once per loop turn.

        At most :data:`FLUSH_SLICE` clients a turn: the rest stay first in line, and the loop
        polls (and reads) before the next slice.
        """
        registry = self.registry
        ready = registry.ready
        if len(ready) > FLUSH_SLICE:
            registry.ready = ready[FLUSH_SLICE:]
            del ready[FLUSH_SLICE:]
            self._resume.start(self._resume_flush)  # _flush_scheduled stays set until then
        else:
            self._flush_scheduled = False
            registry.ready = []
        frames = sent_bytes = 0
        for client in ready:
            box = client.outbox
            if not box or client.writer is not None or client.hold:
                continue
            try:
                if len(box) == 1:
                    # The common case, kept short (it runs once per recipient of every line):
                    # one frame that the kernel takes whole.
                    data = box[0]
                    try:
                        sent = client.out.send(data)
                    except OSError:
                        sent = 0  # full or gone: _send_some starts a writer or meets it again
                    if sent == len(data):
                        box.clear()
                        client.queued -= sent
                        if client.soft_since is not None:
                            client.soft_since = None
                        frames += 1
                        sent_bytes += sent
                        continue
                    if sent:
                        box[0] = data[sent:]
                        client.queued -= sent
                        sent_bytes += sent
                self._send_some(client)
            except OSError:
                pass  # the reader sees the dead socket and closes the connection
            except Exception:  # one client's trouble must not strand the rest of the slice
                log.exception("flush to %s failed", client.id)
        self.frames_out += frames
        self.bytes_out += sent_bytes

    def _send_some(self, client):
        """Send what the kernel takes now; start a writer for the rest. Never waits."""
        out = client.out
        box = client.outbox
        while True:
            frames = len(box)
            data = _take(client)
            self.frames_out += frames - len(box)
            try:
                sent = out.send(data)
            except BlockingIOError:
                sent = 0
            client.queued -= sent
            self.bytes_out += sent
            if sent < len(data):
                client.pending = memoryview(data)[sent:]
                client.blocked = True
                client.writer = gevent.spawn(self._write_loop, client)
                self.registry.check_backlog(client)
                return
            if not client.outbox:
                client.soft_since = None
                return

    def _write_loop(self, client):
        """A client's socket is full: wait until it drains, send, repeat until nothing is queued.

        Bounded twice: the send deadline (no byte taken for that long) and the soft outbox
        limit (over it for that long), so a stuck client goes even when its room is quiet.
        """
        out = client.out
        fileno = client.sock.fileno()
        registry = self.registry
        clock = registry.clock
        soft = registry.soft_limit
        progress = clock()  # when the socket last took a byte
        try:
            while True:
                now = clock()
                timeout = progress + self.send_timeout - now
                if soft and client.soft_since is not None:
                    timeout = min(timeout, client.soft_since + registry.soft_seconds - now)
                try:
                    wait_write(fileno, timeout=max(WAIT_MIN, timeout), timeout_exc=_SendTimeout)
                except _SendTimeout:
                    now = clock()
                    if (soft and client.soft_since is not None and client.queued > soft
                            and now - client.soft_since >= registry.soft_seconds):
                        registry.evict(client, "slow-consumer")
                        return
                    if now - progress >= self.send_timeout:
                        registry.evict(client, "send-timeout")
                        return
                    continue
                while True:  # send until the kernel is full again or nothing is left
                    data = client.pending
                    if not data:
                        if not client.outbox:
                            client.pending = None
                            client.soft_since = None
                            return
                        frames = len(client.outbox)
                        data = memoryview(_take(client))
                        self.frames_out += frames - len(client.outbox)
                    try:
                        sent = out.send(data)
                    except BlockingIOError:
                        sent = 0
                    if sent:
                        progress = clock()
                        self.bytes_out += sent
                    client.queued -= sent
                    client.pending = data[sent:]
                    if sent < len(data):
                        break
                if soft and client.soft_since is not None and client.queued <= soft:
                    client.soft_since = None
        except OSError:
            pass  # the peer went away; the reader finds out and closes
        finally:
            if client.writer is gevent.getcurrent():
                client.writer = None
                client.blocked = False

    def _drain(self, client, timeout):
        """Flush ``client`` now and wait up to ``timeout`` s for its writer to finish."""
        if client.writer is None and client.outbox:
            try:
                self._send_some(client)
            except OSError:
                return
        if client.writer is not None:
            client.writer.join(timeout=timeout)

    # -- shutdown --------------------------------------------------------------------------------

    def stats(self):
        """Counts for the ``Stats:`` log line (SIGUSR1): what a leak would make grow."""
        greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet))
        return {
            "clients": len(self.clients),
            "members": len(self.registry),
            "rooms": len(self.registry.rooms),
            "nicks": len(self.registry.nicks),
            "greenlets": greenlets,
            "writers": sum(1 for c in self.clients if c.writer is not None),
            "queued_bytes": sum(c.queued for c in self.clients),
        }

    def shutdown(self):
        """Stop accepting, say ``BYE server-shutdown`` to everyone after what they have queued."""
        if self.stopping:
            return
        self.stopping = True
        log.info("Shutting down: %d clients", len(self.clients))
        for listener in self.listeners:
            listener.close()
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
        closers = [gevent.spawn(self._close, c, "server-shutdown") for c in list(self.clients)]
        gevent.joinall(closers, timeout=self.shutdown_timeout + CLOSE_LINGER)
        for client in list(self.clients):  # only if a closer was stuck: close regardless
            self._forget(client)
            self._discard(client)
        self.pool.kill(block=True, timeout=1)


def _take(client):
    """Up to about :data:`SEND_CHUNK` bytes from the front of the outbox, as one buffer."""
    box = client.outbox
    if len(box) == 1:
        return box.pop()
    if client.queued <= SEND_CHUNK:
        data = b"".join(box)
        box.clear()
        return data
    # A backlog: take a share of the frames proportional to SEND_CHUNK (no per-frame counting).
    count = max(1, len(box) * SEND_CHUNK // client.queued)
    data = b"".join(box[:count])
    del box[:count]
    return data


class _SendTimeout(Exception):
    pass

"""The chat server: sockets in, lines to the registry, outboxes back out to sockets.

One :class:`ChatServer` (a ``gevent.server.StreamServer``) owns the listening socket and every
client's socket. Greenlets run only while there is work: a reader while bytes have arrived, a
writer while the client's socket is full. Bytes flow one way::

    socket -> LineFramer -> parse_command -> Registry -> member outboxes -> flush -> socket

Writing is coalesced: the registry appends frames to outboxes and marks them ready; once per
turn of the event loop a single callback (:meth:`ChatServer._flush`) joins each ready outbox into
one buffer and does one non-blocking ``send``. Only when the kernel will not take it all does a
writer greenlet start for that client, wait for the socket to drain (bounded by the send
deadline and the soft outbox limit), and exit when the outbox is empty.
"""

import argparse
import gc
import logging
import os
import resource
import signal
import socket
import sys

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import wait_write
from greenlet import greenlet

from .codec import native
from .codec.lines import DEFAULT_MAX_LINE, LineFramer, LineTooLong, NO_LINE_END_LIMIT
from .registry import (
    DEFAULT_OUTBOX_LIMIT,
    DEFAULT_OUTBOX_SOFT_LIMIT,
    DEFAULT_OUTBOX_SOFT_SECONDS,
    DEFAULT_PRESENCE_LIMIT,
    Member,
    Registry,
)

log = logging.getLogger("chatroom.server")

DEFAULT_HOST = "127.0.0.1"
#: Default TCP port; the client and the load tool use the same one.
DEFAULT_PORT = 7777
#: Default most clients at once; lowered at start to fit the open-files limit.
DEFAULT_MAX_CLIENTS = 10000
#: Default most connections from one IP address (0 = no limit). Off by default because the
#: default bind address is loopback, where every client has the same address.
DEFAULT_MAX_PER_IP = 0
#: Default flood limit: lines a second, sustained, and the burst allowed on top (a paste of a
#: few lines goes through). A public server wants it; load tests switch it off with 0.
DEFAULT_FLOOD_RATE = 10.0
DEFAULT_FLOOD_BURST = 20
#: Default seconds a client's socket may accept no bytes at all while we have some to send.
DEFAULT_SEND_TIMEOUT = 30.0
#: Default seconds of silence before the server sends PING, then seconds to wait for any line.
DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_PING_TIMEOUT = 30.0
#: Default seconds a shutdown waits for clients to take their last bytes before closing anyway.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

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
#: File descriptors kept free for the listener, logs and the like when sizing --max-clients.
RESERVED_FDS = 32
#: Listen backlog: room for a burst of connects while the accept loop catches up.
BACKLOG = 1024
#: Shortest wait, in seconds, the writer schedules (a deadline already due is checked at once).
WAIT_MIN = 0.001
#: Bounds, in seconds, of the idle sweep's period (a quarter of the shortest timeout between).
SWEEP_MIN = 0.05
SWEEP_MAX = 1.0
#: Ejected for flooding once this many lines over the rate are pending (they decay at the rate).
FLOOD_STRIKES_PER_BURST = 2


class Client(Member):
    """A member with a socket: the server's per-connection state."""

    __slots__ = ("sock", "addr", "framer", "watcher", "writer", "pending", "last_seen",
                 "ping_sent", "closing", "tokens", "stamp", "strikes")

    def __init__(self, member_id, sock, addr, watcher, max_line, flood_burst, now):
        super().__init__(member_id)
        self.sock = sock
        self.addr = addr
        self.framer = LineFramer(max_line)
        self.watcher = watcher  #: read watcher, started while no reader greenlet runs
        self.writer = None  #: the writer greenlet, while the socket is full
        self.pending = None  #: memoryview of bytes taken from the outbox and not yet sent
        self.last_seen = now  #: loop time of the last bytes received
        self.ping_sent = 0.0  #: loop time the server sent an unanswered PING, or 0
        self.closing = False  #: set once, when the connection starts to close
        self.tokens = float(flood_burst)  #: flood bucket: lines that may still be sent now
        self.stamp = now  #: loop time the bucket was last filled
        self.strikes = 0.0  #: lines dropped for flooding, decaying at the flood rate


class ChatServer(StreamServer):
    """A gevent StreamServer that hands each client to the registry and moves its bytes.

    Greenlets exist only while there is work: the accept handler sets a client up and reads what
    it sent; a read watcher starts a reader greenlet when more arrives, which reads once, runs
    the lines and parks the watcher again; a writer greenlet runs only while the client's socket
    is full. An idle client is a socket, a watcher and a :class:`Client` (under 5 KiB of server
    memory, measured), where a parked greenlet alone would cost 8 KiB of saved stack.
    """

    #: Tunables, set from the command line; see ``--help`` and the README's limits table.
    max_clients = DEFAULT_MAX_CLIENTS
    max_per_ip = DEFAULT_MAX_PER_IP
    max_line = DEFAULT_MAX_LINE
    flood_rate = DEFAULT_FLOOD_RATE
    flood_burst = DEFAULT_FLOOD_BURST
    send_timeout = DEFAULT_SEND_TIMEOUT
    idle_timeout = DEFAULT_IDLE_TIMEOUT
    ping_timeout = DEFAULT_PING_TIMEOUT
    shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT

    def __init__(self, listener, registry=None, **tunables):
        for name, value in tunables.items():
            if not hasattr(type(self), name):
                raise TypeError(f"unknown tunable {name!r}")
            setattr(self, name, value)
        self.registry = registry if registry is not None else Registry()
        self.registry.on_ready = self._schedule_flush
        self.registry.on_evict = self._evicted
        self.clients = {}  # Client -> None, in connection order
        self.per_ip = {}  # ip -> open connections
        self.stopping = False
        self._flush_scheduled = False
        self._sweeper = None
        self._adopted = set()  # sockets handle() kept open past its return (see do_close)
        self.recv_size = max(4096, min(RECV_SIZE, self.registry.outbox_limit // 8))
        # The pool bounds handler greenlets (set-up and first read); the client count itself
        # is enforced in handle(), so that excess connections hear why they are refused.
        super().__init__(listener, self.handle, spawn=Pool(self.max_clients + REJECT_SLOTS),
                         backlog=BACKLOG)

    def start(self):
        super().start()
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep)

    # -- connection lifecycle --------------------------------------------------------------------

    def handle(self, sock, address):
        client_id = native.format_addr(address)
        ip = address[0]
        refusal = None
        if self.stopping:
            refusal = "server-shutdown"
        elif len(self.clients) >= self.max_clients:
            refusal = "server-full"
        elif self.max_per_ip and self.per_ip.get(ip, 0) >= self.max_per_ip:
            refusal = "too-many-connections"
        if refusal is not None:
            log.warning("Refused %s: %s", client_id, refusal)
            self._send_last_words(sock, native.format_bye(refusal))
            sock.close()
            return
        _tune_socket(sock)
        sock.settimeout(0.0)  # every read and write is non-blocking; waits are explicit
        watcher = self.loop.io(sock.fileno(), 1)  # 1: readable
        client = Client(client_id, sock, address, watcher, self.max_line, self.flood_burst,
                        self.loop.now())
        self.clients[client] = None
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        log.info("Connection has been established with %s", client_id)
        self._adopted.add(sock)
        self.registry.add(client, native.format_hello(client_id))
        self._read(client)

    def do_close(self, sock, *args):
        """StreamServer closes a socket when its handler returns; a client's lives on."""
        if sock in self._adopted:
            self._adopted.discard(sock)
        else:
            sock.close()

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
                client.last_seen = self.loop.now()
                client.ping_sent = 0.0
                reason = self._run_chunk(client, data)
            else:
                cut = client.framer.eof()
                if cut:
                    log.info("%s closed mid-line (%d bytes dropped)", client.id, cut)
                reason = "disconnected"
        except BlockingIOError:
            reason = None  # nothing yet: a new client that has not spoken
        except OSError:
            reason = "disconnected"
        except Exception:
            log.exception("error reading from %s", client.id)
            reason = "server-error"
        if reason is not None:
            self._close(client, reason)
        elif not client.closing:
            client.watcher.start(self._on_readable, client)

    def _run_chunk(self, client, data):
        """Frame ``data`` and run its lines; returns a disconnect reason, or None to go on."""
        run = self._run_line
        for line in client.framer.feed(data):
            if type(line) is bytes:
                reason = run(client, line)
                if reason is not None:
                    return reason
            elif isinstance(line, LineTooLong):
                self.registry.send(client, native.format_err(
                    "line-too-long", f"line over {self.max_line} bytes was discarded"))
            else:
                self.registry.send(client, native.format_err(
                    "no-line-end", f"{NO_LINE_END_LIMIT} bytes without a line end"))
                return "no-line-end"
            if client.closing:
                return client.gone or "disconnected"
        return None

    def _run_line(self, client, line):
        """Run one complete line; returns a disconnect reason, or None to go on."""
        if self.flood_rate:
            reason = self._flood_check(client)
            if reason is not None:
                return None if reason == "dropped" else reason
        registry = self.registry
        try:
            cmd = native.parse_command(line)
            name = cmd.name
            if name == "SEND":
                registry.say(client, cmd.args[0])
            elif name == "TELL":
                registry.tell(client, *cmd.args)
            elif name == "NICK":
                registry.set_nick(client, cmd.args[0])
            elif name == "JOIN":
                registry.join(client, cmd.args[0])
            elif name == "WHO":
                registry.who(client)
            elif name == "ROOMS":
                registry.list_rooms(client)
            elif name == "PING":
                registry.send(client, native.format_pong(*cmd.args))
            elif name == "QUIT":
                return "quit: " + cmd.args[0] if cmd.args else "quit"
            # PONG: any line proves liveness; nothing more to do.
        except native.ProtocolError as err:
            registry.send(client, err.to_bytes())
        return None

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
        self.registry.send(client, native.format_err(
            "rate-limited", f"over {rate:g} lines/s; line dropped"))
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
                    self.registry.send(client, native.format_ping(str(int(now))))

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
        client.watcher.stop()
        bye = "quit" if reason.startswith("quit") else reason
        self.registry.remove(client, reason, announce=not self.stopping)
        client.gone = reason
        if reason != "disconnected":
            self.registry.send(client, native.format_bye(bye))
            self._drain(client, self.shutdown_timeout if self.stopping else CLOSE_LINGER)
        log.info("Connection closed with %s (%s)", client.id, reason)
        self._discard(client)

    def _evicted(self, client, reason):
        """Registry hook: ``client`` was evicted (too far behind). Close it without waiting."""
        if not self._forget(client):
            return
        log.warning("Dropped %s: %s (%d bytes queued)", client.id, reason, client.queued)
        if not client.pending:  # only at a line boundary, or the BYE would end someone's line
            self._send_last_words(client.sock, native.format_bye(reason))
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
    def _send_last_words(sock, data):
        """One non-blocking try to send a final line; a full or dead socket just misses it."""
        try:
            sock.send(data, 0, 0.0)
        except OSError:
            pass

    # -- writing ---------------------------------------------------------------------------------

    def _schedule_flush(self):
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.run_callback(self._flush)

    def _flush(self):
        """Once per loop turn: one non-blocking send of everything queued to each ready client."""
        self._flush_scheduled = False
        registry = self.registry
        ready = registry.ready
        registry.ready = []
        for client in ready:
            if client.writer is None and client.outbox:
                try:
                    self._send_some(client)
                except OSError:
                    pass  # the reader sees the dead socket and closes the connection
                except Exception:
                    log.exception("flush to %s failed", client.id)

    def _send_some(self, client):
        """Send what the kernel takes now; start a writer for the rest. Never waits."""
        sock = client.sock
        while True:
            data = _take(client)
            try:
                sent = sock.send(data, 0, 0.0)
            except BlockingIOError:
                sent = 0
            client.queued -= sent
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
        sock = client.sock
        fileno = sock.fileno()
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
                        data = memoryview(_take(client))
                    try:
                        sent = sock.send(data, 0, 0.0)
                    except BlockingIOError:
                        sent = 0
                    if sent:
                        progress = clock()
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
        self.close()
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


def _tune_socket(sock):
    """TCP keepalive so half-open peers are found even when idle; no Nagle delay on chat lines."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    except OSError:
        pass


def raise_nofile_limit():
    """Raise the open-files soft limit to the hard limit where allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class _LogFormatter(logging.Formatter):
    """Plain lines for information, the level in front of anything worse."""

    def format(self, record):
        text = record.getMessage()
        if record.levelno > logging.INFO:
            text = f"{record.levelname}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def build_parser():
    p = argparse.ArgumentParser(prog="chat-server", description="A gevent chat server.")
    a = p.add_argument
    a("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    a("--port", type=int, default=DEFAULT_PORT, help="TCP port, 0 for any free one (default %(default)s)")
    a("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS,
      help="most clients at once, capped by the open-files limit (default %(default)s)")
    a("--max-per-ip", type=int, default=DEFAULT_MAX_PER_IP,
      help="most connections from one IP address, 0 = no limit (default %(default)s)")
    a("--max-line", type=_line_limit, default=DEFAULT_MAX_LINE,
      help="longest line in bytes (default %(default)s)")
    a("--outbox-limit", type=int, default=DEFAULT_OUTBOX_LIMIT,
      help="bytes queued to one client before it is dropped as a slow consumer (default %(default)s)")
    a("--outbox-soft-limit", type=int, default=DEFAULT_OUTBOX_SOFT_LIMIT,
      help="bytes queued that may last only --outbox-soft-seconds, 0 = off (default %(default)s)")
    a("--outbox-soft-seconds", type=float, default=DEFAULT_OUTBOX_SOFT_SECONDS,
      help="seconds a client may stay over the soft limit (default %(default)s)")
    a("--send-timeout", type=float, default=DEFAULT_SEND_TIMEOUT,
      help="seconds a client's socket may take no bytes before it is dropped (default %(default)s)")
    a("--flood-rate", type=float, default=DEFAULT_FLOOD_RATE,
      help="lines per second per client, 0 = no flood control (default %(default)s)")
    a("--flood-burst", type=int, default=DEFAULT_FLOOD_BURST,
      help="lines a client may send at once above the rate (default %(default)s)")
    a("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT,
      help="seconds of silence before the server sends PING, 0 = never (default %(default)s)")
    a("--ping-timeout", type=float, default=DEFAULT_PING_TIMEOUT,
      help="seconds to wait for an answer to PING (default %(default)s)")
    a("--presence-limit", type=int, default=DEFAULT_PRESENCE_LIMIT,
      help="rooms larger than this do not announce JOIN/PART/NICK (default %(default)s)")
    a("--shutdown-timeout", type=float, default=DEFAULT_SHUTDOWN_TIMEOUT,
      help="seconds a shutdown waits for clients to take their last bytes (default %(default)s)")
    a("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
      help="log level (default %(default)s)")
    from .cluster import DEFAULT_TTL, node_name, redis_url  # no redis import: that waits for --redis

    a("--redis", type=redis_url, metavar="URL",
      help="join the cluster of servers sharing rooms, nicknames and messages over the Redis at "
           "URL, redis://HOST:PORT/DB (default: none, this server alone)")
    a("--node", type=node_name, help="this server's name in the cluster (default: hostname-pid)")
    a("--cluster-ttl", type=float, default=DEFAULT_TTL,
      help="seconds a dead node's members and nicknames outlive it (default %(default)s)")
    a("--workers", type=int, default=1,
      help="server processes sharing the port, each a cluster node; >1 needs --redis "
           "(default %(default)s)")
    a("--reuse-port", action="store_true",
      help="bind with SO_REUSEPORT so several servers share the port (default off)")
    return p


def _line_limit(text):
    value = int(text)
    # Beyond this the 64 KiB no-line-end rule would close the connection before the limit applied.
    if not 16 <= value <= NO_LINE_END_LIMIT - 2:
        raise argparse.ArgumentTypeError(f"must be from 16 to {NO_LINE_END_LIMIT - 2}")
    return value


def make_server(args):
    """Build a :class:`ChatServer` from parsed command-line ``args`` (not yet started).

    With ``--reuse-port`` the listening socket is bound here; with ``--redis`` the registry is a
    cluster node's (its link to Redis starts with ``registry.start()``).
    """
    limits = dict(
        outbox_limit=args.outbox_limit,
        soft_limit=args.outbox_soft_limit,
        soft_seconds=args.outbox_soft_seconds,
        presence_limit=args.presence_limit,
    )
    if args.redis:
        from .cluster import ClusterRegistry

        registry = ClusterRegistry(args.redis, args.node, args.cluster_ttl, **limits)
    else:
        registry = Registry(**limits)
    server = ChatServer(
        (args.host, args.port),
        registry=registry,
        max_clients=args.max_clients,
        max_per_ip=args.max_per_ip,
        max_line=args.max_line,
        flood_rate=args.flood_rate,
        flood_burst=args.flood_burst,
        send_timeout=args.send_timeout,
        idle_timeout=args.idle_timeout,
        ping_timeout=args.ping_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )
    if args.reuse_port:
        from .cluster import reuse_port_socket

        server.set_listener(reuse_port_socket((args.host, args.port), listen=BACKLOG))
    return server


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not args.redis:
        parser.error("--workers above 1 needs --redis: the workers are one chat through it")
    if args.redis and args.workers == 1:
        # Before redis is first imported, so that its sockets and locks are gevent's. Only a
        # cluster node patches: without --redis nothing changes (docs/cluster.md).
        from gevent import monkey

        monkey.patch_all()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LogFormatter())
    logging.basicConfig(level=args.log_level, handlers=[handler])
    if args.workers > 1:
        from .cluster import run_workers

        return run_workers(args, sys.argv[1:] if argv is None else list(argv))

    nofile = raise_nofile_limit()
    if args.max_clients > nofile - RESERVED_FDS - REJECT_SLOTS:
        args.max_clients = max(1, nofile - RESERVED_FDS - REJECT_SLOTS)
        log.warning("open-files limit is %d: --max-clients lowered to %d", nofile, args.max_clients)
    try:
        server = make_server(args)
    except OSError as err:  # --reuse-port binds here
        log.error("cannot listen on %s:%s: %s", args.host, args.port, err)
        return 1
    done = gevent.event.Event()

    def on_signal():
        gevent.spawn(lambda: (server.shutdown(), done.set()))

    def on_stats():
        log.info("Stats: %s", " ".join(f"{k}={v}" for k, v in server.stats().items()))

    # Installed before the server says it listens: whoever waits for that line may signal at once.
    gevent.signal_handler(signal.SIGUSR1, on_stats)
    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    try:
        server.start()
    except OSError as err:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, err)
        return 1
    if args.redis:
        server.registry.start()
    host, port = server.address[:2]
    log.info("Listening on %s (max %d clients, open-files limit %d, pid %d)",
             native.format_addr((host, port)), args.max_clients, nofile, os.getpid())
    done.wait()
    if args.redis:
        server.registry.leave()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

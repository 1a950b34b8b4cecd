"""The chat server: sockets in, lines to the registry, outboxes back out to sockets.

One :class:`ChatServer` (a ``gevent.server.StreamServer``) owns the listening socket and, per
client, a reader greenlet (the handler) and, only while the client's socket is full, a writer
greenlet. Bytes flow one way::

    socket -> LineFramer -> parse_command -> Registry -> member outboxes -> flush -> socket

Writing is coalesced: the registry appends frames to outboxes and marks them ready; once per
turn of the event loop a single callback (:meth:`ChatServer._flush`) joins each ready outbox into
one buffer and does one non-blocking ``send``. Only when the kernel will not take it all does a
writer greenlet start for that client, wait for the socket to drain (bounded by the send
deadline), and exit when the outbox is empty. An idle client therefore costs one greenlet, not two.
"""

import argparse
import logging
import os
import resource
import signal
import socket
import sys

import gevent
import gevent.event
from gevent import GreenletExit
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import wait_write

from . import protocol
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

#: Bytes asked of the kernel per recv: big reads let one wake-up frame many lines at once.
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
#: Ejected for flooding once this many lines over the rate are pending (they decay at the rate).
FLOOD_STRIKES_PER_BURST = 2


class Client(Member):
    """A member with a socket: the server's per-connection state."""

    __slots__ = ("sock", "addr", "framer", "writer", "pending", "tokens", "stamp", "strikes")

    def __init__(self, member_id, sock, addr, max_line, flood_burst):
        super().__init__(member_id)
        self.sock = sock
        self.addr = addr
        self.framer = protocol.LineFramer(max_line)
        self.writer = None  #: the writer greenlet, while the socket is full
        self.pending = None  #: memoryview of bytes joined from the outbox and not yet sent
        self.tokens = float(flood_burst)  #: flood bucket: lines that may still be sent now
        self.stamp = 0.0  #: loop time the bucket was last filled
        self.strikes = 0.0  #: lines dropped for flooding, decaying at the flood rate


def format_addr(address):
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ChatServer(StreamServer):
    """A gevent StreamServer whose handler runs one client's read loop."""

    #: Tunables, set from the command line; see ``--help`` and the README's limits table.
    max_clients = DEFAULT_MAX_CLIENTS
    max_per_ip = DEFAULT_MAX_PER_IP
    max_line = protocol.DEFAULT_MAX_LINE
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
        self.clients = {}  # Client -> handler greenlet
        self.per_ip = {}  # ip -> open connections
        self.stopping = False
        self._flush_scheduled = False
        super().__init__(listener, self.handle, spawn=Pool(self.max_clients + REJECT_SLOTS),
                         backlog=BACKLOG)

    # -- connection lifecycle --------------------------------------------------------------------

    def handle(self, sock, address):
        client_id = format_addr(address)
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
            self._send_last_words(sock, protocol.format_bye(refusal))
            sock.close()
            return
        _tune_socket(sock)
        client = Client(client_id, sock, address, self.max_line, self.flood_burst)
        self.clients[client] = gevent.getcurrent()
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        log.info("Connection has been established with %s", client_id)
        reason = "disconnected"
        try:
            self.registry.add(client, protocol.format_hello(client_id))
            reason = self._read_loop(client)
        except GreenletExit:
            reason = "server-shutdown"
        except OSError:
            reason = "disconnected"
        finally:
            self._close(client, reason)

    def _read_loop(self, client):
        """Read, frame and run lines until the client leaves; returns the reason it left."""
        sock = client.sock
        recv = sock.recv
        feed = client.framer.feed
        run = self._run_line
        sock.settimeout(self.idle_timeout or None)
        ping_sent = False
        while client.gone is None:
            try:
                data = recv(RECV_SIZE)
            except socket.timeout:
                if ping_sent:
                    return "ping-timeout"
                ping_sent = True
                self.registry.send(client, protocol.format_ping(str(int(self.loop.now()))))
                sock.settimeout(self.ping_timeout)
                continue
            if not data:
                cut = client.framer.eof()
                if cut:
                    log.info("%s closed mid-line (%d bytes dropped)", client.id, cut)
                return "disconnected"
            if ping_sent:
                ping_sent = False
                sock.settimeout(self.idle_timeout or None)
            for line in feed(data):
                if type(line) is bytes:
                    reason = run(client, line)
                    if reason is not None:
                        return reason
                elif isinstance(line, protocol.LineTooLong):
                    self.registry.send(client, protocol.format_err(
                        "line-too-long", f"line over {self.max_line} bytes was discarded"))
                else:
                    self.registry.send(client, protocol.format_err(
                        "no-line-end", f"{protocol.NO_LINE_END_LIMIT} bytes without a line end"))
                    return "no-line-end"
                if client.gone is not None:
                    break
        return client.gone

    def _run_line(self, client, line):
        """Run one complete line; returns a disconnect reason, or None to go on."""
        if self.flood_rate:
            reason = self._flood_check(client)
            if reason is not None:
                return None if reason == "dropped" else reason
        registry = self.registry
        try:
            cmd = protocol.parse_command(line)
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
                registry.send(client, protocol.format_pong(*cmd.args))
            elif name == "QUIT":
                return "quit: " + cmd.args[0] if cmd.args else "quit"
            # PONG: any line proves liveness; nothing more to do.
        except protocol.ProtocolError as err:
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
        self.registry.send(client, protocol.format_err(
            "rate-limited", f"over {rate:g} lines/s; line dropped"))
        return "dropped"

    def _close(self, client, reason):
        """Take ``client`` out of the chat, give it its last bytes and ``BYE``, close its socket."""
        self.clients.pop(client, None)
        ip = client.addr[0]
        left = self.per_ip.get(ip, 1) - 1
        if left:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)
        evicted = client.gone is not None and self.registry.ids.get(client.id) is not client
        if not evicted:
            bye = "quit" if reason.startswith("quit") else reason
            self.registry.remove(client, reason, announce=not self.stopping)
            client.gone = reason
            if reason != "disconnected":
                self.registry.send(client, protocol.format_bye(bye))
                self._drain(client, self.shutdown_timeout if self.stopping else CLOSE_LINGER)
        log.info("Connection closed with %s (%s)", client.id, client.gone)
        self._discard(client)

    def _evicted(self, client, reason):
        """Registry hook: ``client`` was evicted (too far behind). Close it without waiting."""
        log.warning("Dropped %s: %s (%d bytes queued)", client.id, reason, client.queued)
        if not client.pending:  # only at a line boundary, or the BYE would end someone's line
            self._send_last_words(client.sock, protocol.format_bye(reason))
        self._discard(client)
        handler = self.clients.get(client)
        if handler is not None and handler is not gevent.getcurrent():
            handler.kill(block=False)

    def _discard(self, client):
        client.outbox.clear()
        client.pending = None
        client.queued = 0
        writer = client.writer
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        client.writer = None
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
                client.writer = gevent.spawn(self._write_loop, client)
                return
            if not client.outbox:
                client.soft_since = None
                return

    def _write_loop(self, client):
        """A client's socket is full: wait until it drains, send, repeat until nothing is queued."""
        sock = client.sock
        fileno = sock.fileno()
        registry = self.registry
        soft = registry.soft_limit
        try:
            while True:
                wait_write(fileno, timeout=self.send_timeout, timeout_exc=_SendTimeout)
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
                    client.queued -= sent
                    client.pending = data[sent:]
                    if sent < len(data):
                        break
                if soft and client.soft_since is not None:
                    if client.queued <= soft:
                        client.soft_since = None
                    elif registry.clock() - client.soft_since > registry.soft_seconds:
                        registry.evict(client, "slow-consumer")
                        return
        except _SendTimeout:
            registry.evict(client, "send-timeout")
        except OSError:
            pass  # the peer went away; the reader finds out and closes
        finally:
            if client.writer is gevent.getcurrent():
                client.writer = None

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

    def shutdown(self):
        """Stop accepting, say ``BYE server-shutdown`` to everyone after what they have queued."""
        if self.stopping:
            return
        self.stopping = True
        log.info("Shutting down: %d clients", len(self.clients))
        self.close()
        handlers = list(self.clients.values())
        gevent.killall(handlers, block=True, timeout=self.shutdown_timeout + 1)
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
    a("--max-line", type=int, default=protocol.DEFAULT_MAX_LINE,
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
    return p


def make_server(args):
    """Build a :class:`ChatServer` from parsed command-line ``args`` (not yet started)."""
    registry = Registry(
        outbox_limit=args.outbox_limit,
        soft_limit=args.outbox_soft_limit,
        soft_seconds=args.outbox_soft_seconds,
        presence_limit=args.presence_limit,
    )
    return ChatServer(
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LogFormatter())
    logging.basicConfig(level=args.log_level, handlers=[handler])

    nofile = raise_nofile_limit()
    if args.max_clients > nofile - RESERVED_FDS - REJECT_SLOTS:
        args.max_clients = max(1, nofile - RESERVED_FDS - REJECT_SLOTS)
        log.warning("open-files limit is %d: --max-clients lowered to %d", nofile, args.max_clients)
    server = make_server(args)
    try:
        server.start()
    except OSError as err:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, err)
        return 1
    host, port = server.address[:2]
    log.info("Listening on %s (max %d clients, open-files limit %d, pid %d)",
             format_addr((host, port)), args.max_clients, nofile, os.getpid())

    done = gevent.event.Event()

    def on_signal():
        gevent.spawn(lambda: (server.shutdown(), done.set()))

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    done.wait()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

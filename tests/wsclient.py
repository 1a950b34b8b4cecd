"""A tiny blocking WebSocket client for the tests: wsproto over a plain socket, bounded waits.

:class:`WsClient` speaks like :class:`conftest.LineClient` (``send``, ``expect``, ``sync``) but
one message per frame; ``send_raw`` puts bytes on the socket as they are, for frames a polite
client would never send (unmasked, oversized, fragmented by hand).
"""

import os
import socket
import struct
import time

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)

from conftest import WAIT, LineClient

NATIVE = "chatroom.v1"


def client_frame(opcode, payload, fin=True, mask=True):
    """A client frame as bytes: masked (as RFC 6455 requires of clients) unless ``mask`` is false."""
    head = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", head, (0x80 if mask else 0) | size)
    elif size < 65536:
        header = struct.pack("!BBH", head, (0x80 if mask else 0) | 126, size)
    else:
        header = struct.pack("!BBQ", head, (0x80 if mask else 0) | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def http_request(port, path="/ws", **headers):
    """Raw bytes of a handshake-like request; ``headers`` (``Sec_WebSocket_Key="..."``) override."""
    fields = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n").encode("latin-1")


def http_exchange(port, request, timeout=WAIT):
    """Send ``request`` bytes, read until the server closes; returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"HTTP/1.1 101"):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class Refused(Exception):
    def __init__(self, status, body):
        super().__init__(status, body)
        self.status = status
        self.body = body


class WsClient:
    """One WebSocket connection to the web listener on ``port``."""

    def __init__(self, port, subprotocols=(NATIVE,), origin=None, hello=True, timeout=WAIT,
                 binary=False, rcvbuf=None, tls=None):
        if rcvbuf is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout)
            if tls is not None:  # an ssl.SSLContext: WSS
                self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        else:  # a small receive window, set before the connection is made, so a stop shows soon
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)  # loopback's is 64 KiB
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        self.timeout = timeout
        self.binary = binary
        self.ws = WSConnection(ConnectionType.CLIENT)
        extra = [("Origin", origin)] if origin else []
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target="/ws",
                                               subprotocols=list(subprotocols),
                                               extra_headers=extra)))
        self._events = []
        self._parts = []
        self.closed = None  # the server's CloseConnection, once it came
        event = self._next(timeout)
        if isinstance(event, RejectConnection):
            body = b""
            while event is not None and not (isinstance(event, RejectData) and event.body_finished):
                event = self._next(timeout)
                if isinstance(event, RejectData):
                    body += event.data
            raise Refused(self._status, body)
        assert isinstance(event, AcceptConnection), event
        self.subprotocol = event.subprotocol
        self.id = None
        if hello:
            line = self.expect("HELLO ")
            self.id = line.split()[1]
            self.expect(f"JOIN lobby {self.id}")

    def _next(self, timeout):
        """The next wsproto event, whole messages joined; None at EOF."""
        deadline = time.monotonic() + timeout
        while not self._events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no WebSocket event within the deadline")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            self.ws.receive_data(chunk or None)
            for event in self.ws.events():
                if isinstance(event, RejectConnection):
                    self._status = event.status_code
                if isinstance(event, Message):
                    self._parts.append(event.data)
                    if not event.message_finished:
                        continue
                    data = (b"" if isinstance(event, BytesMessage) else "").join(self._parts)
                    self._parts = []
                    event = type(event)(data=data)
                self._events.append(event)
            if not chunk and not self._events:
                return None
        return self._events.pop(0)

    # -- sending ---------------------------------------------------------------------------------

    def send(self, line):
        if self.binary:
            data = line.encode("utf-8") if isinstance(line, str) else line
            self.sock.sendall(self.ws.send(BytesMessage(data=data)))
        else:
            self.sock.sendall(self.ws.send(TextMessage(data=line)))

    def send_raw(self, data):
        self.sock.sendall(data)

    def ping(self, payload=b"x"):
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def close_handshake(self, code=1000):
        self.sock.sendall(self.ws.send(CloseConnection(code=code)))

    # -- receiving -------------------------------------------------------------------------------

    def recv_event(self, timeout=None):
        return self._next(timeout or self.timeout)

    def recv_line(self, timeout=None):
        """The next text (or binary) message as str; fails on a close or EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self._next(max(0.01, deadline - time.monotonic()))
            if isinstance(event, TextMessage):
                return event.data
            if isinstance(event, BytesMessage):
                return event.data.decode("utf-8", "replace")
            if isinstance(event, (Ping, Pong)):
                continue
            if isinstance(event, CloseConnection):
                self.closed = event
            raise EOFError(f"no message: {event!r}")

    def expect(self, prefix, timeout=None, skip=("JOIN ", "PART ", "NICK ")):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            line = self.recv_line(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line
            if not line.startswith(skip):
                raise AssertionError(f"expected {prefix!r}, got {line!r}")

    def expect_close(self, timeout=None):
        """Read until the server's close frame; returns (code, reason, lines before it)."""
        lines = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self._next(max(0.01, deadline - time.monotonic()))
            if isinstance(event, (TextMessage, BytesMessage)):
                lines.append(event.data if isinstance(event, TextMessage) else event.data.decode())
            elif isinstance(event, CloseConnection):
                self.closed = event
                return event.code, event.reason, lines
            elif event is None:
                raise AssertionError(f"EOF without a close frame after {lines!r}")

    def expect_eof(self, timeout=None):
        """Read until the server closes the TCP connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return
            except ConnectionResetError:
                return
            except socket.timeout:
                raise AssertionError("the server did not close the connection") from None

    #: A PING round trip (every line queued before it, as LineClient's), and closing the socket.
    sync = LineClient.sync
    close = LineClient.close

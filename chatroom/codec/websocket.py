"""WebSocket (RFC 6455) for the web listener, without I/O: HTTP requests and frames in, events out.

The web listener takes one HTTP/1.1 request per connection. :class:`HttpReader` (on h11) turns the
bytes of a request into a :class:`Request`; :func:`check_upgrade` says whether it is a WebSocket
handshake this server accepts (method, ``Upgrade``, ``Connection``, version, key, ``Origin``,
subprotocol) and gives the ``101`` to send or the HTTP refusal. After the ``101`` a
:class:`FrameReader` (on wsproto) turns the client's frames into whole messages, answers pings,
refuses unmasked frames and messages over the size limit, and runs the close handshake.

The server's own frames are built here with :func:`frame` rather than by wsproto: a server frame is
unmasked, so it is a two- to ten-byte header and the payload, built once per event and shared by
every WebSocket recipient of it.
"""

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

import h11
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

#: Subprotocols, in the server's order of preference when a client offers several of one kind.
NATIVE = "chatroom.v1"  #: the native protocol, one line per text frame (the web client's)
IRC_TEXT = "text.ircv3.net"  #: IRC per IRCv3, one message per text frame
IRC_BINARY = "binary.ircv3.net"  #: IRC per IRCv3, one message per binary frame
SUBPROTOCOLS = (NATIVE, IRC_BINARY, IRC_TEXT)

#: Opcodes of the frames the server sends.
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8

#: Close codes (RFC 6455 section 7.4.1) the server sends.
NORMAL = 1000  #: QUIT, or the close handshake the client began
GOING_AWAY = 1001  #: the server is stopping
PROTOCOL_ERROR = 1002  #: a frame broke RFC 6455 (an unmasked one, a bad opcode)
INVALID_DATA = 1007  #: a text message that is not UTF-8
POLICY = 1008  #: dropped by a limit: flood, slow consumer, ping timeout
TOO_BIG = 1009  #: a message over the size limit
SERVER_ERROR = 1011  #: the server failed

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Longest HTTP request head the listener reads before answering 431.
MAX_REQUEST_HEAD = 8192


def frame(opcode, payload):
    """One final, unmasked frame (what a server sends) of ``opcode`` holding ``payload`` bytes."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def close_frame(code, reason=""):
    """A close frame with ``code`` and a reason (cut to fit the 125-byte control frame limit)."""
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return frame(CLOSE, body)


def line_framer(opcode):
    """A function that turns bytes of whole lines (``\\n`` or ``\\r\\n`` ended) into one frame each.

    The line ends are dropped: a WebSocket message is one line, as the IRCv3 WebSocket
    specification and this server's native subprotocol say.
    """
    head = 0x80 | opcode

    def frame_lines(data):
        if data.count(b"\n") == 1:  # the usual case: one event, one line
            payload = data[:-2] if data.endswith(b"\r\n") else data[:-1]
            size = len(payload)
            if size < 126:
                return bytes((head, size)) + payload
            return frame(opcode, payload)
        out = []
        for line in data.split(b"\n"):
            if line:
                out.append(frame(opcode, line[:-1] if line.endswith(b"\r") else line))
        return b"".join(out)

    return frame_lines


def accept_token(key):
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key`` (bytes or str)."""
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode("ascii")


# -- HTTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP request head. ``headers``: lower-case name -> value (str), repeated ones joined."""

    method: str
    target: str
    headers: dict
    http_version: str = "1.1"


@dataclass(frozen=True)
class BadRequest:
    """Bytes that are not an HTTP request: answer ``status`` and close."""

    status: int
    text: str


class HttpReader:
    """The bytes of one HTTP request in, a :class:`Request` (or :class:`BadRequest`) out."""

    def __init__(self, max_head=MAX_REQUEST_HEAD):
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.done = False

    def feed(self, data):
        """Feed bytes; returns the request once its head is complete, else None."""
        if self.done:
            return None
        self._conn.receive_data(data)
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as err:
            self.done = True
            return BadRequest(err.error_status_hint, "bad request")
        if event is h11.NEED_DATA:
            return None
        self.done = True
        if type(event) is not h11.Request:
            return BadRequest(400, "bad request")
        headers = {}
        for name, value in event.headers:
            name = name.decode("latin-1")
            value = value.decode("latin-1")
            headers[name] = headers[name] + ", " + value if name in headers else value
        return Request(event.method.decode("ascii"), event.target.decode("latin-1"), headers,
                       event.http_version.decode("ascii"))

    @property
    def trailing_data(self):
        """Bytes that came after the request head (a client's first frames, if it did not wait)."""
        return self._conn.trailing_data[0]


def response(status, reason, body=b"", content_type="text/plain; charset=utf-8", headers=()):
    """A whole HTTP/1.1 response that closes the connection after it."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close",
             "X-Content-Type-Options: nosniff", "Cache-Control: no-cache"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_error(status, reason, text, headers=()):
    """A plain-text HTTP error: ``http_error(403, "Forbidden", "origin not allowed")``."""
    return response(status, reason, (text + "\n").encode("utf-8"), headers=headers)


def _tokens(value):
    return {t.strip().lower() for t in value.split(",") if t.strip()}


@dataclass(frozen=True)
class Upgrade:
    """A handshake accepted: send ``response`` (the 101), then speak ``subprotocol``."""

    subprotocol: str
    response: bytes


@dataclass(frozen=True)
class Refused:
    """A handshake refused: send ``response`` and close. ``why`` is for the log."""

    why: str
    response: bytes


def own_origins(host, port):
    """The origins of a listener on ``host:port`` itself (the page it serves opens from these)."""
    names = {host}
    if host in ("127.0.0.1", "localhost", "::1"):
        names = {"127.0.0.1", "localhost", "[::1]"}
    elif ":" in host:
        names = {f"[{host}]"}
    return frozenset(f"{scheme}://{name}:{port}" for name in names for scheme in ("http", "https"))


def check_upgrade(request, allowed_origins):
    """Whether ``request`` is a WebSocket handshake to accept, as :class:`Upgrade` or :class:`Refused`.

    ``allowed_origins`` is a set of ``scheme://host:port`` strings, or None for any origin. A
    request without ``Origin`` is not from a browser, so cross-site rules do not apply to it.
    """
    h = request.headers
    if request.method != "GET":
        return Refused("method " + request.method,
                       http_error(405, "Method Not Allowed", "WebSocket handshakes are GET requests",
                               headers=(("Allow", "GET"),)))
    if "websocket" not in _tokens(h.get("upgrade", "")) or \
            "upgrade" not in _tokens(h.get("connection", "")):
        return Refused("no upgrade", http_error(
            426, "Upgrade Required", "this is a WebSocket endpoint: send Upgrade: websocket",
            headers=(("Upgrade", "websocket"), ("Connection", "Upgrade"))))
    if h.get("sec-websocket-version", "").strip() != "13":
        return Refused("version " + h.get("sec-websocket-version", "none"), http_error(
            426, "Upgrade Required", "only WebSocket version 13 is supported",
            headers=(("Sec-WebSocket-Version", "13"),)))
    key = h.get("sec-websocket-key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return Refused("bad key", http_error(400, "Bad Request", "bad Sec-WebSocket-Key"))
    origin = h.get("origin")
    if origin is not None and allowed_origins is not None and origin not in allowed_origins:
        return Refused("origin " + origin, http_error(403, "Forbidden", "origin not allowed"))
    offered = [p.strip() for p in h.get("sec-websocket-protocol", "").split(",") if p.strip()]
    chosen = None
    for p in offered:  # the client's first choice among the ones spoken here
        if p in SUBPROTOCOLS:
            chosen = p
            break
    if offered and chosen is None:
        return Refused("subprotocols " + ",".join(offered), http_error(
            400, "Bad Request", "no supported subprotocol; offer one of " + ", ".join(SUBPROTOCOLS)))
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Accept: " + accept_token(key)]
    if chosen is not None:
        lines.append("Sec-WebSocket-Protocol: " + chosen)
    # Without a subprotocol the client gets the native protocol (what a bare WebSocket tool expects).
    return Upgrade(chosen or NATIVE, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


# -- frames --------------------------------------------------------------------------------------


def _unmask(mask, data):
    """``data`` XOR the 4-byte ``mask`` repeated (RFC 6455 5.3), in one big-integer operation."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


@dataclass(frozen=True)
class Reply:
    """Bytes the codec answers with on its own (a pong) to send to the client."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """The connection ends: send ``data`` (a close frame, maybe empty) and close. ``reason``
    is the server's disconnect reason (docs/protocol.md) or None for the client's own close."""

    code: int
    reason: str
    data: bytes


class FrameReader:
    """A client's frames in; whole messages (``bytes``), :class:`Reply` and :class:`Close` out.

    ``max_message`` bounds a message's payload, however many frames it comes in: the first
    byte over closes the connection with 1009 before the rest is read.

    The common frame, a whole masked text or binary message of under 64 KiB outside any
    fragmented one, is read here directly (header, unmasking, UTF-8 check); every other frame is
    given to wsproto whole, one frame at a time, so wsproto never holds part of a frame and the
    two never disagree about where the next one starts. A text frame that is not UTF-8 goes to
    wsproto too, which closes with 1007 as for any other.
    """

    def __init__(self, max_message, trailing=b""):
        self.max_message = max_message
        self._conn = Connection(ConnectionType.SERVER)
        self._parts = []
        self._size = 0
        self.closed = False
        self._buf = trailing  #: bytes of a frame not yet whole

    def feed(self, data):
        """Feed bytes from the socket; returns a list of messages and events."""
        if self.closed:
            return []
        buf = self._buf + data if self._buf else data
        out = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size = b1 & 0x7F
            start = pos + 2
            if size == 126:
                if end - pos < 4:
                    break
                size = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif size == 127:
                if end - pos < 10:
                    break
                size = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:
                start += 4
            if size > self.max_message or (b0 & 0x08 and size > 125):
                # Never waited for: a message over the limit (1009, from its header on), or a
                # control frame longer than RFC 6455 allows (1002).
                self._buf = b""
                if b0 & 0x08:
                    out.append(self._close(PROTOCOL_ERROR, "control frame over 125 bytes",
                                           "protocol-error"))
                else:
                    out.append(self._close(TOO_BIG, f"message over {self.max_message} bytes",
                                           "message-too-big"))
                return out
            stop = start + size
            if stop > end:
                break  # wait for the whole frame
            payload = None
            if (b0 == 0x81 or b0 == 0x82) and b1 & 0x80 and not self._parts:
                payload = _unmask(buf[start - 4:start], buf[start:stop])
                if b0 == 0x81 and not payload.isascii():
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        payload = None  # wsproto says why, with 1007
            if payload is not None:
                out.append(payload)
            else:
                self._wsproto(buf[pos:stop], out)
                if self.closed:
                    self._buf = b""
                    return out
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return out

    def _wsproto(self, data, out):
        """Run one whole frame through wsproto."""
        conn = self._conn
        conn.receive_data(data)
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                payload = event.data
                if kind is TextMessage:
                    payload = payload.encode("utf-8")
                self._size += len(payload)
                if self._size > self.max_message:
                    out.append(self._close(TOO_BIG, f"message over {self.max_message} bytes",
                                           "message-too-big"))
                    break
                if event.message_finished:
                    if self._parts:
                        self._parts.append(payload)
                        payload = b"".join(self._parts)
                        self._parts = []
                    self._size = 0
                    out.append(payload)
                else:
                    self._parts.append(payload)
            elif kind is Ping:
                out.append(Reply(conn.send(event.response())))
            elif kind is CloseConnection:
                if event.code in (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY,
                                  CloseReason.NO_STATUS_RCVD) or int(event.code) >= 3000:
                    # The client's close: answer it (1000) and hang up.
                    self.closed = True
                    out.append(Close(int(event.code), None, close_frame(NORMAL)))
                else:  # wsproto found a protocol error (an unmasked frame, bad UTF-8...)
                    reason = ("invalid-utf8" if event.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA
                              else "protocol-error")
                    out.append(self._close(int(event.code), event.reason or reason, reason))
                break
            # Pong: any bytes received already count as liveness.

    def _close(self, code, text, reason):
        self.closed = True
        return Close(code, reason, close_frame(code, text))

    def eof(self):
        return 0

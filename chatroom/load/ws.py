"""The client side of a WebSocket for the load clients (``--transport ws``).

:func:`upgrade` sends the HTTP/1.1 handshake to the web listener's ``/ws`` (subprotocol
``chatroom.v1``: the native protocol, one line per text frame), checks the ``101`` and its
``Sec-WebSocket-Accept``, and returns a :class:`WebSocket`: a stand-in for the socket whose
``sendall`` takes native lines and sends one masked text frame per line, and whose ``recv`` /
``recv_into`` give back the server's frames as ``\\n``-ended lines. The clients above read and
write the native byte stream as they do over TCP.

Masking is cheap: the key is one byte repeated four times, so masking is a single
``bytes.translate`` over a whole batch of lines, whatever the offset of each frame's payload.
(RFC 6455 wants an unpredictable key per frame to protect proxies from browser-made traffic; a
load generator on loopback has nothing to protect, and the server only requires that client
frames be masked.)
"""

import base64
import os
import struct

from ..codec.websocket import NATIVE, accept_token
from .config import RECV_SIZE, SetupError

PATH = "/ws"
#: Longest handshake answer head read before giving up.
MAX_HEAD = 8192

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA

_KEY = os.urandom(1)[0] | 1  #: never 0: every byte is changed, as masking is meant to
MASK_KEY = bytes((_KEY,)) * 4
_MASK = bytes(b ^ _KEY for b in range(256))
_MASKED_EOL = bytes((0x0A ^ _KEY,))
#: Fewest frames of one size in a row that :meth:`WebSocket._lines` unframes as a run.
RUN_MIN = 4
_SIZES = [bytes((n,)) for n in range(256)]
#: Header (with the mask key) of a masked final text frame of each payload size below 126.
_HEADS = [bytes((0x80 | TEXT, 0x80 | n)) + MASK_KEY for n in range(126)]


def client_frame(opcode, masked):
    """A final, masked client frame of ``opcode`` around ``masked`` (a payload already masked)."""
    n = len(masked)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + MASK_KEY + masked


def frame_lines(data):
    """Whole ``\\n``-ended lines to masked text frames, one a line (its ``\\n`` dropped)."""
    parts = data.translate(_MASK).split(_MASKED_EOL)
    parts.pop()  # what followed the last line end: nothing
    heads = _HEADS
    out = []
    for p in parts:
        n = len(p)
        if n < 126:
            out.append(heads[n])
            out.append(p)
        else:
            out.append(client_frame(TEXT, p))
    return b"".join(out)


def upgrade(sock, host, port):
    """The WebSocket handshake on a connected ``sock``; returns the :class:`WebSocket` over it."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock.sendall((f"GET {PATH} HTTP/1.1\r\nHost: {where}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {NATIVE}\r\n"
                  f"Origin: http://{where}\r\n\r\n").encode("latin-1"))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise SetupError("server closed the connection during the WebSocket handshake"
                             + (f": {data[:200]!r}" if data else ""))
        data += chunk
        if len(data) > MAX_HEAD and b"\r\n\r\n" not in data:
            raise SetupError("WebSocket handshake answer head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise SetupError(f"WebSocket handshake refused: {lines[0]!r} {rest[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept_token(key):
        raise SetupError("WebSocket handshake: wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-protocol") != NATIVE:
        raise SetupError(f"WebSocket handshake: server did not choose {NATIVE}")
    return WebSocket(sock, rest)


class WebSocket:
    """A connected socket after the handshake: native lines out as frames, frames in as lines.

    The server's frames are unmasked; a text (or binary) message becomes its payload and
    ``\\n``. A ping is answered with a pong; a close frame is answered with one and reads as
    the end of the stream. Fragmented messages are joined (the server does not send them).

    Unframing is what a load run costs the generator most (every receiver reads every line), so
    runs of whole text frames of one size, which most of a chunk is (a load run's lines differ
    only in their digits), are checked and unframed by slicing with a stride, in C: some 10 ns a
    frame where walking them one by one costs 200.
    """

    __slots__ = ("sock", "rest", "out", "parts", "closed", "sending", "queued")

    def __init__(self, sock, rest=b""):
        self.sock = sock
        self.rest = rest  #: the start of a frame not yet whole
        self.out = b""  #: lines decoded beyond what the last read asked for
        self.parts = None  #: payloads of a fragmented message so far
        self.closed = False  #: a close frame came: reads give EOF from now on
        self.sending = False  #: a sendall is under way (a pong waits for it)
        self.queued = []

    # -- writing ---------------------------------------------------------------------------------

    def sendall(self, data):
        self._send(frame_lines(data))

    def _send(self, frames):
        # Two greenlets write to one client: its talker and its reader (a pong). A sendall may
        # yield halfway; what the other writes meanwhile waits, so frames never interleave.
        if self.sending:
            self.queued.append(frames)
            return
        self.sending = True
        try:
            self.sock.sendall(frames)
            while self.queued:
                more = b"".join(self.queued)
                self.queued.clear()
                self.sock.sendall(more)
        finally:
            self.sending = False

    # -- reading ---------------------------------------------------------------------------------

    def recv(self, size=RECV_SIZE):
        """Up to ``size`` bytes of ``\\n``-ended lines; b"" at the end (EOF or close frame)."""
        if self.out:
            data, self.out = self.out[:size], self.out[size:]
            return data
        while not self.closed:
            raw = self.sock.recv(size)
            if not raw:
                return b""
            data = self._lines(raw)
            if data:
                if len(data) > size:
                    data, self.out = data[:size], data[size:]
                return data
        return b""

    def recv_into(self, buf, nbytes=0):
        data = self.recv(nbytes or len(buf))
        n = len(data)
        buf[:n] = data
        return n

    def _lines(self, data):
        if self.rest:
            data = self.rest + data
        n = len(data)
        i = 0
        out = []
        append = out.append
        while i + 2 <= n:
            b0 = data[i]
            size = data[i + 1]
            if b0 == 0x81 and size < 126 and self.parts is None:
                # A run of whole text frames of one size (most of a load run's frames): check
                # them all and strip their headers with a few C calls rather than one by one.
                stride = size + 2
                k = (n - i) // stride
                j = i + (RUN_MIN - 1) * stride  # a quick look first: mixed sizes walk on
                if k >= RUN_MIN and data[j] == 0x81 and data[j + 1] == size:
                    heads = data[i:i + k * stride:stride]
                    k -= len(heads.lstrip(b"\x81"))
                    sizes = data[i + 1:i + k * stride:stride]
                    k -= len(sizes.lstrip(_SIZES[size]))
                else:
                    k = 0
                if k >= RUN_MIN:
                    run = bytearray(data[i:i + k * stride])
                    del run[::stride]  # the 0x81s: a size byte before each payload is left
                    run[::size + 1] = b"\n" * k
                    del run[0]
                    run.append(0x0A)
                    append(run)
                    i += k * stride
                    continue
                end = i + stride
                if end > n:
                    break
                append(data[i + 2:end])
                append(b"\n")
                i = end
                continue
            start = i + 2
            if size >= 126:
                if size == 126:
                    start = i + 4
                    size = int.from_bytes(data[i + 2:start], "big")
                elif size == 127:
                    start = i + 10
                    size = int.from_bytes(data[i + 2:start], "big")
                else:
                    raise ConnectionError("masked frame from the server")
                if start > n:
                    break
            end = start + size
            if end > n:
                break
            self._other(b0, data[start:end], append)
            if self.closed:
                i = n
                break
            i = end
        self.rest = data[i:] if i < n else b""
        return b"".join(out)

    def _other(self, b0, payload, append):
        opcode = b0 & 0x0F
        if opcode in (TEXT, BINARY, 0):
            if self.parts is None:
                self.parts = []
            self.parts.append(payload)
            if b0 & 0x80:
                self.parts.append(b"\n")
                append(b"".join(self.parts))
                self.parts = None
        elif opcode == PING:
            self._send(client_frame(PONG, payload.translate(_MASK)))
        elif opcode == CLOSE:
            self.closed = True
            try:
                self._send(client_frame(CLOSE, payload[:2].translate(_MASK)))
            except OSError:
                pass
        # PONG and unknown opcodes: nothing to do

    # -- the rest of the socket ------------------------------------------------------------------

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()

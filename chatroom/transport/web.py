"""The web listener (docs/web.md): the web client's files over HTTP, and chat over WebSocket at ``/ws``.

Every connection starts as an :class:`HttpClient` that reads one request. A file request is
answered and the connection closed. A WebSocket handshake that passes
(:func:`chatroom.codec.websocket.check_upgrade`) turns the connection into a client of the chosen
subprotocol: :class:`WsNativeClient` (the native protocol, one line per text frame) or
:class:`WsIrcClient` (IRC per IRCv3). Those are the native and IRC clients with two differences:
their frames come from a :class:`~chatroom.codec.websocket.FrameReader`, and their encoder frames
what it encodes, so an event is framed once and the frame shared by every WebSocket recipient of
the same kind; their direct replies go through ``registry.reply``, which frames them too.
"""

import logging
from http import HTTPStatus
from pathlib import Path

import gevent

from ..codec import irc, irc_events, native
from ..codec import websocket as ws
from .connection import Client
from .irc import IrcClient
from .irc.isupport import CLIENT_TAGS_LIMIT
from .native import NativeClient

log = logging.getLogger("chatroom.server")

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon"}
#: The page may load only its own files and talk only to its own server.
CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
       "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
WS_PATH = "/ws"


def _load_files():
    files = {}
    if STATIC.is_dir():
        for path in sorted(STATIC.iterdir()):
            if path.is_file() and path.suffix in TYPES:
                files["/" + path.name] = (TYPES[path.suffix], path.read_bytes())
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


FILES = _load_files()

#: Close code for each disconnect reason (RFC 6455 7.4.1); others are a limit's: 1008.
CLOSE_CODES = {"quit": ws.NORMAL, "server-shutdown": ws.GOING_AWAY,
               "message-too-big": ws.TOO_BIG, "protocol-error": ws.PROTOCOL_ERROR,
               "invalid-utf8": ws.INVALID_DATA, "server-error": ws.SERVER_ERROR}


# -- encoders that frame ---------------------------------------------------------------------------

EVENTS = ("msg", "msg_batch", "tell", "join", "part", "quit", "nick", "kick", "topic", "tagmsg",
          "away", "mode")


def framing(base, opcode):
    """A subclass of encoder class ``base`` whose every event is one WebSocket frame of ``opcode``."""
    frame_lines = ws.line_framer(opcode)
    namespace = {"wrap": staticmethod(frame_lines)}

    def framed(name):
        inner = getattr(base, name)

        def method(self, *args):
            data = inner(self, *args)
            return None if data is None else frame_lines(data)

        method.__name__ = name
        return method

    for name in EVENTS:
        namespace[name] = framed(name)
    kind = "Text" if opcode == ws.TEXT else "Binary"
    return type(f"Ws{kind}{base.__name__}", (base,), namespace)


#: The native encoder, framed: every web-client member shares it.
NATIVE_ENCODER = framing(native.Encoder, ws.TEXT)()
_IrcText = framing(irc_events.Encoder, ws.TEXT)
_IrcBinary = framing(irc_events.Encoder, ws.BINARY)
_IRC_ENCODERS = {}


def irc_encoder_for(caps, binary):
    key = (frozenset(caps) & irc_events.EVENT_CAPS, binary)
    encoder = _IRC_ENCODERS.get(key)
    if encoder is None:
        encoder = _IRC_ENCODERS[key] = (_IrcBinary if binary else _IrcText)(key[0])
    return encoder


# -- the HTTP stage --------------------------------------------------------------------------------


class _HttpFramer:
    """The framer of a connection still in HTTP: one request, then nothing."""

    __slots__ = ("reader",)

    def __init__(self):
        self.reader = ws.HttpReader()

    def feed(self, data):
        request = self.reader.feed(data)
        return () if request is None else (request,)

    def eof(self):
        return 0


class HttpClient(Client):
    """A web connection before (or instead of) a WebSocket: one HTTP request, one answer.

    Its request must be whole within ``--ping-timeout`` seconds of connecting, so a client that
    trickles a request head (slowloris) holds its slot no longer than one that never answers a
    PING does.
    """

    __slots__ = ("timer",)
    protocol_name = "Web"

    @classmethod
    def refusal(cls, server, reason):
        return ws.http_error(503, "Service Unavailable", reason)

    def make_framer(self, server):
        return _HttpFramer()

    def start(self, server):
        # Not a member until its handshake passes; until its request is whole, on a deadline.
        self.timer = server.loop.timer(server.ping_timeout)
        self.timer.start(self._too_slow, server)

    def _too_slow(self, server):
        if not self.closing:
            gevent.spawn(server._close, self, "request-timeout")

    def run_line(self, server, line):
        return None

    def ping(self, server, token):
        return b""  # idle before its request: the ping timeout closes it

    def bye(self, server, reason):
        return b""

    def on_event(self, server, request):
        """Answer the request; returns the disconnect reason ``served`` or ``refused`` (HTTP
        done), or None once it became a WebSocket client."""
        self.timer.stop()
        registry = server.registry
        if isinstance(request, ws.BadRequest):
            registry.send(self, ws.http_error(request.status, HTTPStatus(request.status).phrase,
                                              request.text))
            return "refused"
        path = request.target.split("?", 1)[0]
        if path == WS_PATH or "websocket" in request.headers.get("upgrade", "").lower():
            # /ws always; another path when it asks for a WebSocket (IRC clients open "/")
            return self._upgrade(server, request)
        if request.method not in ("GET", "HEAD"):
            registry.send(self, ws.http_error(405, "Method Not Allowed", "GET only",
                                           headers=(("Allow", "GET, HEAD"),)))
            return "refused"
        found = FILES.get(path)
        if found is None:
            registry.send(self, ws.http_error(404, "Not Found", "not found"))
            return "refused"
        content_type, body = found
        data = ws.response(200, "OK", body, content_type,
                           headers=(("Content-Security-Policy", CSP),
                                    ("Referrer-Policy", "no-referrer")))
        if request.method == "HEAD":
            data = data[:len(data) - len(body)]
        registry.send(self, data)
        return "served"

    def _origins(self, server):
        if server.web_any_origin:
            return None
        if server.web_origins is not None:
            return server.web_origins
        host, port = self.sock.getsockname()[:2]
        return ws.own_origins(host, port)

    def _upgrade(self, server, request):
        result = ws.check_upgrade(request, self._origins(server))
        if isinstance(result, ws.Refused):
            log.info("WebSocket handshake from %s refused: %s", self.id, result.why)
            server.registry.send(self, result.response)
            return "refused"
        if result.subprotocol == ws.NATIVE:
            new = WsNativeClient(self.id, self.sock, self.addr, self.watcher, server)
        else:
            new = WsIrcClient(self.id, self.sock, self.addr, self.watcher, server,
                              binary=result.subprotocol == ws.IRC_BINARY)
        server.registry.send(new, result.response)
        log.info("WebSocket %s from %s", result.subprotocol, self.id)
        server.upgrade(self, new, self.framer.reader.trailing_data)
        return None


# -- WebSocket clients -----------------------------------------------------------------------------


class WebSocketMixin:
    """What a WebSocket client does differently from its TCP protocol's: frames in and out."""

    __slots__ = ()

    def make_framer(self, server):
        return ws.FrameReader(server.web_max_message)

    def on_event(self, server, event):
        """A ping is answered, a close ends the connection: returns a disconnect reason or None."""
        if type(event) is ws.Reply:
            server.registry.send(self, event.data)
            return None
        if event.reason is None:  # the client closed: answer its close frame, then hang up
            if not self.pending:  # not in the middle of a frame the socket half took
                server._send_last_words(self.sock, event.data)
            return "disconnected"
        return event.reason

    def bye(self, server, reason):
        words = super().bye(server, reason)
        word = "quit" if reason.startswith("quit") else reason
        return self.encoder.wrap(words) + ws.close_frame(CLOSE_CODES.get(word, ws.POLICY), word)


class WsNativeClient(WebSocketMixin, NativeClient):
    """The native protocol over WebSocket (subprotocol ``chatroom.v1``): the web client's."""

    __slots__ = ()
    encoder = NATIVE_ENCODER

    def run_line(self, server, line):
        if len(line) > server.max_line:
            server.registry.reply(self, self.line_too_long(server, len(line)))
            return None
        return NativeClient.run_line(self, server, line)


class WsIrcClient(WebSocketMixin, IrcClient):
    """IRC over WebSocket (``text.ircv3.net`` or ``binary.ircv3.net``): one message per frame."""

    __slots__ = ("binary",)

    def __init__(self, member_id, sock, addr, watcher, server, binary=False):
        self.binary = binary
        super().__init__(member_id, sock, addr, watcher, server)

    def encoder_for(self, caps):
        return irc_encoder_for(caps, self.binary)

    def run_line(self, server, line):
        # One message per frame, without a line end; the IRC parser takes it as the TCP framer
        # would hand it over.
        if line.endswith(b"\r\n"):
            line = line[:-2]
        elif line.endswith(b"\n"):
            line = line[:-1]
        if not line or b"\n" in line or b"\r" in line:
            return None  # IRCv3: a frame holds one message; smuggled line ends are not obeyed
        if line[0] == 0x40:  # b"@": the same tag and body limits as the TCP framer's
            space = line.find(b" ")
            too_long = (len(line) > CLIENT_TAGS_LIMIT if space < 0 else
                        space > CLIENT_TAGS_LIMIT or len(line) - space - 1 > irc.MAX_BODY)
        else:
            too_long = len(line) > irc.MAX_BODY
        if too_long:
            server.registry.reply(self, self.line_too_long(server, len(line)))
            return None
        return IrcClient.run_line(self, server, line)

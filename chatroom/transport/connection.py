"""One client connection as the transport sees it: its socket, framer, timers and flood bucket.

:class:`Client` is a registry :class:`~chatroom.core.registry.Member` with a socket. Each wire
protocol subclasses it (``transport.native``, ``transport.irc``) to say how its lines are framed
and run and how the transport's own words (errors, ``PING``, goodbye) are put in that protocol.
"""

import hmac
import unicodedata

from ..codec.native import ProtocolError
from ..core.registry import Member


class Client(Member):
    """A member with a socket: the server's per-connection state."""

    __slots__ = ("sock", "out", "writer", "hold", "addr", "framer", "watcher", "pending", "last_seen",
                 "ping_sent", "closing", "tokens", "stamp", "strikes", "tls", "account",
                 "admitted", "oper")

    def __init__(self, member_id, sock, addr, watcher, server):
        super().__init__(member_id)
        now = server.loop.now()
        self.sock = sock
        self.addr = addr
        self.framer = self.make_framer(server)
        self.watcher = watcher  #: read watcher, started while no reader greenlet runs
        self.writer = None  #: the writer greenlet, while the socket is full
        self.pending = None  #: memoryview of bytes taken from the outbox and not yet sent
        self.last_seen = now  #: loop time of the last bytes received
        self.ping_sent = 0.0  #: loop time the server sent an unanswered PING, or 0
        self.closing = False  #: set once, when the connection starts to close
        self.tokens = float(server.flood_burst)  #: flood bucket: lines that may still be sent now
        self.stamp = now  #: loop time the bucket was last filled
        self.strikes = 0.0  #: lines dropped for flooding, decaying at the flood rate
        self.hold = 0  #: above 0, the outbox waits (for history, for a labeled response) unflushed
        self.tls = hasattr(sock, "pending")  #: a TLS socket (may hold decrypted bytes unread)
        #: What the flush calls ``send`` on: a plain socket's own, non-blocking ``_socket``
        #: under gevent's wrapper (whose ``send`` only adds a wait we never want), or the
        #: TLS socket (its records need the wrapper).
        self.out = sock if self.tls else getattr(sock, "_sock", sock)
        self.account = None  #: the account name this connection is logged in to, or None
        self.admitted = server.password is None  #: gave the server password (or none is needed)
        self.oper = False  #: a server operator (logged in to an --oper account; IRC: after OPER)

    @property
    def host(self):
        return self.addr[0]

    @staticmethod
    def password_matches(server, given):
        """Whether ``given`` is the server password (NFKC both, compared in constant time)."""
        given = unicodedata.normalize("NFKC", given).encode("utf-8")
        return hmac.compare_digest(given, server.password)

    def check_nick_free(self, server, nick):
        """ProtocolError ``nick-registered`` unless ``nick`` is no account's or this one's (no I/O)."""
        accounts = server.accounts
        if (accounts is not None and accounts.is_registered(nick)
                and (self.account is None or self.account.casefold() != nick.casefold())):
            raise ProtocolError("nick-registered",
                                f"nickname '{nick}' is registered; LOGIN {nick} <password> to use it")

    # -- what each protocol says ---------------------------------------------------------------
    # Every method returns ready-to-send bytes in the client's protocol.

    @classmethod
    def refusal(cls, server, reason):
        """The last words to a connection refused at accept (server full, too many from its IP)."""
        raise NotImplementedError

    def make_framer(self, server):
        raise NotImplementedError

    def start(self, server):
        """The connection is set up: greet it and tell the registry."""
        raise NotImplementedError

    def run_line(self, server, line):
        """Run one complete line; returns a disconnect reason, or None to go on."""
        raise NotImplementedError

    def run_batch(self, server):
        """Run what ``run_line`` collected from this read (nothing, unless a protocol batches)."""

    def line_too_long(self, server, size):
        raise NotImplementedError

    def on_event(self, server, event):
        """The framer gave something other than a line: a line framer's only such thing is its
        no-line-end verdict; a WebSocket's are its handshake and control frames. Returns a
        disconnect reason, or None to go on."""
        words = self.no_line_end(server)
        if words is not None:
            server.registry.reply(self, words)
        return "no-line-end"

    def no_line_end(self, server):
        raise NotImplementedError

    def rate_limited(self, server, rate):
        raise NotImplementedError

    def ping(self, server, token):
        raise NotImplementedError

    def bye(self, server, reason):
        raise NotImplementedError

    def history_lines(self, server, room_name, messages, replay):
        """``messages`` of ``room_name`` (oldest first) as this protocol shows history."""
        raise NotImplementedError

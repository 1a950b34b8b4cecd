"""The load clients speaking IRC: the receivers and talkers of :mod:`.clients`, over an IRC server.

Each client registers (``NICK lN``, ``USER lN 0 * :load``, then waits for ``001``), joins the
channel ``#<room>`` and waits for its own ``JOIN`` echo and the ``366`` that ends the channel's
names list: only then is it in the room. A sender says::

    PRIVMSG #room :L <sender> <seq> <monotonic_ns> <padding>

and the others receive ``:nick!user@host PRIVMSG #room :L <sender> ...``. Split on its first 7
spaces, that line has the data mark in field 3 and the sender, sequence number and send time in
fields 4 to 6, where the native ``MSG <room> <from> L ...`` line has them, so checked receivers run
the same loop; only field 1 (``PRIVMSG``) and the mark's leading colon differ. Counting receivers
count `` PRIVMSG #room :`` in C, as the native ones count ``MSG`` line starts.

Every client answers the server's ``PING :x`` with ``PONG :x``: a checked receiver as it frames the
line, a counting one after a C search for ``PING`` in what it read finds one (it frames only then).
"""

import time

from ..codec.lines import LineFramer
from .clients import MARK_DATA, MARK_END, CheckedReceiver, Client, CountingReceiver
from .config import RECV_SIZE, SetupError

#: Most text bytes a sender may put in a line: an IRC line is at most 512 bytes with its CR LF,
#: and the server puts ``:nick!user@host PRIVMSG #room :`` before the text it relays.
MAX_TEXT = 400
#: Replies during setup that mean the client cannot go on (nick in use or invalid, not
#: registered, channel full, invite-only, banned, keyed, too many channels, and with ``oper``:
#: unknown command, wrong password, no operator here, unknown user mode).
FATAL_NUMERICS = frozenset(
    b"%d" % n for n in (403, 405, 421, 431, 432, 433, 436, 437, 451, 461, 462, 464, 465, 471, 473,
                        474, 475, 477, 479, 481, 491, 501))
#: Most bytes a counting receiver keeps of a line still arriving (an IRC line is at most 512).
PARTIAL_LIMIT = 4096


def channel(room):
    """The IRC channel for a load room (bytes)."""
    return b"#" + room.encode()


def pong_for(line):
    """The answer to a server's ``PING`` line (``PING :x`` -> ``PONG :x``), or None for another line."""
    if line.startswith(b":"):  # a prefix, which some servers put before PING
        line = line.partition(b" ")[2]
    if line.startswith(b"PING"):
        return b"PONG" + line[4:] + b"\r\n"
    return None


class IrcDialect:
    """What makes a :class:`.clients.Client` speak IRC: handshake and line formats (a mixin)."""

    __slots__ = ()

    #: Below ngIRCd's listen backlog of 10: past it the kernel resets some of the connects. Each
    #: JOIN costs an IRC server a line to every member, so joining is slow in a big room anyway.
    CONNECTS_IN_FLIGHT = 8
    EOL = b"\r\n"
    KIND_AT = 1
    KIND = b"PRIVMSG"
    DATA_FIELD = b":" + MARK_DATA
    END_FIELD = b":" + MARK_END

    def handshake(self, sock, room, name, oper):
        """Register as ``name``, join ``#room``; returns the framer once the names list has ended.

        With ``oper`` (name, password), first become an IRC operator and set user mode ``+F``:
        ngIRCd's relaxed flood protection, without which it handles 3 lines of a client per
        turn of its loop and throttles it beyond.
        """
        nick = name.encode()
        chan = channel(room).lower()
        join = b"JOIN " + channel(room) + b"\r\n"
        sock.sendall(b"NICK " + nick + b"\r\nUSER " + nick + b" 0 * :load\r\n")
        framer = LineFramer()
        joined = False
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                raise SetupError(f"server closed the connection during setup ({name})")
            for line in framer.feed(data):
                if type(line) is not bytes:
                    continue
                pong = pong_for(line)
                if pong is not None:
                    sock.sendall(pong)
                    continue
                f = line.split(b" ", 4)
                if f[0] == b"ERROR" or f[1:2] and f[1] in FATAL_NUMERICS:
                    raise SetupError(f"server said {line.decode(errors='replace')!r} during setup "
                                     f"({name})")
                if len(f) < 3:
                    continue
                if f[1] == b"001":
                    self.id = f[2].decode(errors="replace")
                    if oper:
                        sock.sendall(b"OPER %s %s\r\n" % (oper[0].encode(), oper[1].encode()))
                    else:
                        sock.sendall(join)
                elif f[1] == b"381" and oper:  # RPL_YOUREOPER
                    sock.sendall(b"MODE " + nick + b" +F\r\n" + join)
                elif (f[1] == b"JOIN" and f[2].lstrip(b":").lower() == chan
                      and f[0][1:].partition(b"!")[0].lower() == nick.lower()):
                    joined = True
                elif f[1] == b"366" and len(f) > 3 and f[3].lower() == chan:
                    if not joined:
                        raise SetupError(f"no JOIN echo for {name} before the end of the names "
                                         f"list of {chan.decode()}")
                    return framer

    def say_prefix(self, room):
        return b"PRIVMSG " + channel(room) + b" :"

    def ping(self, token):
        return b"PING " + token + b"\r\n"

    def pong_token(self, line):
        """The token of ``[:server] PONG server :token`` (or ``PONG :token``), else None."""
        f = line.split(b" ")
        if f[0].startswith(b":"):
            del f[0]
        if len(f) >= 2 and f[0] == b"PONG":
            return f[-1].lstrip(b":")
        return None


class IrcClient(IrcDialect, Client):
    """An IRC client that only connects and joins (idle and stalled clients)."""

    __slots__ = ()


class IrcCheckedReceiver(IrcDialect, CheckedReceiver):
    """:class:`.clients.CheckedReceiver` over IRC: the same loop; other lines handled here."""

    __slots__ = ()

    def _other(self, f):
        if f[0] == b"PING" or f[1:2] == [b"PING"]:
            # Only a silent client is PINGed, so a talker's client (never silent while it
            # talks) does not write here at the same time as its talker.
            self.sock.sendall(pong_for(b" ".join(f)))
            return
        if f[0] == b"ERROR":
            self.bye = b" ".join(f[1:]).decode(errors="replace")
            return
        if len(f) < 3:
            return
        name = f[1]
        if name == b"PRIVMSG" and len(f) >= 6 and f[3] == self.END_FIELD:
            self.finals[f[4]] = int(f[5])
            if len(self.finals) >= self.markers:
                self.done.set()
        elif name == b"PONG":
            token = f[-1].lstrip(b":")
            if token.isdigit():
                self.pong = max(self.pong, int(token))
                if self.pacer is not None:
                    self.pacer.event.set()


class IrcCountingReceiver(IrcDialect, CountingReceiver):
    """Counts `` PRIVMSG #room :`` in C; frames lines only to answer a server's ``PING``."""

    __slots__ = ("pattern",)

    def __init__(self, markers):
        super().__init__(markers)
        self.pattern = None

    def handshake(self, sock, room, name, oper):
        self.pattern = b" PRIVMSG " + channel(room) + b" :"
        return super().handshake(sock, room, name, oper)

    def run(self):
        if CountingReceiver.buffer is None:
            CountingReceiver.buffer = bytearray(RECV_SIZE)
        buf = CountingReceiver.buffer
        recv_into = self.sock.recv_into
        clock = time.monotonic_ns
        pattern = self.pattern
        keep = len(pattern) - 1
        # The bytes after the last line end: the start of a line still arriving. A pattern split
        # over two reads starts in it, and so does a PING line split over two reads. Nothing is
        # said in the room before the barrier, so what the handshake's framer holds is no
        # PRIVMSG and is not needed.
        rest = b""
        self.framer = None
        try:
            while True:
                n = recv_into(buf)
                if not n:
                    self.closed = "eof"
                    return
                c = buf.count(pattern, 0, n)
                if rest:
                    c += (rest[-keep:] + buf[:min(n, keep)]).count(pattern)
                if c:
                    self.lines += c
                    self.last_ns = clock()
                # "PING " appears in no relayed line of a load run: where it is, a server's PING
                # (with or without a prefix) is in this read, or completed by it.
                if buf.find(b"PING ", 0, n) >= 0 or rest and b"PING " in rest + buf[:min(n, 4)]:
                    self._answer_pings(rest + bytes(buf[:n]))
                end = buf.rfind(b"\n", 0, n)
                rest = bytes(buf[end + 1:n]) if end >= 0 else (rest + buf[:n])[-PARTIAL_LIMIT:]
        except OSError as err:
            self.closed = f"error: {err}"

    def _answer_pings(self, text):
        """Answer every complete ``PING`` line in ``text`` (which starts at a line start)."""
        for line in text.split(b"\n")[:-1]:
            pong = pong_for(line.rstrip(b"\r"))
            if pong is not None:
                self.sock.sendall(pong)

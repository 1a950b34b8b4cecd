"""A raw IRC test client for end-to-end tests of the IRC listener (tests/test_irc.py).

Like conftest's ``LineClient``: a real socket, a bounded wait on every read, no fixed sleeps, and
absence proven with a ``PING :token`` -> ``PONG`` round trip (:meth:`IrcClient.sync`). Lines are
parsed with the project's IRC codec; tests still compare numerics and texts with literals.
"""

import socket
import time
from dataclasses import dataclass

from chatroom.codec import irc
from conftest import WAIT, LineClient

#: Commands that end the welcome burst: the end of the MOTD, or no MOTD.
MOTD_END = ("376", "422")


@dataclass
class Line:
    """One server line: ``raw`` with its line end, and its parsed fields."""

    raw: bytes
    tags: dict
    source: str
    command: str
    params: list

    def __repr__(self):
        return f"Line({self.raw!r})"


class IrcClient:
    """A raw IRC client on ``port``; ``register()`` does the NICK/USER (and CAP) dance."""

    def __init__(self, port, host="127.0.0.1", timeout=WAIT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self._buf = b""
        self.nick = None
        self.port = self.sock.getsockname()[1]

    # -- sending ---------------------------------------------------------------------------------

    def send(self, line):
        """Send one line; CRLF is added unless it already ends in CR or LF."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        if not line.endswith((b"\r", b"\n")):
            line += b"\r\n"
        self.sock.sendall(line)

    def send_raw(self, data):
        self.sock.sendall(data)

    # -- receiving -------------------------------------------------------------------------------

    #: The next line as bytes, its CRLF included (AssertionError on timeout, EOFError on EOF).
    recv_raw = LineClient.recv_bytes

    def recv(self, timeout=None):
        raw = self.recv_raw(timeout)
        assert raw.endswith(b"\r\n"), f"server line without CRLF: {raw!r}"
        msg = irc.parse(raw[:-2])
        return Line(raw, msg.tags, msg.source, msg.command, msg.params)

    def expect(self, command, *params, timeout=None, skip=()):
        """Read until a line with ``command`` (and, if given, these leading ``params``).

        Lines whose command is in ``skip`` may come first; any other line fails the test.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            line = self.recv(max(0.01, deadline - time.monotonic()))
            if line.command == command and list(line.params[:len(params)]) == list(params):
                return line
            if line.command not in skip:
                raise AssertionError(f"expected {command} {params}, got {line.raw!r}")

    def until(self, command, timeout=None):
        """Every line up to and including the first with ``command``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            line = self.recv(max(0.01, deadline - time.monotonic()))
            lines.append(line)
            if line.command == command:
                return lines

    def sync(self, token="sync"):
        """Round trip a PING: returns every line that came before its PONG."""
        self.send(f"PING :{token}")
        lines = []
        while True:
            line = self.recv()
            if line.command == "PONG" and line.params[-1] == token:
                return lines
            lines.append(line)

    def expect_closed(self, timeout=None):
        """Read until the server closes the connection; returns the raw lines before that."""
        lines = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                lines.append(self.recv_raw(max(0.01, deadline - time.monotonic())))
            except (EOFError, ConnectionResetError):
                return lines

    # -- registration ----------------------------------------------------------------------------

    def register(self, nick, caps=(), user=None, realname=None):
        """CAP LS 302/REQ/END when ``caps``, NICK, USER; read to the end of the MOTD.

        Returns the lines from ``001`` to the end of the MOTD (``376`` or ``422``).
        """
        if caps:
            self.send("CAP LS 302")
            self.expect("CAP", "*", "LS")
            self.send("CAP REQ :" + " ".join(caps))
        self.send(f"NICK {nick}")
        self.send(f"USER {user or nick} 0 * :{realname or nick + ' real'}")
        if caps:
            ack = self.expect("CAP")
            assert ack.params[1:] == ["ACK", " ".join(caps)], ack.raw
            self.send("CAP END")
        first = self.recv()
        assert first.command == "001", first.raw
        lines = [first]
        while lines[-1].command not in MOTD_END:
            lines.append(self.recv())
        self.nick = nick
        return lines

    def join(self, *channels):
        """JOIN and read to each channel's end of NAMES (366); returns those lines."""
        self.send("JOIN " + ",".join(channels))
        lines = []
        for channel in channels:
            lines += self.until("366")
            assert lines[-1].params[1] == channel, lines[-1].raw
        return lines

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

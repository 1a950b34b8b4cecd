"""Shared test fixtures: a real ``bin/chat-server`` subprocess and raw line-socket clients.

Everything waits on events (a line arriving, a process exiting) with a deadline, never on a
fixed sleep, and every wait is bounded so a broken server fails a test instead of hanging CI.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"

#: Seconds any single wait in a test may take before it fails.
WAIT = 10.0

# Every server a test starts (directly, or through the load tool or the client) keeps no history
# unless the test asks with --history on: the tests that do not expect HIST lines get none, and
# nothing is written under the home directory.
os.environ["CHATROOM_HISTORY"] = "off"


class ServerProcess:
    """``bin/chat-server --port 0 ARGS`` as a subprocess; its output lines are collected."""

    def __init__(self, *args, env=None):
        cmd = [sys.executable, str(BIN / "chat-server"), "--port", "0", *map(str, args)]
        self.data_dir = None  # a directory of this test's own, removed after
        if env is None or "CHATROOM_DATA_DIR" not in env:  # never the user's own accounts
            env = dict(os.environ if env is None else env)
            env["CHATROOM_DATA_DIR"] = self.data_dir = tempfile.mkdtemp(prefix="chatroom-test-")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, bufsize=1, cwd=ROOT, env=env,
        )
        self.lines = []  # every output line so far
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.irc_port = None  # the IRC listener's port, when started with --irc-port
        try:
            m = self.wait_for(r"Listening on (\S+):(\d+)")
            if "--irc-port" in cmd or (env if env is not None else os.environ).get("CHATROOM_IRC_PORT"):
                self.irc_port = int(self.wait_for(r"IRC listening on 127\.0\.0\.1:(\d+)").group(1))
        except BaseException:
            self.kill()  # the fixture never saw this server: nobody else would stop it
            raise
        self.host = "127.0.0.1"
        self.port = int(m.group(2))
        self.pid = self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern, timeout=WAIT, start=0):
        """Wait for an output line matching ``pattern`` (from line index ``start``); returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._new:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"server printed no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))
                self._new.wait(min(left, 0.5))

    def count(self, pattern):
        rx = re.compile(pattern)
        with self._new:
            return sum(1 for line in self.lines if rx.search(line))

    def connect(self, **kw):
        return LineClient(self.port, **kw)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=WAIT):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self._reader.join(WAIT)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class LineClient:
    """A raw socket client speaking lines, with a bounded wait on every read."""

    def __init__(self, port, host="127.0.0.1", hello=True, timeout=WAIT, source=None, tls=None,
                 server_hostname=None):
        source_address = (source, 0) if source else None  # e.g. "127.0.0.2": another client IP
        self.sock = socket.create_connection((host, port), timeout, source_address)
        if tls is not None:  # an ssl.SSLContext: speak TLS, checking the name server_hostname
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname or host)
        self.timeout = timeout
        self._buf = b""
        self.id = None
        if hello:
            line = self.expect("HELLO ")
            self.id = line.split()[1]
            self.expect(f"JOIN lobby {self.id}")

    def send(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        if not line.endswith(b"\n"):
            line += b"\n"
        self.sock.sendall(line)

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv_line(self, timeout=None):
        """The next line as str (no line end); raises AssertionError on timeout or EOF."""
        return self.recv_bytes(timeout)[:-1].decode("utf-8", "replace")

    def recv_bytes(self, timeout=None):
        """The next line as bytes, its ``\n`` included; AssertionError on timeout, EOFError on EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line within the deadline; have {self._buf[:200]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError(f"connection closed; have {self._buf[:200]!r}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def expect(self, prefix, timeout=None, skip=("JOIN ", "PART ", "NICK ")):
        """Read until a line starting with ``prefix``; lines starting with ``skip`` may come first.

        Any other line before it fails the test, so nothing unexpected slips by.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            line = self.recv_line(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line
            if not line.startswith(skip):
                raise AssertionError(f"expected {prefix!r}, got {line!r}")

    def expect_closed(self, timeout=None):
        """Read until the server closes the connection; returns the lines read before that."""
        lines = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                lines.append(self.recv_line(max(0.01, deadline - time.monotonic())))
            except (EOFError, ConnectionResetError):
                return lines

    def assert_quiet(self, wait=0.3):
        """Nothing arrives within ``wait`` seconds (used only to prove an absence)."""
        self.sock.settimeout(wait)
        try:
            data = self._buf or self.sock.recv(65536)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(self.timeout)
        raise AssertionError(f"expected silence, got {data[:200]!r}")

    def sync(self, token="sync"):
        """Round trip a PING: every line the server queued before it has arrived after this."""
        self.send(f"PING {token}")
        lines = []
        while True:
            line = self.recv_line()
            if line == f"PONG {token}":
                return lines
            lines.append(line)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def start_server():
    """Factory: ``start_server(*args)`` runs ``bin/chat-server --port 0 *args``; all stopped after."""
    servers = []

    def start(*args, **kw):
        server = ServerProcess(*args, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def server(start_server):
    """A server with default limits."""
    return start_server()


@pytest.fixture
def clients():
    """Factory for LineClients that are all closed after the test."""
    made = []

    def connect(server, **kw):
        c = server.connect(**kw)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


def free_port():
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=WAIT, interval=0.02):
    """Poll ``predicate`` until true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met within the deadline")


@pytest.fixture
def irc_server(start_server):
    """Factory: a server with an IRC listener, ``irc_server(*more_args)``."""

    def start(*args):
        if "--flood-rate" not in args:
            # The tests send faster than people type; flood control has a test of its own.
            args = ("--flood-rate", 0, *args)
        server = start_server("--irc-port", 0, *args)
        assert server.irc_port and server.irc_port != server.port
        return server

    return start


@pytest.fixture
def irc():
    """Factory for IrcClients, closed after the test: ``irc(server, "alice", caps=(...))`` registers."""
    from irc_helpers import IrcClient

    made = []

    def connect(server, nick=None, caps=(), **kw):
        c = IrcClient(server.irc_port, **kw)
        made.append(c)
        if nick is not None:
            c.register(nick, caps)
        return c

    yield connect
    for c in made:
        c.close()

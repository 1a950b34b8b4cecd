"""The terminal client in a real pseudo-terminal: typing while messages arrive, and the terminal
left as it was found.

The test plays the terminal on the pty's master side: it writes keys and reads the screen output,
every read bounded by select() and a deadline.
"""

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import BIN, ROOT, WAIT

#: Columns and rows of the fake terminal.
COLUMNS, ROWS = 100, 24


class PtyClient:
    """``bin/chat-client`` with a pty's slave as stdin, stdout and stderr."""

    def __init__(self, port, *args):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.mode_before = termios.tcgetattr(self.slave)
        self.flags_before = fcntl.fcntl(self.slave, fcntl.F_GETFL)
        self.proc = subprocess.Popen(
            [sys.executable, str(BIN / "chat-client"), "--port", str(port), *map(str, args)],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, cwd=ROOT, start_new_session=True)
        self.out = bytearray()  # everything written to the screen
        self.pos = 0  # wait_for searches from here

    def pump(self, timeout=0.0):
        """Read what the client wrote, waiting at most ``timeout`` for the first bytes."""
        while select.select([self.master], [], [], timeout)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.out += chunk
            timeout = 0.0

    def wait_for(self, pattern, timeout=WAIT):
        """Wait until the screen output (from the last match on) matches ``pattern`` (bytes regex)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.out, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{bytes(self.out[-2000:])!r}")
            self.pump(min(left, 0.2))

    def type(self, keys):
        os.write(self.master, keys if isinstance(keys, bytes) else keys.encode())

    def connect(self):
        self.wait_for(rb"> ")
        self.type("CONNECT\r")
        return self.wait_for(rb"Connected to 127\.0\.0\.1:\d+ as (127\.0\.0\.1:\d+)").group(1).decode()

    def wait_exit(self, timeout=WAIT):
        """Keep reading the screen until the process exits; returns its exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the client did not exit; the terminal shows:\n" + repr(bytes(self.out[-2000:])))
            self.pump(0.05)
        self.pump()
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_client():
    made = []

    def start(port, *args):
        client = PtyClient(port, *args)
        made.append(client)
        return client

    yield start
    for client in made:
        client.close()
    for client in made:
        assert b"Traceback" not in client.out, bytes(client.out[-3000:])


def assert_terminal_restored(user):
    assert termios.tcgetattr(user.slave) == user.mode_before
    flags = fcntl.fcntl(user.slave, fcntl.F_GETFL)
    assert not flags & os.O_NONBLOCK
    assert flags == user.flags_before


def test_typing_while_messages_arrive(start_server, clients, pty_client):
    server = start_server("--flood-rate", 0)
    user = pty_client(server.port)
    me = user.connect()
    mode = termios.tcgetattr(user.slave)
    assert not mode[3] & (termios.ICANON | termios.ECHO)  # the client edits the line itself

    flooder = clients(server)
    who = flooder.id.encode()
    text = "SEND typed while busy"
    floods, sent = 50, 0
    for ch in text:  # two messages arrive, then one key is typed, racing with the next two
        for _ in range(2):
            flooder.send(f"SEND flood {sent}")
            sent += 1
        user.wait_for(rb"\[lobby\] " + re.escape(who) + rb": flood %d\r\n" % (sent - 1))
        user.type(ch)
    while sent < floods:
        flooder.send(f"SEND flood {sent}")
        sent += 1
    user.type("\r")

    assert flooder.expect("MSG ") == f"MSG lobby {me} typed while busy"
    user.wait_for(rb"flood %d\r\n> " % (floods - 1))  # the last message, and the input row under it
    screen = bytes(user.out)
    shown = [int(n) for n in re.findall(rb"\[lobby\] " + re.escape(who) + rb": flood (\d+)\r\n", screen)]
    assert shown == list(range(floods))

    # Each message is written over the input row, and the text typed so far drawn again below it.
    redrawn = re.findall(rb": flood \d+\r\n> ([^\r\n\x1b]*)", screen)
    assert len(redrawn) == floods
    assert all(text.encode().startswith(partial) for partial in redrawn)
    assert any(partial and partial != text.encode() for partial in redrawn), redrawn  # typing was under way
    # No row of the screen ends up holding a mix of a message and typed text.
    rows = [row.rsplit(b"\x1b[K", 1)[-1] for row in screen.split(b"\r\n")[:-1]]
    for row in rows:
        assert re.fullmatch(
            rb"Type CONNECT .*|> CONNECT|Connected to .*|\* \S+ joined lobby|\[lobby\] \S+: flood \d+"
            rb"|> SEND typed while busy", row), row
    assert b"> SEND typed while busy" in rows

    user.type("QUIT\r")
    assert user.wait_exit() == 0
    assert b"Disconnected from server (quit)." in user.out
    assert_terminal_restored(user)


def test_line_editing_keys_on_a_terminal(server, clients, pty_client):
    listener = clients(server)
    user = pty_client(server.port)
    me = user.connect()
    # Backspace, Ctrl-U (kill line), Ctrl-W (kill word) and an arrow key (ignored).
    user.type("SEND oops\x15SEND fixd\x7fed\x1b[D it\x17all\r")
    assert listener.expect("MSG ") == f"MSG lobby {me} fixed all"
    user.wait_for(rb"> SEND fixed all\r\n")
    user.type("\x04")  # Ctrl-D on an empty line: end of input, like QUIT
    assert user.wait_exit() == 0
    server.wait_for(rf"Connection closed with {re.escape(me)} \(quit\)")
    assert_terminal_restored(user)


def test_ctrl_c_leaves_politely_and_restores_the_terminal(server, pty_client):
    user = pty_client(server.port)
    me = user.connect()
    user.type("SEND half-typed")  # not sent: no Enter
    user.wait_for(rb"> SEND half-typed")
    user.proc.send_signal(signal.SIGINT)  # what the terminal sends for Ctrl-C
    assert user.wait_exit() == 0
    server.wait_for(rf"Connection closed with {re.escape(me)} \(quit\)")
    assert_terminal_restored(user)


def test_password_is_asked_for_without_echo(server, pty_client):
    from conftest import LineClient

    owner = LineClient(server.port)
    owner.send("NICK pat")
    owner.send("REGISTER pat's secret")
    assert owner.sync() == [f"NICK {owner.id} pat", "ACCOUNT pat"]
    owner.close()
    user = pty_client(server.port, "--nick", "pat", "--password")
    user.wait_for(rb"Password: ")
    user.type("pat's secret\r")
    user.connect()
    user.wait_for(rb"\* Logged in as pat")
    assert b"pat's secret" not in user.out
    user.type("QUIT\r")
    assert user.wait_exit() == 0

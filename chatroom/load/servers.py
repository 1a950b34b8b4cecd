"""Servers to run a load against: a server command as a subprocess; this project's server; ngIRCd.

The chat server's own module is imported here and nowhere else in the load package.
"""

import collections
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading

from ..transport import sockets
from .config import ROOT, SetupError

#: Seconds a spawned server may take to print ``Listening on`` and to stop after SIGTERM.
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_TIMEOUT = 10.0
#: Server output lines kept for error reports.
SERVER_TAIL_LINES = 50

#: What a server prints once a listener is up (group 1 the address, group 2 the port): this
#: project's native listener, its IRC listener, its web listener, and ngIRCd's.
LISTENING = r"Listening on \[?([^\]\s]+?)\]?:(\d+)"
IRC_LISTENING = r"IRC listening on \[?([^\]\s]+?)\]?:(\d+)"
WEB_LISTENING = r"Web listening on \[?([^\]\s]+?)\]?:(\d+)"
NGIRCD_LISTENING = r"Now listening on \[?([^\]\s]+?)\]?:(\d+)"


class ServerProcess:
    """A server command as a subprocess: waits for the line saying where it listens (``listening``,
    a regular expression: by default ``Listening on HOST:PORT``), drains its output.

    Output is read by a thread so the server never blocks on a full pipe; lines saying
    ``Dropped`` are counted and the last lines kept for error reports.
    """

    def __init__(self, cmd, env=None, listening=LISTENING):
        self.listening = re.compile(listening)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self.pid = self.proc.pid
        self.tail = collections.deque(maxlen=SERVER_TAIL_LINES)
        self.dropped = 0
        self._listening = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        try:
            self.host, self.port = self._listening.get(timeout=SERVER_START_TIMEOUT)
        except queue.Empty:
            self.stop()
            raise SetupError(f"server printed no line matching {listening!r}; output:\n"
                             + self.output())
        if self.host is None:
            self.stop()
            raise SetupError("server exited before listening; output:\n" + self.output())

    def _read(self):
        told = False
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if not told:
                m = self.listening.search(line)
                if m:
                    self._listening.put((m.group(1), int(m.group(2))))
                    told = True
            if "Dropped " in line:
                self.dropped += 1
        if not told:
            self._listening.put((None, None))

    def output(self):
        return "\n".join(self.tail)

    def stop(self):
        """SIGTERM, wait (bounded), then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(SERVER_STOP_TIMEOUT)
        self._thread.join(SERVER_STOP_TIMEOUT)
        return self.proc.returncode


def chat_server_command(*extra):
    """``bin/chat-server`` on a free port with the limits a load run must not trip switched off.

    History is off too (``extra`` may switch it on): a run measures the message path, and a
    history kept in the default data directory would replay one run's lines into the next.
    """
    return [sys.executable, os.path.join(ROOT, "bin", "chat-server"), "--port", "0",
            "--flood-rate", "0", "--max-per-ip", "0", "--history", "off", *extra]


def chat_server_irc_command(*extra):
    """:func:`chat_server_command` with its IRC listener on a free port too (``IRC_LISTENING``)."""
    return chat_server_command("--irc-port", "0", *extra)


def chat_server_web_command(*extra):
    """:func:`chat_server_command` with its web listener on a free port too (``WEB_LISTENING``),
    taking WebSocket handshakes from any origin."""
    return chat_server_command("--web-port", "0", "--web-origin", "*", *extra)


# -- ngIRCd, an IRC server to compare with ---------------------------------------------------------

#: A private ngIRCd: loopback only, nothing read from /etc, and the limits that would stop a load
#: run lifted (see ``man ngircd.conf``). ngIRCd also reads at most 2 KiB of a client's input
#: ahead of what it has processed (more, and it closes the connection: "Receive buffer space
#: exhausted"), so a sender's window must stay below that: 16 lines of 64 bytes do.
NGIRCD_CONFIG = """\
[Global]
    Name = load.ngircd.test
    Info = chat-load peer
    AdminInfo1 = chat-load
    AdminInfo2 = loopback only
    AdminEMail = nobody@localhost
    Listen = {host}
    Ports = {port}
    MotdPhrase = load test
    # None: ngIRCd drops root for "nobody", who may not write here.
    PidFile =

[Operator]
    # Senders log in as operators to set user mode +F (chat-load --irc-oper load:load): else
    # ngIRCd handles 3 lines of a client per turn of its loop and throttles it beyond.
    Name = {oper_name}
    Password = {oper_password}

[Limits]
    # Every load client comes from the same loopback address.
    MaxConnectionsIP = 0
    # Idle clients each join a channel of their own; no limit per client either.
    MaxJoins = -1
    # No penalty time: a client that sends more than a few commands a second would otherwise
    # not be read for a second each time (its flood protection).
    MaxPenaltyTime = 0
    # Receivers that never write are not PINGed during a run (they answer all the same).
    PingTimeout = 600
    # Seconds a client has to answer a PING, and to register: while a thousand clients join
    # one channel, ngIRCd is busy telling each member of each JOIN and is slow to register more.
    PongTimeout = 300

[Options]
    # No reverse DNS or ident look-ups for each connection.
    DNS = no
    Ident = no
    PAM = no
    # An empty folder: no configuration snippets from /etc/ngircd.
    IncludeDir = {include}
"""

#: The operator account of the private ngIRCd (loopback only): chat-load's ``--irc-oper``.
NGIRCD_OPER = ("load", "load")


def ngircd_binary():
    """The path of Debian's ngircd, or None when it is not installed."""
    return shutil.which("ngircd") or next(
        (p for p in ("/usr/sbin/ngircd", "/usr/local/sbin/ngircd") if os.access(p, os.X_OK)), None)


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on now (ngIRCd cannot be told to pick one itself)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ngircd_command(workdir, host="127.0.0.1"):
    """Write a private ngIRCd's configuration into ``workdir``; the command that runs it in the
    foreground (it prints ``Now listening on [HOST]:PORT``: ``NGIRCD_LISTENING``)."""
    binary = ngircd_binary()
    if binary is None:
        raise SetupError("ngircd is not installed (Debian: apt-get install ngircd)")
    include = os.path.join(workdir, "conf.d")
    os.makedirs(include, exist_ok=True)
    path = os.path.join(workdir, "ngircd.conf")
    with open(path, "w") as f:
        f.write(NGIRCD_CONFIG.format(host=host, port=free_port(host), include=include,
                                     oper_name=NGIRCD_OPER[0], oper_password=NGIRCD_OPER[1]))
    return [binary, "--nodaemon", "--config", path]


def raise_nofile_limit():
    """Raise the open-files soft limit to the hard limit (as the server does); (before, after)."""
    before, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return before, sockets.raise_nofile_limit()

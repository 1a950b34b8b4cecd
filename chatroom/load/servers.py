"""Servers to run a load against: a server command as a subprocess, and this project's server.

The chat server's own module is imported here and nowhere else in the load package.
"""

import collections
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading

from .. import server as chat_server
from .config import ROOT, SetupError

#: Seconds a spawned server may take to print ``Listening on`` and to stop after SIGTERM.
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_TIMEOUT = 10.0
#: Server output lines kept for error reports.
SERVER_TAIL_LINES = 50


class ServerProcess:
    """A server command as a subprocess: waits for ``Listening on HOST:PORT``, drains its output.

    Output is read by a thread so the server never blocks on a full pipe; lines saying
    ``Dropped`` are counted and the last lines kept for error reports.
    """

    LISTENING = re.compile(r"Listening on \[?([^\]\s]+?)\]?:(\d+)")

    def __init__(self, cmd, env=None):
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
            raise SetupError("server printed no 'Listening on HOST:PORT'; output:\n" + self.output())
        if self.host is None:
            self.stop()
            raise SetupError("server exited before listening; output:\n" + self.output())

    def _read(self):
        told = False
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if not told:
                m = self.LISTENING.search(line)
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
    """``bin/chat-server`` on a free port with the limits a load run must not trip switched off."""
    return [sys.executable, os.path.join(ROOT, "bin", "chat-server"), "--port", "0",
            "--flood-rate", "0", "--max-per-ip", "0", *extra]


def raise_nofile_limit():
    """Raise the open-files soft limit to the hard limit (as the server does); (before, after)."""
    before, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return before, chat_server.raise_nofile_limit()

"""Real IRC software for tests: irssi driven through tmux, and a private ngIRCd to check against.

Not a test module (no test functions): tests import it, as they import conftest.

``Irssi`` runs the real terminal client inside a detached tmux session of its own (own ``-L``
socket name, own ``TMUX_TMPDIR``, so parallel tests never share a tmux server) with a fresh
``--home``: a minimal config, no autoconnect, no scripts. It types with ``tmux send-keys -l``
and reads the screen with ``tmux capture-pane``. Every wait polls the screen with a deadline;
nothing waits by sleeping a fixed time. ``close()`` kills the tmux server and irssi and deletes
the home directory, also after a failed start::

    with Irssi("ircuser", port) as irc:
        irc.join("#lobby")
        irc.type("hello")
        irc.wait_for(said("natuser", "hi"))

``Ngircd`` runs ``ngircd -n -f CONF`` on a free loopback port with a throwaway config (no PAM, no
DNS or ident lookups, no penalty delays): a known-good server to prove a harness against.
"""

import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from conftest import WAIT, free_port

#: Seconds between two looks at the screen while waiting.
POLL = 0.05

#: What irssi echoes in its status window once the server has welcomed it (001): the chatnet's
#: autosendcmd runs then, so the harness knows when commands like /join may be typed.
REGISTERED = "irssi-harness: registered"

#: irssi's question when its config has a setting it does not know (it then eats the next key).
UNKNOWN_SETTINGS = "Remove unknown settings from config file"

_names = itertools.count()


def _env(**extra):
    """The environment for tmux and irssi: UTF-8, no outer tmux, nothing of the user's."""
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "TMUX_TMPDIR")}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", **extra)
    return env


@functools.lru_cache(maxsize=None)
def irssi_version():
    """The installed irssi's version, e.g. ``"1.4.3"``; None when irssi is not installed."""
    if not shutil.which("irssi"):
        return None
    out = subprocess.run(["irssi", "--version"], capture_output=True, text=True, timeout=WAIT,
                         env=_env(HOME=tempfile.gettempdir())).stdout
    m = re.search(r"irssi (\S+)", out)
    return m.group(1) if m else out.strip()


@functools.lru_cache(maxsize=None)
def tmux_version():
    """The installed tmux's version as a tuple, e.g. ``(3, 3)``; None when tmux is not installed."""
    if not shutil.which("tmux"):
        return None
    out = subprocess.run(["tmux", "-V"], capture_output=True, text=True, timeout=WAIT).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def irssi_missing():
    """Why ``Irssi`` cannot run here (a skip reason), or None when it can."""
    if irssi_version() is None:
        return "irssi is not installed (Debian package irssi; .ci/run installs it)"
    version = tmux_version()
    if version is None:
        return "tmux is not installed (Debian package tmux; .ci/run installs it)"
    if version < (3, 2):
        return f"tmux {version} is too old: the harness runs its server with -D (tmux 3.2+)"
    return None


def ngircd_binary():
    """ngircd's path (Debian puts it in /usr/sbin, which a user's PATH may lack), or None."""
    return shutil.which("ngircd") or shutil.which("ngircd", path="/usr/sbin:/sbin:/usr/local/sbin")


def ngircd_missing():
    """Why ``Ngircd`` cannot run here (a skip reason), or None when it can."""
    if not ngircd_binary():
        return "ngircd is not installed (Debian package ngircd; .ci/run installs it)"
    return None


def said(nick, text):
    """A regex for a message line in irssi's default theme: ``<nick> text``, where the nick may
    carry a channel mode sign (``<@nick>``)."""
    return rf"<[~&@%+]?{re.escape(nick)}> {re.escape(text)}"


def _alive(pid):
    """True while ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _end(pid, timeout=5.0):
    """SIGTERM ``pid`` (not our child), SIGKILL if it is still there after ``timeout`` seconds."""
    if not pid or not _alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(POLL)


class Irssi:
    """irssi in a detached tmux session, connected to ``host:port`` as ``nick``.

    ``type(text)`` types a line and Enter; ``screen()`` is the visible screen as text;
    ``wait_for(regex)`` polls the screen until the regex matches (MULTILINE) and returns the
    match; ``window(n)`` switches windows (a number, or a name like ``"#lobby"``);
    ``join(channel)`` joins and waits for the channel window; ``close()`` ends it all.
    ``version`` is the irssi version. The screen is kept predictable: 200x50 terminal, timestamps
    ``HH:MM:SS``, nicks without a blank mode column, no paste detection, no tmux status line.
    Every window is also logged under ``home/logs`` and the raw IRC traffic to ``home/raw.log``;
    both are appended to the message of a failed wait.
    """

    def __init__(self, nick, port, host="127.0.0.1", *, real_name=None, user_name=None,
                 width=200, height=50, connect=True, timeout=WAIT):
        self.nick = nick
        self.host = host
        self.port = port
        self.version = irssi_version()
        self.socket_name = f"irssi-{os.getpid()}-{next(_names)}"
        self.dir = Path(tempfile.mkdtemp(prefix="irssi-"))
        self.home = self.dir / "home"
        self.pid = None  # irssi's
        self.tmux_pid = None
        self._server = None
        self._closed = False
        try:
            self._start(real_name or f"{nick} (irssi test)", user_name or nick, width, height)
            if connect:
                m = self.wait_for(rf"{re.escape(REGISTERED)}|{UNKNOWN_SETTINGS}", timeout)
                if m.group() == UNKNOWN_SETTINGS:  # a prompt that would swallow the next key
                    raise AssertionError("this irssi does not know a setting of the harness's "
                                         "config\n" + self.diagnostics())
                m = self.wait_for(rf"{re.escape(REGISTERED)} as (\S+)", timeout)
                if m.group(1) != nick:
                    raise AssertionError(f"irssi registered as {m.group(1)!r}, not {nick!r} "
                                         "(nick taken?)\n" + self.diagnostics())
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------

    def _config(self, real_name, user_name):
        def q(text):  # a string in irssi's config syntax
            return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'

        home = str(self.home)
        # A server entry only to hang the chatnet's autosendcmd on (no autoconnect): irssi applies
        # it to `-c HOST -p PORT`, and runs it once the server's 001 has arrived.
        return f"""\
servers = (
  {{ address = {q(self.host)}; port = {q(self.port)}; chatnet = "harness"; autoconnect = "no"; }}
);
chatnets = {{
  harness = {{
    type = "IRC";
    autosendcmd = {q(f"/rawlog open {home}/raw.log; /echo -window 1 {REGISTERED} as $N")};
  }};
}};
channels = ( );
settings = {{
  core = {{
    real_name = {q(real_name)};
    user_name = {q(user_name)};
    nick = {q(self.nick)};
    settings_autosave = "no";
    timestamp_format = "%H:%M:%S";
    server_connect_timeout = "10s";
    log_timestamp = "%H:%M:%S ";
  }};
  "fe-common/core" = {{
    show_nickmode_empty = "no";
    beep_msg_level = "";
    autolog = "yes";
    autolog_path = {q(home + "/logs/$0.log")};
    autolog_level = "all";
  }};
  "fe-text" = {{ paste_detect_time = "0"; actlist_sort = "refnum"; }};
}};
"""

    def _start(self, real_name, user_name, width, height):
        self.home.mkdir()
        (self.home / "scripts" / "autorun").mkdir(parents=True)  # empty: no scripts run
        (self.home / "config").write_text(self._config(real_name, user_name))
        tmux_conf = self.dir / "tmux.conf"
        tmux_conf.write_text("set -g status off\nset -g remain-on-exit on\nset -g history-limit 5000\n")
        self._tmux_env = _env(TMUX_TMPDIR=str(self.dir), HOME=str(self.home))
        # The tmux server runs in the foreground (-D) as our child, so close() can wait for it
        # and nothing is left to init. Commands are sent once it answers on its socket.
        self._server = subprocess.Popen(
            ["tmux", "-D", "-L", self.socket_name, "-f", str(tmux_conf)], env=self._tmux_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.tmux_pid = self._server.pid
        deadline = time.monotonic() + WAIT
        while self._tmux("list-sessions", check=False) is None:
            if self._server.poll() is not None or time.monotonic() >= deadline:
                raise AssertionError(f"tmux server did not start (exit status {self._server.poll()})")
            time.sleep(POLL)
        argv = ["irssi", f"--home={self.home}", "-n", self.nick, "-c", self.host, "-p", str(self.port)]
        self._tmux("new-session", "-d", "-s", "irssi", "-x", str(width), "-y", str(height), "--", *argv)
        self.pid = int(self._tmux("display-message", "-p", "-t", "irssi", "#{pane_pid}"))

    def _tmux(self, *args, check=True):
        """Run a tmux client command against this instance's server; its stdout (None on failure
        when not ``check``)."""
        r = subprocess.run(["tmux", "-L", self.socket_name, *args], env=self._tmux_env,
                           capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
        if r.returncode:
            if check:
                raise AssertionError(f"tmux {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
            return None
        return r.stdout

    # -- driving ----------------------------------------------------------------------------

    def type(self, text):
        """Type ``text`` literally (any characters), then Enter."""
        if "\n" in text or "\r" in text:
            raise ValueError("type() takes one line")
        # tmux takes an argument's final ';' as a command separator: send those as a key code
        body = text.rstrip(";")
        if body:
            self._tmux("send-keys", "-t", "irssi", "-l", "--", body)
        if len(text) > len(body):
            self._tmux("send-keys", "-t", "irssi", "-H", *["3b"] * (len(text) - len(body)))
        self._tmux("send-keys", "-t", "irssi", "Enter")

    def keys(self, *keys):
        """Send tmux key names (e.g. ``"M-2"``, ``"C-n"``, ``"PageUp"``)."""
        self._tmux("send-keys", "-t", "irssi", *keys)

    def screen(self):
        """The visible screen: wrapped lines joined, trailing blanks dropped."""
        text = self._tmux("capture-pane", "-p", "-J", "-t", "irssi")
        return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")

    def dead(self):
        """True when irssi has exited (the pane stays, showing its last screen)."""
        out = self._tmux("display-message", "-p", "-t", "irssi", "#{pane_dead}", check=False)
        return out is None or out.strip() != "0"

    def wait_for(self, pattern, timeout=WAIT):
        """Poll the screen until ``pattern`` (a regex, MULTILINE) matches; returns the match.

        Fails after ``timeout`` seconds, or as soon as irssi has exited, with the screen, the
        window logs and the raw IRC traffic in the message.
        """
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            m = rx.search(screen)
            if m:
                return m
            if self.dead():
                raise AssertionError(f"irssi exited before its screen showed {pattern!r}\n"
                                     + self.diagnostics(screen))
            if time.monotonic() >= deadline:
                raise AssertionError(f"irssi's screen showed no {pattern!r} within {timeout} s\n"
                                     + self.diagnostics(screen))
            time.sleep(POLL)

    def status_line(self):
        """irssi's status bar (the line above the input line)."""
        lines = self.screen().splitlines()
        for line in reversed(lines):
            if re.match(r"\s*\[\d\d:\d\d(:\d\d)?\]", line):
                return line
        return ""

    def window(self, n, timeout=WAIT):
        """Switch to window ``n`` (its number, or a name such as ``"#lobby"`` or a nick) and wait
        until the status bar shows it. A named window may not exist yet (a query window opens when
        the message arrives): the switch is retried until the deadline."""
        if isinstance(n, int):
            command, shown = f"/window {n}", rf"\[{n}:"
        else:
            command = f"/window goto {n}"
            shown = rf"\[\d+:([^\]/ ]+/)?{re.escape(n)}[\]( ]"  # "[3:tag/alice]"
        deadline = time.monotonic() + timeout
        while True:
            self.type(command)
            retry = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < retry:
                if re.search(shown, self.status_line()):
                    return
                time.sleep(POLL)
            if time.monotonic() >= deadline:
                raise AssertionError(f"irssi did not switch to window {n!r}\n" + self.diagnostics())

    def join(self, channel, timeout=WAIT):
        """``/join channel`` and wait until irssi shows this client joining it."""
        self.type(f"/join {channel}")
        return self.wait_for(rf"{re.escape(self.nick)} \[.*\] has joined {re.escape(channel)}",
                             timeout)

    # -- diagnostics ------------------------------------------------------------------------

    def logs(self):
        """Every window's log so far, as one text (what scrolled off or sits in other windows)."""
        parts = []
        for path in sorted((self.home / "logs").rglob("*.log")):
            parts.append(f"--- {path.relative_to(self.home)}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def raw_log(self):
        """The raw IRC lines irssi sent (``<<``) and received (``>>``): opened after 001, it starts
        with irssi's buffer of the last 200, so registration is in it too."""
        try:
            return (self.home / "raw.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self, screen=None):
        if screen is None:
            try:
                screen = self.screen()
            except Exception as e:  # the tmux server is gone
                screen = f"(no screen: {e})"
        return (f"--- irssi {self.version} as {self.nick}, screen:\n{screen}\n"
                f"{self.logs()[-4000:]}\n--- raw.log (tail)\n{self.raw_log()[-4000:]}")

    # -- teardown ---------------------------------------------------------------------------

    def close(self):
        """Kill the tmux server and irssi, delete the home directory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._server is not None:
                # irssi first, while tmux lives to reap it; then the tmux server
                if self.pid and _alive(self.pid):
                    try:
                        os.kill(self.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                    deadline = time.monotonic() + 3
                    while not self.dead() and time.monotonic() < deadline:
                        time.sleep(POLL)
                try:
                    self._tmux("kill-server", check=False)  # irssi gets SIGHUP and quits
                except subprocess.TimeoutExpired:
                    pass
                try:
                    self._server.wait(WAIT)
                except subprocess.TimeoutExpired:
                    self._server.kill()
                    self._server.wait(WAIT)
        finally:
            _end(self.pid)  # in case irssi outlived its terminal
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


NGIRCD_CONFIG = """\
[Global]
    Name = {name}
    Info = chatroom test server
    AdminInfo1 = chatroom tests
    AdminInfo2 = loopback only
    AdminEMail = nobody@example.invalid
    Listen = 127.0.0.1
    Ports = {port}
    MotdPhrase = "ngircd for chatroom tests"
    PidFile = {dir}/ngircd.pid
[Limits]
    MaxConnectionsIP = 0
    MaxNickLength = 31
    # no penalty delays: a scripted client's lines go through at once
    MaxPenaltyTime = 0
[Options]
    PAM = no
    DNS = no
    Ident = no
    MorePrivacy = no
"""


class Ngircd:
    """A private ``ngircd -n -f CONF`` on a free 127.0.0.1 port; ``close()`` stops it."""

    def __init__(self, name="irc.test", timeout=WAIT):
        self.name = name
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="ngircd-"))
        os.chmod(self.dir, 0o755)  # ngircd drops root for "nobody" after reading its config
        self.proc = None
        self.lines = []
        try:
            for attempt in range(3):  # free_port() can race another process for the port
                self.port = free_port()
                if self._start(timeout):
                    return
            raise AssertionError("ngircd could not listen:\n" + "\n".join(self.lines[-30:]))
        except BaseException:
            self.close()
            raise

    def _start(self, timeout):
        conf = self.dir / "ngircd.conf"
        conf.write_text(NGIRCD_CONFIG.format(name=self.name, port=self.port, dir=self.dir))
        self._stop()
        self.lines = []
        self._new = threading.Condition()
        self.proc = subprocess.Popen(
            [ngircd_binary(), "-n", "-f", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        listening = f"Now listening on [127.0.0.1]:{self.port}"
        deadline = time.monotonic() + timeout
        with self._new:
            while not any(listening in line for line in self.lines):
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and not self._reader.is_alive():
                    return False  # e.g. the port was taken meanwhile: try another
                if left <= 0:
                    raise AssertionError(f"ngircd printed no {listening!r}:\n" + "\n".join(self.lines[-30:]))
                self._new.wait(min(left, 0.5))
        return True

    def _read(self, proc):
        for line in proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def _stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self._reader.join(WAIT)
        self.proc.stdout.close()

    def output(self):
        return "\n".join(self.lines)

    def close(self):
        try:
            self._stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

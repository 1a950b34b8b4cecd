"""The terminal client: commands typed on standard input, the server's events shown on standard output.

Two greenlets run side by side: one reads standard input, one (while connected) reads the socket.
The input greenlet is the session: when it ends (``QUIT``, end of input, Ctrl-C, SIGTERM, SIGHUP)
the socket greenlet is stopped after a bounded wait for the server's ``BYE``. When the socket
greenlet ends (the server said ``BYE`` or went away) the client says so and the user may
``CONNECT`` again; if it fails unexpectedly it stops the input greenlet too.

Everything printed from the network passes through :func:`sanitize` first. When standard input
and output are both a terminal, a small line editor (:class:`LineEditor`) keeps the line being
typed on the last row and redraws it under every incoming message, so messages never garble it.
The terminal's modes and standard input's file flags are restored on every way out.
"""

import argparse
import calendar
import codecs
import fcntl
import os
import signal
import socket
import ssl
import stat
import sys
import termios
import time
import unicodedata

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
from gevent.socket import wait_read, wait_write

from .codec import native, text
from .codec.lines import LineFramer, LineTooLong, NO_LINE_END_LIMIT
from .settings import DEFAULT_HOST, DEFAULT_PORT

#: Seconds CONNECT waits for the TCP handshake and then for the server's HELLO before it
#: reports failure: ample for any reachable server, short enough not to hang the prompt.
CONNECT_TIMEOUT = 5.0
#: Seconds QUIT (or end of input) waits for the server's BYE and close before closing anyway.
QUIT_TIMEOUT = 3.0
#: Seconds of silence from the server before the client sends PING, then seconds it waits for
#: any line before it judges the server gone (a half-open connection would otherwise hang forever).
#: The socket's sends are bounded by the same timeout.
IDLE_TIMEOUT = 90.0
PING_TIMEOUT = 30.0
#: Seconds a write to standard output may make no progress (only when something else made it
#: non-blocking, e.g. a paused terminal) before output is judged broken and the client quits.
OUTPUT_STALL_TIMEOUT = 60.0

#: Bytes asked of the kernel per socket read.
RECV_SIZE = 65536
#: Longest server line shown, in bytes. Far above the server's default 4 KiB so a server run with
#: a larger --max-line is still shown in full; a longer line is skipped and reported (it cannot
#: grow memory: the framer holds at most this much of a line).
MAX_LINE = NO_LINE_END_LIMIT
#: Bytes asked per read of standard input: a paste arrives in a few reads.
INPUT_READ_SIZE = 4096
#: Longest line accepted from piped standard input, in bytes; a longer one is skipped and reported.
#: Above any sane server line limit (the server reports its own with ERR line-too-long).
INPUT_MAX_LINE = 64 * 1024
#: Most characters the terminal line editor holds; keys past it are dropped (a runaway paste).
EDITOR_MAX_CHARS = 16 * 1024
#: Terminal width assumed when the terminal does not report one.
DEFAULT_COLUMNS = 80

PROMPT = "> "
UNKNOWN_COMMAND = "ERROR: Please use the CONNECT, SEND <message>, and QUIT commands."
CONNECT_FAILED = "ERROR: Connection Failed."
NOT_CONNECTED = "ERROR: Not connected; type CONNECT first."
HELP = (
    "Commands (case-sensitive, one per line):",
    "  CONNECT                connect to the server",
    "  SEND <message>         say <message> to everyone in your room",
    "  TELL <nick> <message>  say <message> to one person only (nickname or address:port)",
    "  NICK <name>            set your nickname (1-32 of A-Z a-z 0-9 _ -)",
    "  JOIN <room>            move to <room> (created on demand)",
    "  WHO                    list the people in your room",
    "  ROOMS                  list the rooms and how many are in each",
    "  HELP                   show this list",
    "  QUIT                   leave and exit",
)
#: Typed commands that take nothing after them, and those that take exactly one name.
_BARE = ("CONNECT", "QUIT", "WHO", "ROOMS", "HELP")
_ONE_NAME = ("NICK", "JOIN")

#: What sanitize() neutralizes: exactly the characters the protocol refuses in relayed text
#: (C0 controls, so every escape sequence: CSI, OSC, DCS, bracketed-paste markers; DEL; C1
#: controls, including the one-byte CSI; bidi embeddings, overrides and isolates).
_UNSAFE_RE = text.BAD_TEXT_RE


# -- pure functions: what is shown, what was typed -----------------------------------------------


def sanitize(text):
    """``text`` safe to print on a terminal: every unsafe character becomes a visible escape.

    C0 controls and DEL use caret notation (ESC -> ``^[``, BEL -> ``^G``, DEL -> ``^?``);
    C1 controls and bidi controls become ``<U+XXXX>``. Everything else is unchanged.
    """
    return _UNSAFE_RE.sub(_visible, text)


def _visible(match):
    code = ord(match.group())
    if code < 0x20 or code == 0x7F:
        return "^" + chr(code ^ 0x40)
    return f"<U+{code:04X}>"


def describe(event):
    """How one server event reads on screen (before :func:`sanitize`).

    HELLO, PING, PONG and BYE are handled by the session and never get here; an event this
    client does not know, or a malformed one, is shown as it came.
    """
    name, args = event.name, event.args
    n = len(args)
    if name == "MSG" and n == 3:
        return f"[{args[0]}] {args[1]}: {args[2]}"
    if name == "TELL" and n == 2:
        return f"[private] {args[0]}: {args[1]}"
    if name == "JOIN" and n == 2:
        return f"* {args[1]} joined {args[0]}"
    if name == "PART" and n in (2, 3):
        return f"* {args[1]} left {args[0]}" + (f" ({args[2]})" if n == 3 else "")
    if name == "NICK" and n == 2:
        return f"* {args[0]} is now known as {args[1]}"
    if name == "WHO" and n:
        return f"* People in {args[0]}: " + ", ".join(args[1:])
    if name == "ROOMS":
        return "* Rooms: " + (", ".join(_room_count(entry) for entry in args) or "none")
    if name == "HIST" and n == 5:
        return f"[{args[0]} {_local_time(args[2])}] {args[3]}: {args[4]}"
    if name == "TELLHIST" and n == 4:
        return f"[private {_local_time(args[1])}] {args[2]}: {args[3]}"
    if name == "NOTICE" and n == 2:
        return f"* {args[1]} ({args[0]})"
    if name == "ACCOUNT" and n == 1:
        return "* Logged out" if args[0] == "*" else f"* Logged in as {args[0]}"
    if name == "ERR" and n:
        return f"ERROR: {args[1] if n > 1 else args[0]} ({args[0]})"
    return " ".join((name,) + args)


def _local_time(stamp):
    """A ``HIST`` line's UTC time (``2026-11-29T06:34:20.456Z``) as local ``YYYY-MM-DD HH:MM``."""
    try:
        seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return stamp
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


#: Shown after a room's history when there was any: what follows is live.
HISTORY_END = "---- {room}: earlier messages above, live from here ----"
#: Shown after the private messages kept while you were offline.
KEPT_END = "---- kept private messages above, live from here ----"


def _room_count(entry):
    room, sep, count = entry.rpartition(":")
    return f"{room} ({count})" if sep else entry


def parse_input(line):
    """One typed line as ``(command, args)``; ``("", ())`` for a blank line; None if not a command.

    Blanks around the line are ignored. Command words are case-sensitive. ``CONNECT``, ``QUIT``,
    ``WHO``, ``ROOMS`` and ``HELP`` take nothing after them; ``SEND`` needs a message (sent as
    typed after ``SEND ``); ``NICK`` and ``JOIN`` one word; ``TELL`` a name and a message.
    """
    text = line.strip()
    if not text:
        return ("", ())
    word, _, rest = text.partition(" ")
    if word in _BARE:
        return None if rest else (word, ())
    if word == "SEND":
        return (word, (rest,)) if rest.strip() else None
    if word in _ONE_NAME:
        rest = rest.strip()
        return (word, (rest,)) if rest and " " not in rest else None
    if word == "TELL":
        who, _, message = rest.strip().partition(" ")
        return (word, (who, message)) if who and message.strip() else None
    return None


def fit_tail(text, columns):
    """The longest end of ``text`` that fits in ``columns`` terminal cells (wide characters take 2)."""
    used = 0
    start = len(text)
    while start > 0:
        ch = text[start - 1]
        width = 0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + width > columns:
            break
        used += width
        start -= 1
    return text[start:]


def line_framer(max_line):
    """A framer for lines from a peer that may send giant lines: each is skipped, never fatal."""
    return LineFramer(max_line, no_line_end_limit=None)


def finish(framer):
    """The input ended: its last line, if it had no line end, as if it had one."""
    return framer.feed(b"\n") if framer.unterminated else []


class LineEditor:
    """Keys in, finished lines out: the local line editing used when the terminal sends key by key.

    Keys: printable characters insert, Backspace deletes one, Ctrl-U the line, Ctrl-W a word,
    Enter finishes the line, Ctrl-D on an empty line ends input. Escape sequences (arrow keys
    and the like) and other control characters are dropped.
    """

    def __init__(self, max_chars=EDITOR_MAX_CHARS):
        self.max_chars = max_chars
        self.text = ""
        self.eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = None  # None, or the part of an escape sequence being dropped: esc, csi, ss3

    def feed(self, data):
        """Feed bytes from the terminal; returns the lines finished by them."""
        done = []
        for ch in self._decoder.decode(data):
            if self.eof:
                break
            if self._escape is not None:
                self._drop_escape(ch)
            elif ch in "\r\n":
                done.append(self.text)
                self.text = ""
            elif ch in "\x7f\b":
                self.text = self.text[:-1]
            elif ch == "\x15":
                self.text = ""
            elif ch == "\x17":
                kept = self.text.rstrip(" ")
                self.text = kept[: kept.rfind(" ") + 1]
            elif ch == "\x04":
                self.eof = not self.text
            elif ch == "\x1b":
                self._escape = "esc"
            elif not _UNSAFE_RE.match(ch) and len(self.text) < self.max_chars:
                self.text += ch
        return done

    def _drop_escape(self, ch):
        if self._escape == "esc":
            self._escape = "csi" if ch == "[" else "ss3" if ch == "O" else None
        elif self._escape == "csi":
            if "\x40" <= ch <= "\x7e":
                self._escape = None
        else:
            self._escape = None


# -- the terminal ---------------------------------------------------------------------------------


class Terminal:
    """Standard input's settings: saved at start, key-at-a-time mode for the editor, always restored.

    The client never sets O_NONBLOCK on standard input (on a terminal it shares one open file with
    standard output and the shell); it still saves the file flags and puts them back on exit.
    """

    def __init__(self, fd=0, out_fd=1):
        self.fd = fd
        self.flags = _try(fcntl.fcntl, fd, fcntl.F_GETFL)
        self.saved = _try(termios.tcgetattr, fd) if _try(os.isatty, fd) else None
        #: Both ends are a terminal: the client echoes and edits the line itself.
        self.interactive = self.saved is not None and bool(_try(os.isatty, out_fd))

    def enter(self):
        """Switch off the terminal's echo and line buffering (signals such as Ctrl-C stay on)."""
        if self.interactive:
            mode = termios.tcgetattr(self.fd)
            mode[3] &= ~(termios.ICANON | termios.ECHO)
            mode[6][termios.VMIN] = 1
            mode[6][termios.VTIME] = 0
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)

    def restore(self):
        if self.saved is not None:
            _try(termios.tcsetattr, self.fd, termios.TCSANOW, self.saved)
        if self.flags is not None:
            _try(fcntl.fcntl, self.fd, fcntl.F_SETFL, self.flags)


def _try(func, *args):
    """``func(*args)``, or None when the descriptor is closed or not what was hoped for."""
    try:
        return func(*args)
    except (OSError, termios.error):
        return None


class Console:
    """Writes whole lines to standard output, one write each, everything through :func:`sanitize`.

    With an editor (both ends a terminal) every line is written over the input row and the
    prompt with the text typed so far is drawn again below it.
    """

    def __init__(self, fd=1, editor=None, on_broken=None):
        self.fd = fd
        self.editor = editor
        self.on_broken = on_broken  # called once if standard output goes away
        self.broken = False

    def show(self, text):
        line = sanitize(text)
        if self.editor is None:
            self._write(line + "\n")
        else:
            self._write("\r\x1b[K" + line + "\n" + self._input_row())

    def echo(self, typed):
        """On a terminal, leave a finished input line on screen, after the prompt."""
        if self.editor is not None:
            self.show(PROMPT + typed)

    def redraw(self):
        if self.editor is not None:
            self._write("\r\x1b[K" + self._input_row())

    def close(self):
        if self.editor is not None:
            self._write("\r\x1b[K")

    def _input_row(self):
        try:
            columns = os.get_terminal_size(self.fd).columns or DEFAULT_COLUMNS
        except OSError:
            columns = DEFAULT_COLUMNS
        room = max(1, columns - len(PROMPT) - 1)
        return PROMPT + sanitize(fit_tail(self.editor.text, room))

    def _write(self, text):
        if self.broken:
            return
        data = memoryview(text.encode("utf-8", "replace"))
        try:
            while data:
                try:
                    data = data[os.write(self.fd, data):]
                except BlockingIOError:
                    wait_write(self.fd, OUTPUT_STALL_TIMEOUT, BrokenPipeError("output stalled"))
        except OSError:
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()


class Input:
    """Standard input as typed lines, read cooperatively: wait until readable, then read once."""

    def __init__(self, fd=0, editor=None, console=None):
        self.fd = fd
        self.editor = editor
        self.console = console
        mode = _try(os.fstat, fd)
        # Pipes, sockets and terminals can be waited on; files and /dev/null never block a read.
        self.pollable = mode is not None and (
            stat.S_ISFIFO(mode.st_mode) or stat.S_ISSOCK(mode.st_mode) or bool(_try(os.isatty, fd)))

    def lines(self):
        """Yields each typed line (``str``), or a :class:`LineTooLong`; ends at end of input."""
        if self.editor is not None:
            yield from self._edited()
            return
        splitter = line_framer(INPUT_MAX_LINE)
        while True:
            data = self._read()
            items = splitter.feed(data) if data else finish(splitter)
            for item in items:
                yield item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            if not data:
                return

    def _edited(self):
        editor = self.editor
        while not editor.eof:
            data = self._read()
            if not data:
                return
            for line in editor.feed(data):
                self.console.echo(line)
                yield line
            self.console.redraw()

    def _read(self):
        while True:
            if self.pollable:
                wait_read(self.fd)  # no limit: this is the wait for the person at the keyboard
            try:
                return os.read(self.fd, INPUT_READ_SIZE)
            except BlockingIOError:  # made non-blocking by someone else, and woken for nothing
                continue
            except OSError:  # the terminal hung up (EIO), or standard input is closed
                return b""


# -- the session ----------------------------------------------------------------------------------


class Connection:
    """One TCP connection to the server: its socket and framing, and who the server says we are."""

    def __init__(self, sock, address):
        self.sock = sock
        self.address = address  #: ``host:port`` as shown to the user
        self.lines = line_framer(MAX_LINE)
        self.id = None  #: from HELLO
        self.name = None  #: what others see: the id, or the nickname once the server confirms it
        self.settled = gevent.event.Event()  #: set on HELLO, or when the connection ends before it
        self.reason = None  #: why it ended
        self.refused = False  #: ended by a BYE before any HELLO
        self.history_shown = 0  #: HIST lines shown since the last HISTEND
        self.reader = None

    def send(self, name, *args):
        self.sock.sendall(native.format_command(name, *args))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ChatClient:
    """The session: runs typed commands, shows the server's events, owns the connection."""

    def __init__(self, host, port, console, nick=None, connect_timeout=CONNECT_TIMEOUT, tls=None,
                 password=None):
        self.password = password  #: with ``nick``: LOGIN nick password after each CONNECT
        self.host = host
        self.tls = tls  #: an ssl.SSLContext: connect over TLS, checking certificate and host name
        self.port = port
        self.address = native.format_addr((host, port))
        self.console = console
        self.nick = nick  #: sent as NICK after each CONNECT; follows the server's NICK confirmations
        self.connect_timeout = connect_timeout
        self.conn = None
        self.input = None
        self.status = 0

    def run(self, source):
        """Run until the input greenlet ends; then leave the server politely. Returns the exit status."""
        self.input = gevent.spawn(self._input_loop, source)
        self.input.join()  # no limit: the session lasts as long as the user wants
        if not self.input.successful():
            self.status = 1
        self._leave()
        return self.status

    def stop(self, status=None):
        """End the session from outside the input greenlet (a signal, a crash, a broken stdout)."""
        if status is not None:
            self.status = status
        if self.input is not None:
            self.input.kill(block=False)

    # -- typed commands ----------------------------------------------------------------------------

    def _input_loop(self, source):
        for line in source.lines():
            if isinstance(line, LineTooLong):
                self.console.show(f"ERROR: an input line of {line.size} bytes is too long; it was skipped.")
            elif self.run_command(line) == "QUIT":
                return

    def run_command(self, line):
        """Run one typed line; returns the command's name (``"QUIT"`` ends the session)."""
        command = parse_input(line)
        if command is None:
            self.console.show(UNKNOWN_COMMAND)
            return None
        name, args = command
        if name in ("", "QUIT"):
            pass
        elif name == "HELP":
            for text in HELP:
                self.console.show(text)
        elif name == "CONNECT":
            self.connect()
        elif self.conn is None:
            self.console.show(NOT_CONNECTED)
        else:
            try:
                self.conn.send(name, *args)  # the client's other commands are the protocol's
            except OSError as err:
                self.console.show(f"ERROR: could not send ({err.strerror or err}).")
        return name

    def connect(self):
        if self.conn is not None:
            self.console.show(f"ERROR: Already connected to {self.conn.address} as {self.conn.name}.")
            return
        try:
            sock = gevent.socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError:
            self.console.show(CONNECT_FAILED)
            return
        if self.tls is not None:
            sock = self._handshake(sock)
            if sock is None:
                return
        conn = Connection(sock, self.address)
        conn.reader = gevent.spawn(self._read_loop, conn)
        conn.reader.link_exception(lambda _: self.stop(1))
        try:
            conn.settled.wait(self.connect_timeout)
        finally:
            if conn.id is None:  # no HELLO in time, refused, or the session is being stopped
                conn.reader.kill(block=True, timeout=QUIT_TIMEOUT)
                conn.close()
        if conn.id is None:
            self.console.show(CONNECT_FAILED)
            if conn.refused:
                self.console.show(f"Server refused the connection ({conn.reason}).")
            return
        self.conn = conn

    def _handshake(self, sock):
        """The TLS handshake within the connect timeout; the TLS socket, or None (said why)."""
        try:
            with gevent.Timeout(self.connect_timeout, socket.timeout("handshake timed out")):
                tls = self.tls.wrap_socket(sock, server_hostname=self.host)
            return tls
        except ssl.SSLCertVerificationError as err:
            why = err.verify_message or err.reason
        except (OSError, ValueError) as err:
            why = getattr(err, "reason", None) or err.strerror or str(err) or type(err).__name__
        sock.close()
        self.console.show(CONNECT_FAILED)
        self.console.show(f"TLS: {str(why).rstrip('.')}.")
        return None

    def _leave(self):
        """Send QUIT, wait (bounded) for the server's BYE and close, then close regardless."""
        conn = self.conn
        if conn is None:
            return
        try:
            conn.send("QUIT")
        except OSError:
            pass
        conn.reader.join(QUIT_TIMEOUT)
        if not conn.reader.dead:
            conn.reader.kill(block=True, timeout=QUIT_TIMEOUT)
            self.console.show("Disconnected (the server did not answer QUIT).")
        conn.close()
        self.conn = None

    # -- the server's lines ------------------------------------------------------------------------

    def _read_loop(self, conn):
        reason = None
        try:
            reason = self._pump(conn)
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
        finally:  # on GreenletExit reason stays None: whoever stopped us reports it
            conn.close()
            conn.reason = reason
            conn.settled.set()
            if self.conn is conn:
                self.conn = None
            if reason is not None and conn.id is not None:
                self.console.show(f"Disconnected from server ({reason}).")

    def _pump(self, conn):
        """Read and handle the server's lines until it leaves; returns the reason it left."""
        sock = conn.sock
        sock.settimeout(IDLE_TIMEOUT)
        pinged = False
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except (socket.timeout, ssl.SSLError) as err:
                if isinstance(err, ssl.SSLError) and "timed out" not in str(err):
                    raise  # gevent's TLS socket times out with an SSLError, not socket.timeout
                if pinged:
                    return "server not responding"
                pinged = True
                conn.send("PING", "alive")
                sock.settimeout(PING_TIMEOUT)
                continue
            if not data:
                return "connection closed"
            if pinged:
                pinged = False
                sock.settimeout(IDLE_TIMEOUT)
            for line in conn.lines.feed(data):
                reason = self._on_line(conn, line)
                if reason is not None:
                    return reason
            # recv() returns without yielding while data keeps coming, and sleep(0) lets the loop
            # poll other descriptors only once per switch interval: wait once per read for a poll,
            # so keys typed during a busy room's burst are read between its messages.
            gevent.idle()

    def _on_line(self, conn, line):
        """Handle one server line; returns a reason when the server is closing the connection."""
        if isinstance(line, LineTooLong):
            self.console.show(f"ERROR: a line of {line.size} bytes from the server was too long; skipped.")
            return None
        event = native.parse_event(line)
        name, args = event.name, event.args
        if name == "PING":
            conn.send("PONG", *args)
        elif name == "PONG":
            pass
        elif name == "BYE":
            conn.refused = conn.id is None
            return args[0] if args else "no reason given"
        elif name == "HELLO" and conn.id is None and args:
            conn.id = conn.name = args[0]
            self.console.show(f"Connected to {conn.address} as {conn.id}")
            conn.settled.set()
            if self.nick and self.password is not None:
                conn.send("LOGIN", self.nick, self.password)
            elif self.nick:
                conn.send("NICK", self.nick)
        elif name == "TELLHISTEND":
            self.console.show(KEPT_END)
        elif name == "HISTEND":
            if conn.history_shown:
                self.console.show(HISTORY_END.format(room=args[0] if args else "?"))
            conn.history_shown = 0
        else:
            if name == "HIST":
                conn.history_shown += 1
            if name == "NICK" and len(args) == 2 and args[0] == conn.name:
                conn.name = self.nick = args[1]
            self.console.show(describe(event))
        return None


# -- command line ---------------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(
        prog="chat-client",
        description="Terminal client for the chat server. Type CONNECT to connect, HELP for all commands.")
    a = p.add_argument
    a("--host", default=DEFAULT_HOST, help="server address (default %(default)s)")
    a("--port", type=int, default=DEFAULT_PORT, help="server TCP port (default %(default)s)")
    a("--nick", metavar="NAME", help="nickname to take after connecting")
    a("--password", action="store_true",
      help="with --nick: log in to that account after connecting; the password is asked for "
      "without echo on a terminal, else read from the first line of standard input")
    a("--tls", action="store_true",
      help="connect over TLS, checking the server's certificate and host name")
    a("--cafile", metavar="FILE",
      help="with --tls: trust the certificate authorities in FILE (PEM) rather than the system's")
    a("--connect-timeout", type=float, default=CONNECT_TIMEOUT, metavar="SECONDS",
      help="how long CONNECT waits for the server (default %(default)s)")
    return p


def read_password(fd=0):
    """The password: asked for without echo on a terminal, else standard input's first line.

    Read byte by byte from a pipe so that the commands after it stay unread for the session.
    """
    if os.isatty(fd):
        import getpass

        return getpass.getpass("Password: ")
    data = bytearray()
    while len(data) <= INPUT_MAX_LINE:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            break
        data += byte
    return data.decode("utf-8", "replace").rstrip("\r")


def client_context(cafile=None):
    """ssl.create_default_context()'s settings (certificate and host name checked) in gevent's
    class, so a handshake waits cooperatively; ``cafile`` replaces the system's authorities."""
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    tls = None
    password = None
    if args.password:
        if not args.nick:
            parser.error("--password needs --nick")
        password = read_password()
        if not password:
            parser.error("no password given")
    if args.cafile and not args.tls:
        parser.error("--cafile needs --tls")
    if args.tls:
        try:
            tls = client_context(args.cafile)
        except (OSError, ValueError) as err:
            parser.error(f"cannot read --cafile {args.cafile}: {err}")
    terminal = Terminal(0, 1)
    editor = LineEditor() if terminal.interactive else None
    client = None
    console = Console(1, editor, on_broken=lambda: client.stop(1))
    client = ChatClient(args.host, args.port, console, nick=args.nick,
                        connect_timeout=args.connect_timeout, tls=tls, password=password)
    handlers = []
    try:
        terminal.enter()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handlers.append(gevent.signal_handler(sig, client.stop))
        if editor is not None:
            handlers.append(gevent.signal_handler(signal.SIGTSTP, _suspend, terminal, console))
        if terminal.saved is not None:
            console.show(f"Type CONNECT to connect to {client.address}, HELP for all commands.")
        return client.run(Input(0, editor, console))
    finally:
        for handler in handlers:
            handler.cancel()
        console.close()
        terminal.restore()


def _suspend(terminal, console):
    """Ctrl-Z: give the shell back its terminal, stop; on resume take it again and redraw."""
    console.close()
    terminal.restore()
    os.kill(os.getpid(), signal.SIGSTOP)
    terminal.enter()
    console.redraw()


if __name__ == "__main__":
    sys.exit(main())

"""The terminal client: bin/chat-client processes with piped stdin against bin/chat-server, a
scripted fake server for hostile input, and unit tests of its pure parts.

Every wait is on an event (a line on the client's stdout, a line on a socket, a process exit)
with a deadline.
"""

import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatroom.codec import native
from chatroom.codec.lines import LineTooLong, NO_LINE_END_LIMIT
from chatroom.client import (
    LineEditor,
    describe,
    finish,
    fit_tail,
    line_framer,
    parse_input,
    sanitize,
)
from conftest import BIN, ROOT, WAIT, free_port

#: Characters that must never reach the terminal raw; the client prints only "\n" among controls.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# What the user sees, word for word (the first two are the user's specification). Spelled out
# here, never imported from the client: a test comparing the client's output with the client's
# own constants would pass whatever the text said.
UNKNOWN_COMMAND = "ERROR: Please use the CONNECT, SEND <message>, and QUIT commands."
CONNECT_FAILED = "ERROR: Connection Failed."
HELP = [
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
]


class ClientProcess:
    """``bin/chat-client`` with stdin and stdout through pipes; stdout lines collected by a thread."""

    def __init__(self, port, *args):
        cmd = [sys.executable, str(BIN / "chat-client"), "--port", str(port), *map(str, args)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        self.port = port
        self.raw = bytearray()  # everything the client printed
        self.lines = []  # the same, as lines
        self.seen = 0  # lines before this index were matched already
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.readline(), b""):
            with self._new:
                self.raw += chunk
                self.lines.append(chunk.decode("utf-8", "backslashreplace").rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def type(self, *lines):
        for line in lines:
            self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def expect(self, pattern, timeout=WAIT):
        """Wait for the next output line matching the regex ``pattern`` in full; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for i in range(self.seen, len(self.lines)):
                    m = rx.fullmatch(self.lines[i])
                    if m:
                        self.seen = i + 1
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"client printed no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-30:]))
                self._new.wait(min(left, 0.5))

    def expect_line(self, text, timeout=WAIT):
        return self.expect(re.escape(text), timeout)

    def connect(self):
        """CONNECT; returns the id the server gave this client."""
        self.type("CONNECT")
        return self.expect(rf"Connected to 127\.0\.0\.1:{self.port} as (127\.0\.0\.1:\d+)").group(1)

    def wait(self, timeout=WAIT):
        """Wait for the process to exit (stdin closed first); returns its exit code."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def output(self):
        with self._new:
            return "\n".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


@pytest.fixture
def chat_client():
    """Factory: ``chat_client(port, *args)`` starts a ``bin/chat-client``; all are stopped after,
    and none may have printed a traceback."""
    made = []

    def start(port, *args):
        client = ClientProcess(port, *args)
        made.append(client)
        return client

    yield start
    for client in made:
        client.kill()
    for client in made:
        assert "Traceback" not in client.output(), client.output()


@pytest.fixture
def fake_server():
    """A listening socket the test scripts by hand: it plays a server that sends hostile lines."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    yield listener
    listener.close()


class FakePeer:
    """The fake server's side of one accepted connection: send bytes, read the client's lines."""

    def __init__(self, listener, hello="HELLO 127.0.0.1:5000 chatroom/1.0\n"):
        self.sock, _ = listener.accept()
        self.sock.settimeout(WAIT)
        self._lines = self.sock.makefile("rb")
        if hello:
            self.sendall(hello.encode())

    def sendall(self, data):
        self.sock.sendall(data)

    def readline(self):
        return self._lines.readline()

    def close(self):
        self._lines.close()
        self.sock.close()


# -- end to end against bin/chat-server -----------------------------------------------------------


def test_message_reaches_the_others_with_sender_address_and_port(server, chat_client):
    a, b, c = (chat_client(server.port) for _ in range(3))
    ids = [x.connect() for x in (a, b, c)]
    a.type("SEND Hello, Server!")
    for other in (b, c):
        other.expect_line(f"[lobby] {ids[0]}: Hello, Server!")
    c.type("SEND hi from c")
    for other in (a, b):
        other.expect_line(f"[lobby] {ids[2]}: hi from c")
    assert "Hello, Server!" not in a.output()  # the server never echoes to the sender
    for me in ids:  # the server's log names each of them, word for word
        server.wait_for(rf"^Connection has been established with {re.escape(me)}$")


def test_unknown_commands_get_the_exact_error_and_nothing_is_sent(server, clients, chat_client):
    watcher = clients(server)
    user = chat_client(server.port)
    user.connect()
    bad = ["send hi", "Send hi", "SEND", "SEND    ", "connect", "CONNECT now", "QUIT now", "quit",
           "NICK", "NICK a b", "JOIN", "TELL", "TELL ann", "SENDhi", "HELLO", "PING"]
    user.type(*bad)
    for _ in bad:
        user.expect_line(UNKNOWN_COMMAND)
    user.type("", "   ", "SEND after the errors")  # blank lines are ignored
    heard = watcher.expect("MSG ")  # fails on any other line first: the errors sent nothing
    assert heard.endswith(" after the errors")
    assert user.output().count(UNKNOWN_COMMAND) == len(bad)


def test_send_before_connect_is_a_clear_error_not_a_crash(server, chat_client):
    user = chat_client(server.port)
    user.type("SEND too early", "WHO")
    user.expect_line("ERROR: Not connected; type CONNECT first.")
    user.expect_line("ERROR: Not connected; type CONNECT first.")
    user.connect()
    user.type("QUIT")
    assert user.wait() == 0


def test_connect_failure_is_reported_and_a_later_connect_works(start_server, chat_client):
    port = free_port()  # nothing listens here yet
    user = chat_client(port)
    user.type("CONNECT")
    user.expect_line(CONNECT_FAILED)
    user.type("CONNECT")
    user.expect_line(CONNECT_FAILED)
    try:
        server = start_server("--port", port)  # the last --port wins over the fixture's --port 0
    except AssertionError:
        pytest.skip(f"port {port} was taken by another program meanwhile")
    other = chat_client(port)
    other_id = other.connect()
    user_id = user.connect()  # the same process: CONNECT after failures works
    other.type("SEND you made it")
    user.expect_line(f"[lobby] {other_id}: you made it")
    user.type("SEND thanks")
    other.expect_line(f"[lobby] {user_id}: thanks")
    user.type("QUIT")
    assert user.wait() == 0
    server.wait_for(rf"Connection closed with {re.escape(user_id)} \(quit\)")


def test_connect_times_out_on_a_silent_server(fake_server, chat_client):
    user = chat_client(fake_server.getsockname()[1], "--connect-timeout", "0.5")
    user.type("HELP")  # the client is up and reading: its start-up is not timed below
    user.expect(r"Commands .*")
    started = time.monotonic()
    user.type("CONNECT")
    conn = FakePeer(fake_server, hello=None)  # accepts but never says HELLO
    user.expect_line(CONNECT_FAILED)
    waited = time.monotonic() - started
    # It waited the 0.5 s asked for, not the 5 s default.
    assert 0.5 <= waited < 3.0, waited
    conn.close()


def test_a_full_server_is_a_failed_connect_with_its_reason(start_server, clients, chat_client):
    server = start_server("--max-clients", 1)
    clients(server)  # takes the only place
    user = chat_client(server.port)
    user.type("CONNECT")
    user.expect_line(CONNECT_FAILED)
    user.expect_line("Server refused the connection (server-full).")
    user.type("QUIT")
    assert user.wait() == 0


def test_quit_leaves_the_others_chatting(server, chat_client):
    a, b, c = (chat_client(server.port) for _ in range(3))
    ids = [x.connect() for x in (a, b, c)]
    c.type("QUIT")
    c.expect_line("Disconnected from server (quit).")
    assert c.wait() == 0
    for other in (a, b):
        other.expect_line(f"* {ids[2]} left lobby (quit)")
    a.type("SEND still here")
    b.expect_line(f"[lobby] {ids[0]}: still here")
    b.type("SEND me too")
    a.expect_line(f"[lobby] {ids[1]}: me too")
    server.wait_for(rf"Connection closed with {re.escape(ids[2])} \(quit\)")


def test_server_shutdown_is_reported_and_the_client_carries_on(server, chat_client):
    a, b = chat_client(server.port), chat_client(server.port)
    a.connect()
    b.connect()
    server.signal(signal.SIGTERM)
    for user in (a, b):
        user.expect_line("Disconnected from server (server-shutdown).")
    assert server.proc.wait(WAIT) == 0
    a.type("SEND nobody listens")
    a.expect_line("ERROR: Not connected; type CONNECT first.")
    a.type("CONNECT")
    a.expect_line(CONNECT_FAILED)
    a.type("QUIT")
    assert a.wait() == 0
    assert b.wait() == 0  # end of input after a lost connection: exits cleanly


def test_piped_stdin_like_printf(server, clients):
    watcher = clients(server)
    result = subprocess.run(
        [sys.executable, str(BIN / "chat-client"), "--port", str(server.port)],
        input=b"CONNECT\nSEND hi\nQUIT\n", capture_output=True, timeout=WAIT, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    me = re.search(r"^Connected to 127\.0\.0\.1:\d+ as (\S+)$", out, re.M).group(1)
    assert watcher.expect("MSG ") == f"MSG lobby {me} hi"
    assert out.endswith("Disconnected from server (quit).\n")
    assert result.stderr == b""


def test_end_of_input_acts_like_quit(server, clients):
    watcher = clients(server)
    result = subprocess.run(
        [sys.executable, str(BIN / "chat-client"), "--port", str(server.port)],
        input=b"CONNECT\nSEND last words", capture_output=True, timeout=WAIT, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    me = re.search(rb"as (\S+)\n", result.stdout).group(1).decode()
    # The last line had no line end: it still ran, then the client left with QUIT.
    assert watcher.expect("MSG ") == f"MSG lobby {me} last words"
    assert watcher.expect("PART ") == f"PART lobby {me} quit"
    server.wait_for(rf"Connection closed with {re.escape(me)} \(quit\)")


def test_nick_join_tell_who_rooms_help(server, clients, chat_client):
    bob = clients(server)
    bob.send("NICK bob")
    bob.expect(f"NICK {bob.id} bob")
    ann = chat_client(server.port, "--nick", "ann")
    ann_id = ann.connect()
    ann.expect_line(f"* {ann_id} is now known as ann")
    bob.expect(f"NICK {ann_id} ann")
    ann.type("SEND hi bob")
    assert bob.expect("MSG ") == "MSG lobby ann hi bob"

    bob.send("TELL ann psst")
    ann.expect_line("[private] bob: psst")
    ann.type("TELL bob back at you")
    assert bob.expect("TELL ") == "TELL ann back at you"

    ann.type("NICK bob")
    ann.expect(r"ERROR: .*'bob'.* \(nick-taken\)")
    ann.type("WHO")
    ann.expect_line("* People in lobby: bob, ann")
    ann.type("JOIN dev")
    ann.expect_line("* ann joined dev")
    assert bob.expect("PART ") == "PART lobby ann join"
    ann.type("ROOMS")
    m = ann.expect(r"\* Rooms: (.*)")
    assert sorted(m.group(1).split(", ")) == ["dev (1)", "lobby (1)"]
    bob.send("JOIN dev")
    ann.expect_line("* bob joined dev")
    bob.send("SEND in dev")
    ann.expect_line("[dev] bob: in dev")

    ann.type("HELP")
    for line in HELP:
        ann.expect_line(line)
    ann.type("QUIT")
    assert ann.wait() == 0


def test_a_nickname_changed_after_nick_is_the_one_claimed_again_on_reconnect(start_server, clients,
                                                                             chat_client):
    """--nick ann, then NICK bob: after the server drops the connection, CONNECT claims bob."""
    # Flood control is the server's own way to drop a client: 3 lines at once, then each line
    # over the (negligible) rate is a strike, and more than 6 strikes is a disconnect.
    server = start_server("--flood-rate", 0.01, "--flood-burst", 3)
    watcher = clients(server)
    user = chat_client(server.port, "--nick", "ann")
    first_id = user.connect()
    user.expect_line(f"* {first_id} is now known as ann")
    assert watcher.expect("NICK ") == f"NICK {first_id} ann"
    user.type("NICK bob")
    user.expect_line("* ann is now known as bob")
    assert watcher.expect("NICK ") == "NICK ann bob"

    user.type(*(f"SEND flood {i}" for i in range(10)))  # 1 token left, then strikes
    user.expect_line("Disconnected from server (flood).")
    assert watcher.expect("MSG ") == "MSG lobby bob flood 0"  # the last token
    assert watcher.expect("PART ") == "PART lobby bob flood"

    second_id = user.connect()
    assert watcher.expect("JOIN ") == f"JOIN lobby {second_id}"
    assert watcher.expect("NICK ") == f"NICK {second_id} bob"  # not ann
    user.expect_line(f"* {second_id} is now known as bob")
    user.type("QUIT")
    assert user.wait() == 0


# -- hostile or odd servers (a scripted fake) ------------------------------------------------------


def test_escape_sequences_and_bidi_from_the_network_are_neutralized(fake_server, chat_client):
    user = chat_client(fake_server.getsockname()[1])
    user.type("CONNECT")
    conn = FakePeer(fake_server)
    user.expect(r"Connected to .* as 127\.0\.0\.1:5000")
    hostile = [
        "MSG lobby x \x1b]0;pwned\x07\x1b[2J\x1b[H wiped",
        "MSG lobby \x1b[31mred\x1b[0m colored sender",
        "MSG lobby x one-byte csi \x9b2J and c1 \x85\x90",
        "MSG lobby x abc\u202edcba \u2066isolated\u2069 \u202aembedded\u202c",
        "MSG lobby x \x1b[200~pasted\x1b[201~",
        "MSG x\x1b[1Aroom y del\x7f nul\x00 bs\x08 cr\rhere",
        "TELL \x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\ private",
        "ERR bad\x1b[5m code \x1b[?1049h",
        "JOIN lobby \x1bc",
        "WHO lobby a\x1b[8m b",
        "NOTAVERB \x1bP+q\x1b\\ device control",
        "MSG lobby x done",
    ]
    conn.sendall("".join(line + "\n" for line in hostile).encode("utf-8"))
    user.expect_line("[lobby] x: done")
    out = bytes(user.raw).decode("utf-8")  # valid UTF-8, and:
    assert not UNSAFE.search(out), repr(UNSAFE.search(out))
    assert "[lobby] x: ^[]0;pwned^G^[[2J^[[H wiped" in out
    assert "[lobby] x: abc<U+202E>dcba <U+2066>isolated<U+2069> <U+202A>embedded<U+202C>" in out
    assert "[lobby] x: ^[[200~pasted^[[201~" in out
    assert "one-byte csi <U+009B>2J and c1 <U+0085><U+0090>" in out
    assert "del^? nul^@ bs^H cr^Mhere" in out
    conn.sendall(b"BYE \x1b[2Jgone\n")
    user.expect_line("Disconnected from server (^[[2Jgone).")
    conn.close()


def test_a_100kb_line_is_reported_and_the_connection_goes_on(fake_server, chat_client):
    user = chat_client(fake_server.getsockname()[1])
    user.type("CONNECT")
    conn = replies = FakePeer(fake_server)
    user.expect(r"Connected to .*")
    big = b"MSG lobby x " + b"A" * 100_000
    for chunking in (len(big) + 1, 4096):  # all in one piece, then in many
        data = big + b"\nMSG lobby x before ping\nPING 42\n"
        for i in range(0, len(data), chunking):
            conn.sendall(data[i:i + chunking])
        user.expect_line(f"ERROR: a line of {len(big)} bytes from the server was too long; skipped.")
        user.expect_line("[lobby] x: before ping")
        assert replies.readline() == b"PONG 42\n"  # answered, silently
    assert "PING" not in user.output() and "PONG" not in user.output()

    conn.close()  # the server goes away without a word...
    user.expect_line("Disconnected from server (connection closed).")
    user.type("CONNECT")  # ...and the user connects again
    conn = replies = FakePeer(fake_server)
    user.expect(r"Connected to .*")
    user.type("QUIT")
    assert replies.readline() == b"QUIT\n"
    conn.sendall(b"BYE quit\n")
    conn.close()
    user.expect_line("Disconnected from server (quit).")
    assert user.wait() == 0


def test_a_server_line_of_64_kib_is_shown_and_one_byte_more_is_skipped(fake_server, chat_client):
    user = chat_client(fake_server.getsockname()[1])
    user.type("CONNECT")
    conn = FakePeer(fake_server)
    user.expect(r"Connected to .*")
    head = b"MSG lobby x "
    conn.sendall(head + b"A" * (65536 - len(head)) + b"\n")  # 64 KiB exactly, line end aside
    user.expect_line("[lobby] x: " + "A" * (65536 - len(head)))
    conn.sendall(head + b"B" * (65537 - len(head)) + b"\nMSG lobby x after\n")
    user.expect_line("ERROR: a line of 65537 bytes from the server was too long; skipped.")
    user.expect_line("[lobby] x: after")
    conn.close()


def test_quit_is_bounded_when_the_server_never_answers(fake_server, chat_client):
    user = chat_client(fake_server.getsockname()[1])
    user.type("CONNECT")
    conn = replies = FakePeer(fake_server)
    user.expect(r"Connected to .*")
    user.type("QUIT")
    assert replies.readline() == b"QUIT\n"  # and no BYE, no close
    user.expect_line("Disconnected (the server did not answer QUIT).")
    assert user.wait() == 0
    conn.close()


# -- unit tests of the pure parts -----------------------------------------------------------------


@pytest.mark.parametrize("raw, shown", [
    ("plain text, ünïcödé, 日本語 ✓", "plain text, ünïcödé, 日本語 ✓"),
    ("\x1b[2J", "^[[2J"),
    ("\x1b]0;title\x07", "^[]0;title^G"),
    ("\x1b[200~x\x1b[201~", "^[[200~x^[[201~"),
    ("a\x00b\x7fc\rd\ne\tf", "a^@b^?c^Md^Je^If"),
    ("\x9b31m\x85", "<U+009B>31m<U+0085>"),
    ("\u202aa\u202b\u202c\u202d\u202e", "<U+202A>a<U+202B><U+202C><U+202D><U+202E>"),
    ("\u2066\u2067\u2068\u2069", "<U+2066><U+2067><U+2068><U+2069>"),
])
def test_sanitize(raw, shown):
    assert sanitize(raw) == shown


@given(st.text())
def test_sanitize_leaves_nothing_unsafe_and_keeps_safe_text(text):
    shown = sanitize(text)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", shown)
    if not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text):
        assert shown == text


@pytest.mark.parametrize("line, shown", [
    ("MSG lobby 127.0.0.1:54321 Hello, Server!", "[lobby] 127.0.0.1:54321: Hello, Server!"),
    ("MSG dev ann a  b ", "[dev] ann: a  b "),
    ("TELL ann hi there", "[private] ann: hi there"),
    ("JOIN dev ann", "* ann joined dev"),
    ("PART lobby bob quit: gone fishing", "* bob left lobby (quit: gone fishing)"),
    ("PART lobby bob", "* bob left lobby"),
    ("NICK 127.0.0.1:1 ann", "* 127.0.0.1:1 is now known as ann"),
    ("WHO lobby ann 127.0.0.1:2", "* People in lobby: ann, 127.0.0.1:2"),
    ("ROOMS lobby:2 dev:1", "* Rooms: lobby (2), dev (1)"),
    ("ROOMS", "* Rooms: none"),
    ("ERR nick-taken nickname 'ann' is in use", "ERROR: nickname 'ann' is in use (nick-taken)"),
    ("ERR odd", "ERROR: odd (odd)"),
    ("MSG lobby", "MSG lobby"),  # malformed: shown as it came
    ("FUTURE thing", "FUTURE thing"),
])
def test_describe(line, shown):
    assert describe(native.parse_event(line)) == shown


@pytest.mark.parametrize("line, parsed", [
    ("CONNECT", ("CONNECT", ())),
    ("  QUIT  ", ("QUIT", ())),
    ("SEND Hello, Server!", ("SEND", ("Hello, Server!",))),
    ("SEND  indented", ("SEND", (" indented",))),
    ("TELL ann see you at 5", ("TELL", ("ann", "see you at 5"))),
    ("NICK ann", ("NICK", ("ann",))),
    ("JOIN dev ", ("JOIN", ("dev",))),
    ("WHO", ("WHO", ())),
    ("ROOMS", ("ROOMS", ())),
    ("HELP", ("HELP", ())),
    ("", ("", ())),
    ("   ", ("", ())),
    ("send hi", None), ("SEND", None), ("SEND   ", None), ("connect", None),
    ("CONNECT x", None), ("QUIT bye", None), ("NICK", None), ("NICK a b", None),
    ("TELL", None), ("TELL ann", None), ("TELL ann   ", None), ("SEND\thi", None), ("PING", None),
])
def test_parse_input(line, parsed):
    assert parse_input(line) == parsed


def test_line_editor_keys():
    ed = LineEditor(max_chars=10)
    assert ed.feed(b"SEND hx\x7fi\r") == ["SEND hi"]
    assert ed.feed(b"abc\x1b[D\x1bOA\x1b[1;5Cd\x15xy") == [] and ed.text == "xy"  # arrows dropped
    assert ed.feed(b" one two\x17") == [] and ed.text == "xy one "
    assert ed.feed(b"\x07\x01\x04\xe2\x80\xae|") == [] and ed.text == "xy one |"  # controls dropped
    assert ed.feed("é漢字".encode()[:3]) == [] and ed.text == "xy one |é"  # split UTF-8 waits
    assert ed.feed("漢字".encode()[1:] + b"\n") == ["xy one |é漢"]  # over max_chars: dropped
    assert not ed.eof
    assert ed.feed(b"\x04") == [] and ed.eof  # Ctrl-D on an empty line


def test_fit_tail():
    assert fit_tail("hello", 10) == "hello"
    assert fit_tail("hello", 3) == "llo"
    assert fit_tail("ab漢字", 4) == "漢字"
    assert fit_tail("ab漢字", 3) == "字"
    assert fit_tail("", 5) == ""


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")),
                       st.integers(65_530, 66_000), st.just(100_000)), max_size=5),
    st.lists(st.integers(300, 70_000), min_size=1, max_size=6),
)
@example(items=[b"a", 100_000, b"b", b"c"], cuts=[200_000])  # the giant line ends inside the read
@example(items=[b"a", 100_000, b"b"], cuts=[60_000])  # the read ends inside the giant line
def test_client_framer_survives_giant_lines_at_any_split(items, cuts):
    """Lines up to the limit come through, each longer one is one LineTooLong, whatever the reads."""
    items_ = [b"x" * item if isinstance(item, int) else item for item in items]
    data = b"".join(line + b"\n" for line in items_)
    splitter, out, pos, i = line_framer(NO_LINE_END_LIMIT), [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += splitter.feed(data[pos:pos + step])
        pos, i = pos + step, i + 1
    out += finish(splitter)
    expected = [line.removesuffix(b"\r") if len(line) <= NO_LINE_END_LIMIT
                else LineTooLong(len(line)) for line in items_]
    assert out == expected

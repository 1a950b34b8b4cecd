"""End-to-end tests of bin/chat-server as a subprocess, spoken to over raw sockets on 127.0.0.1.

Each test starts its own server on an ephemeral port (fixtures in conftest.py). Absence of a line
is proven with ``sync()``: a PING round trip after which everything queued before has arrived.
"""

import re
import socket
import threading
import time

import pytest

from chatroom.codec.lines import LineFramer
from conftest import WAIT


def settle(*clients):
    """Read every line queued so far to each client (JOINs of later arrivals and the like)."""
    return [c.sync() for c in clients]


def lobby(server, clients, n=3):
    """``n`` clients in the lobby, each having read everything queued to it so far."""
    made = [clients(server) for _ in range(n)]
    settle(*made)
    return made


def closed_line(c):
    return rf"Connection closed with {re.escape(c.id)} "


# -- the core: a message reaches exactly the others ----------------------------------------------

def test_send_reaches_exactly_the_two_others(server, clients):
    a, b, c = lobby(server, clients)
    for x in (a, b, c):
        port = x.sock.getsockname()[1]
        assert x.id == f"127.0.0.1:{port}"
        server.wait_for(rf"^Connection has been established with 127\.0\.0\.1:{port}$")
    a.send("SEND Hello, Server!")
    for other in (b, c):
        assert other.recv_line() == f"MSG lobby {a.id} Hello, Server!"
        assert other.sync() == []  # exactly one copy
    assert a.sync() == []  # never to the sender
    b.send("SEND back at you")
    assert a.recv_line() == c.recv_line() == f"MSG lobby {b.id} back at you"
    assert b.sync() == []


def test_leaving_is_logged_and_announced(server, clients):
    a, b, c = lobby(server, clients)
    a.close()
    server.wait_for(closed_line(a) + r"\(disconnected\)$")
    for other in (b, c):
        assert other.recv_line() == f"PART lobby {a.id} disconnected"
    b.send("SEND still here")
    assert c.recv_line() == f"MSG lobby {b.id} still here"


def test_hello_then_own_join(server):
    c = server.connect(hello=False)
    try:
        assert c.recv_line() == f"HELLO 127.0.0.1:{c.sock.getsockname()[1]} chatroom/1.0"
        assert c.recv_line() == f"JOIN lobby 127.0.0.1:{c.sock.getsockname()[1]}"
    finally:
        c.close()


# -- rooms, nicknames, TELL, WHO, ROOMS, PING ----------------------------------------------------

def test_rooms(server, clients):
    a, b, c = lobby(server, clients)
    a.send("JOIN dev")
    assert a.recv_line() == f"JOIN dev {a.id}"
    assert b.recv_line() == c.recv_line() == f"PART lobby {a.id} join"
    b.send("JOIN dev")
    assert b.recv_line() == f"JOIN dev {b.id}"
    assert a.recv_line() == f"JOIN dev {b.id}"
    assert c.recv_line() == f"PART lobby {b.id} join"
    a.send("SEND dev only")
    assert b.recv_line() == f"MSG dev {a.id} dev only"
    assert c.sync() == []
    c.send("SEND lobby only")
    assert a.sync() == [] and b.sync() == []
    a.send("WHO")
    assert a.recv_line() == f"WHO dev {a.id} {b.id}"
    c.send("ROOMS")
    assert c.recv_line() == "ROOMS lobby:1 dev:2"


def test_nicknames(server, clients):
    a, b, c = lobby(server, clients)
    a.send("NICK ann")
    for x in (a, b, c):
        assert x.recv_line() == f"NICK {a.id} ann"
    a.send("SEND hi from ann")
    assert b.recv_line() == c.recv_line() == "MSG lobby ann hi from ann"
    b.send("NICK ANN")
    assert b.recv_line().startswith("ERR nick-taken ")
    b.send("NICK -bob")
    assert b.recv_line().startswith("ERR nick-invalid ")
    b.send("NICK " + "b" * 33)
    assert b.recv_line().startswith("ERR nick-invalid ")
    assert a.sync() == [] and c.sync() == []  # refusals are not announced
    b.send("NICK bob")
    for x in (a, b, c):
        assert x.recv_line() == f"NICK {b.id} bob"
    a.send("WHO")
    assert a.recv_line() == f"WHO lobby ann bob {c.id}"


def test_tell_by_nick_and_by_id(server, clients):
    a, b, c = lobby(server, clients)
    a.send("NICK ann")
    settle(a, b, c)
    b.send("TELL ANN psst")
    assert a.recv_line() == f"TELL {b.id} psst"
    a.send(f"TELL {b.id} by id")
    assert b.recv_line() == "TELL ann by id"
    assert c.sync() == [] and a.sync() == [] and b.sync() == []
    c.send("TELL nobody hello?")
    assert c.recv_line().startswith("ERR no-such-nick ")
    assert a.sync() == [] and b.sync() == []


def test_ping_pong(server, clients):
    (a,) = lobby(server, clients, 1)
    a.send("PING 42")
    assert a.recv_line() == "PONG 42"
    a.send("PING")
    assert a.recv_line() == "PONG"
    a.send("PONG 1732571234")  # an answer to the server's PING: accepted silently
    assert a.sync() == []


def test_quit(server, clients):
    a, b, c = lobby(server, clients)
    a.send("QUIT gone fishing")
    assert a.expect_closed() == ["BYE quit"]
    assert b.recv_line() == c.recv_line() == f"PART lobby {a.id} quit: gone fishing"
    server.wait_for(closed_line(a) + r"\(quit")
    b.send("QUIT")
    assert b.expect_closed() == ["BYE quit"]
    assert c.recv_line() == f"PART lobby {b.id} quit"
    d = clients(server)
    settle(c)
    c.send("SEND still chatting")
    assert d.recv_line() == f"MSG lobby {c.id} still chatting"


def test_presence_limit_counts_the_one_who_comes_or_goes(start_server, clients):
    """--presence-limit 2: a room that would have 3 with the newcomer or the leaver is not told."""
    server = start_server("--presence-limit", 2)
    a = clients(server)
    b = clients(server)  # a room of 2: announced
    assert a.recv_line() == f"JOIN lobby {b.id}"
    c = clients(server)  # a room of 3: only c hears its own JOIN
    assert a.sync() == [] and b.sync() == []
    c.send("NICK carl")  # changes in a room of 3 are not announced either
    assert c.recv_line() == f"NICK {c.id} carl"
    assert a.sync() == [] and b.sync() == []
    c.send("QUIT")  # leaving a room of 3
    assert c.expect_closed() == ["BYE quit"]
    server.wait_for(closed_line(c) + r"\(quit\)$")
    assert a.sync() == [] and b.sync() == []
    b.send("QUIT")  # leaving a room of 2: announced
    assert b.expect_closed() == ["BYE quit"]
    assert a.recv_line() == f"PART lobby {b.id} quit"


# -- bad input: an ERR, nothing relayed, and the connection keeps working ------------------------

BAD_LINES = [
    (b"FROB x", "unknown-command"),
    (b"send hi", "unknown-command"),
    (b"", "unknown-command"),
    (b"SEND", "missing-argument"),
    (b"SEND ", "missing-argument"),
    (b"TELL someone", "missing-argument"),
    (b"NICK", "missing-argument"),
    (b"JOIN", "missing-argument"),
    (b"SEND \xff\xfe bytes", "invalid-utf8"),
    (b"SEND \x1b[31mred\x1b[0m", "bad-text"),
    (b"SEND \x1b]0;owned\x07", "bad-text"),
    (b"SEND tab\there", "bad-text"),
    ("SEND \u202eevil".encode(), "bad-text"),
    ("SEND c1 \u009b2J".encode(), "bad-text"),
    (b"TELL x \x1b[2J", "bad-text"),
    (b"NICK -dash", "nick-invalid"),
    (b"NICK n\xc3\xa9", "nick-invalid"),
    (b"JOIN #dev", "room-invalid"),
    (b"TELL nobody hi", "no-such-nick"),
]


@pytest.mark.parametrize("line,code", BAD_LINES, ids=lambda v: repr(v)[:30])
def test_bad_input_gets_err_and_connection_still_works(server, clients, line, code):
    a, b, c = lobby(server, clients)
    a.send_raw(line + b"\n")
    err = a.recv_line()
    assert err.startswith(f"ERR {code} "), err
    assert len(err) > len(f"ERR {code} ")  # a human-readable text follows the code
    assert b.sync() == [] and c.sync() == []  # nothing relayed
    a.send("SEND after the error")
    assert b.recv_line() == c.recv_line() == f"MSG lobby {a.id} after the error"
    assert a.sync() == []


def test_lowercase_command_hint(server, clients):
    (a,) = lobby(server, clients, 1)
    a.send("send hi")
    assert a.recv_line() == "ERR unknown-command unknown command 'send' (commands are case-sensitive)"


def test_err_replies_never_echo_control_characters(server, clients):
    (a,) = lobby(server, clients, 1)
    for line in (b"FROB\x1b[2J", b"TELL \x1b[2Jx hi", b"TELL \xe2\x80\xaeevil hi"):
        a.send_raw(line + b"\n")
        err = a.recv_line()
        assert err.startswith("ERR ")
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", err), repr(err)


def test_line_over_max_line(start_server, clients):
    server = start_server("--max-line", "100")
    a, b = lobby(server, clients, 2)
    a.send_raw(b"SEND " + b"x" * 1000 + b"\n")
    assert a.recv_line().startswith("ERR line-too-long ")
    assert b.sync() == []
    exact = "SEND " + "y" * 95  # exactly 100 bytes: allowed
    a.send(exact)
    assert b.recv_line() == f"MSG lobby {a.id} " + "y" * 95
    a.send("SEND normal")
    assert b.recv_line() == f"MSG lobby {a.id} normal"
    assert a.sync() == []


def test_overlong_line_in_many_pieces(start_server, clients):
    server = start_server("--max-line", "100")
    a, b = lobby(server, clients, 2)
    for _ in range(20):
        a.send_raw(b"z" * 50)
    a.send_raw(b"\nSEND ok\n")
    assert a.recv_line().startswith("ERR line-too-long ")
    assert b.recv_line() == f"MSG lobby {a.id} ok"


def test_no_line_end_closes_the_connection(server, clients):
    a, b = lobby(server, clients, 2)
    a.send_raw(b"\x16\x03\x01" + b"\x00" * (64 * 1024 + 10))
    lines = a.expect_closed()
    assert lines[0].startswith("ERR no-line-end ")
    assert lines[-1] == "BYE no-line-end"
    assert b.recv_line() == f"PART lobby {a.id} no-line-end"


def test_crlf_line_endings(server, clients):
    a, b = lobby(server, clients, 2)
    a.send_raw(b"SEND over crlf\r\nNICK ann\r\nPING t\r\n")
    assert b.recv_line() == f"MSG lobby {a.id} over crlf"
    assert b.recv_line() == f"NICK {a.id} ann"
    assert a.recv_line() == f"NICK {a.id} ann"
    assert a.recv_line() == "PONG t"


def test_mid_line_disconnect_runs_nothing(server, clients):
    a, b = lobby(server, clients, 2)
    a.send_raw(b"SEND never finished")
    a.close()
    assert b.recv_line() == f"PART lobby {a.id} disconnected"
    server.wait_for(rf"{re.escape(a.id)} closed mid-line")
    assert b.sync() == []


# -- shutdown ------------------------------------------------------------------------------------

def test_sigterm_says_bye_to_everyone_and_exits_zero(server, clients):
    everyone = lobby(server, clients)
    everyone[0].send("JOIN dev")
    settle(*everyone)
    assert server.stop() == 0
    for c in everyone:
        assert c.expect_closed() == ["BYE server-shutdown"]


# -- a reader that stops reading -----------------------------------------------------------------

#: Receivers in the slow-consumer test, and messages the sender sends.
RECEIVERS = 20
MESSAGES = 2000
#: The server's outbox limit in that test.
OUTBOX_LIMIT = 65536


def kernel_send_buffer_max():
    """The most a socket's send buffer can autotune to (tcp_wmem's maximum), 4 MiB if unknown."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


#: Padding per message: the stalled socket's kernel buffers take up to tcp_wmem's maximum before
#: its outbox grows at all, so the 2,000 messages together must carry more than that plus the
#: outbox limit for the drop to be certain (on loopback the buffer does grow to megabytes).
PAD = "p" * ((kernel_send_buffer_max() + 2 * OUTBOX_LIMIT) // MESSAGES)


def receive_all(client, results, index, deadline):
    """Collect the sequence numbers of MSG lines until all arrived; other lines are noted."""
    framer = LineFramer(max_line=len(PAD) + 100)
    seqs, others = [], []
    try:
        client.sock.settimeout(0.5)
        while len(seqs) < MESSAGES and time.monotonic() < deadline:
            try:
                data = client.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                others.append("EOF")
                break
            for line in framer.feed(data):
                text = line.decode() if isinstance(line, bytes) else repr(line)
                if text.startswith("MSG "):
                    seqs.append(int(text.split(" ", 4)[3]))
                else:
                    others.append(text)
    except (OSError, ValueError) as err:
        others.append(f"error: {err!r}")
    results[index] = (seqs, others)


def run_slow_consumer(start_server, clients, send):
    """A stalled reader and RECEIVERS readers; ``send(sender)`` sends MESSAGES numbered SENDs.

    Returns what the sender read after sending. Fails unless the stalled reader is dropped as a
    slow consumer and every receiver gets every message in order (plus the stalled one's PART).
    """
    server = start_server("--flood-rate", "0", "--outbox-limit", OUTBOX_LIMIT)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(WAIT)
    try:
        stalled.connect((server.host, server.port))
        stalled_id = f"127.0.0.1:{stalled.getsockname()[1]}"
        server.wait_for(rf"established with {re.escape(stalled_id)}$")
        sender = clients(server)
        receivers = [clients(server) for _ in range(RECEIVERS)]
        settle(sender, *receivers)

        results = [None] * RECEIVERS
        deadline = time.monotonic() + 30
        threads = [threading.Thread(target=receive_all, args=(r, results, i, deadline), daemon=True)
                   for i, r in enumerate(receivers)]
        for t in threads:
            t.start()
        sender_saw = send(sender)
        for t in threads:
            t.join(max(0.01, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads)

        server.wait_for(rf"Dropped {re.escape(stalled_id)}: slow-consumer")
        for seqs, others in results:
            assert seqs == list(range(MESSAGES)), others[:5]
            assert others == [f"PART lobby {stalled_id} slow-consumer"]
        assert server.count(r"Dropped ") == 1  # nobody else
        assert sender_saw + sender.sync() == [f"PART lobby {stalled_id} slow-consumer"]
    finally:
        stalled.close()


def frames(seqs):
    return b"".join(f"SEND {seq} {PAD}\n".encode() for seq in seqs)


#: Lines the paced sender sends before waiting for the server to have read them: few enough
#: that what one batch fans out stays well under the outbox limit.
BATCH = OUTBOX_LIMIT // 4 // (len(PAD) + 40)


def test_slow_consumer_is_dropped_while_others_get_everything(start_server, clients):
    def paced(sender):
        # Each batch is followed by a PING: without NODELAY, Nagle would hold that PING back
        # until the server's delayed ACK of the batch (40 ms a round).
        sender.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        saw = []
        for start in range(0, MESSAGES, BATCH):
            sender.send_raw(frames(range(start, min(start + BATCH, MESSAGES))))
            saw += sender.sync()
        return saw

    run_slow_consumer(start_server, clients, paced)


def test_one_burst_does_not_evict_readers_that_keep_up(start_server, clients):
    """All 2,000 lines at once: one read of them fans out more than the outbox limit in one go."""
    def burst(sender):
        sender.send_raw(frames(range(MESSAGES)))
        return []

    run_slow_consumer(start_server, clients, burst)


# -- one read of many lines: messages batched into one fan-out, order and errors kept ------------

def test_one_read_of_many_lines_keeps_order_and_refuses_bad_ones_in_place(server, clients):
    a, b = lobby(server, clients, 2)
    a.send_raw(b"SEND one\nSEND tw\xc3\xa9\nSEND \x1b[31mred\nSEND \nPING mid\nSEND three\n"
               b"SEND \xff\nSEND four\n")
    assert a.recv_line() == "ERR bad-text text must not contain control characters or escape sequences"
    assert a.recv_line() == "ERR missing-argument usage: SEND <text>"
    assert a.recv_line() == "PONG mid"
    assert a.recv_line() == "ERR invalid-utf8 line is not valid UTF-8"
    assert a.sync() == []
    for text in ("one", "twé", "three", "four"):
        assert b.recv_line() == f"MSG lobby {a.id} {text}"
    assert b.sync() == []

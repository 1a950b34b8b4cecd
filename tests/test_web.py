"""The web listener end to end: a real ``bin/chat-server --web-port 0`` and raw WebSocket clients.

The clients are :class:`wsclient.WsClient` (wsproto over a plain socket), so every frame the
server sends is read as it is, and ``send_raw`` sends frames no polite client library would.
"""

import socket

import pytest
from wsproto.events import Pong

from conftest import WAIT, LineClient
from wsclient import (NATIVE, Refused, WsClient, client_frame, http_exchange, http_request)


def web_server(start_server, *args):
    server = start_server("--web-port", "0", *args)
    server.web_port = int(server.wait_for(r"Web listening on 127\.0\.0\.1:(\d+)").group(1))
    return server


@pytest.fixture
def web(start_server):
    return web_server(start_server)


@pytest.fixture
def ws_clients():
    made = []

    def connect(server, **kw):
        c = WsClient(server.web_port, **kw)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


# -- HTTP and the handshake --------------------------------------------------------------------------


def test_the_page_and_its_files_are_served(web):
    status, headers, body = http_exchange(web.web_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b'<script src="/app.js"' in body
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, _ = http_exchange(web.web_port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (status, headers["content-type"].split(";")[0]) == (200, kind)
    assert http_exchange(web.web_port, b"GET /../settings.py HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404


def test_junk_and_huge_request_heads_are_refused(web):
    assert http_exchange(web.web_port, b"\x16\x03\x01 not http\r\n\r\n")[0] == 400
    status, _, _ = http_exchange(web.web_port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
    assert status in (400, 431)  # h11 says which


def test_a_request_head_that_never_ends_is_cut_off(start_server):
    server = web_server(start_server, "--ping-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.web_port), WAIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
        assert sock.recv(100) == b""
    server.wait_for(r"Connection closed with 127\.0\.0\.1:\d+ \(request-timeout\)")


def test_handshake_agrees_on_the_native_subprotocol(web, ws_clients):
    c = ws_clients(web)
    assert c.subprotocol == NATIVE
    assert c.id.startswith("127.0.0.1:")


def test_handshake_with_a_bad_key_is_refused(web):
    status, _, body = http_exchange(web.web_port, http_request(web.web_port, Sec_WebSocket_Key="c2hvcnQ="))
    assert (status, body) == (400, b"bad Sec-WebSocket-Key\n")
    status, _, _ = http_exchange(web.web_port, http_request(web.web_port, Sec_WebSocket_Key=None))
    assert status == 400


def test_handshake_without_upgrade_is_refused(web):
    status, headers, _ = http_exchange(web.web_port, http_request(web.web_port, Upgrade=None))
    assert status == 426
    assert headers["upgrade"] == "websocket"
    status, _, _ = http_exchange(web.web_port, http_request(web.web_port, Connection="keep-alive"))
    assert status == 426


def test_handshake_of_another_version_is_refused(web):
    status, headers, _ = http_exchange(web.web_port, http_request(web.web_port, Sec_WebSocket_Version="8"))
    assert (status, headers["sec-websocket-version"]) == (426, "13")


def test_handshake_from_another_origin_is_refused(web):
    with pytest.raises(Refused) as refused:
        WsClient(web.web_port, origin="http://evil.example:8080")
    assert refused.value.status == 403
    # The listener's own origin, by address or as localhost, is let in.
    WsClient(web.web_port, origin=f"http://127.0.0.1:{web.web_port}").close()
    WsClient(web.web_port, origin=f"http://localhost:{web.web_port}").close()
    with pytest.raises(Refused):
        WsClient(web.web_port, origin=f"http://127.0.0.1:{web.web_port + 1}")


def test_web_origin_lists_the_allowed_origins(start_server):
    server = web_server(start_server, "--web-origin", "https://chat.example.org, http://a.test:81")
    WsClient(server.web_port, origin="https://chat.example.org").close()
    WsClient(server.web_port, origin="http://a.test:81").close()
    with pytest.raises(Refused):
        WsClient(server.web_port, origin=f"http://127.0.0.1:{server.web_port}")


def test_web_origin_star_allows_any(start_server):
    server = web_server(start_server, "--web-origin", "*")
    WsClient(server.web_port, origin="http://anywhere.example").close()


def test_handshake_offering_only_unknown_subprotocols_is_refused(web):
    with pytest.raises(Refused) as refused:
        WsClient(web.web_port, subprotocols=("mqtt",))
    assert refused.value.status == 400


def test_a_full_server_answers_503(start_server, ws_clients):
    server = web_server(start_server, "--max-clients", "1")
    ws_clients(server)
    status, _, body = http_exchange(server.web_port, http_request(server.web_port))
    assert (status, body) == (503, b"server-full\n")


# -- chat across listeners ------------------------------------------------------------------------


def test_web_and_tcp_clients_chat_both_ways(web, ws_clients, clients):
    w = ws_clients(web)
    t = clients(web)
    w.expect(f"JOIN lobby {t.id}")
    w.send("NICK ann")
    t.expect(f"NICK {w.id} ann")
    w.send("SEND <script>alert(1)</script> & <b>hi</b>")
    assert t.expect("MSG ") == "MSG lobby ann <script>alert(1)</script> & <b>hi</b>"
    t.send("SEND back at you")
    assert w.expect("MSG ") == f"MSG lobby {t.id} back at you"
    t.send("TELL ann psst")
    assert w.expect("TELL ") == f"TELL {t.id} psst"
    w.send("WHO")
    assert w.expect("WHO ") == f"WHO lobby ann {t.id}"


def test_every_line_is_one_text_frame(web, ws_clients):
    w = ws_clients(web)
    w.send("bogus")
    assert w.recv_line() == "ERR unknown-command unknown command 'bogus'"
    w.send("PING 7")
    assert w.recv_line() == "PONG 7"


def test_native_line_limit_applies_and_the_connection_stays(start_server, ws_clients):
    server = web_server(start_server, "--max-line", "100")
    w = ws_clients(server)
    w.send("SEND " + "x" * 200)
    assert w.recv_line() == "ERR line-too-long line over 100 bytes was discarded"
    assert w.sync() == []


# -- frames -----------------------------------------------------------------------------------------


def test_fragmented_message_is_joined(web, ws_clients):
    w, other = ws_clients(web), ws_clients(web)
    w.expect(f"JOIN lobby {other.id}")
    w.send_raw(client_frame(0x1, b"SEND one ", fin=False) + client_frame(0x0, b"two ", fin=False))
    w.send_raw(client_frame(0x9, b"mid"))  # a control frame may come between fragments
    w.send_raw(client_frame(0x0, "three \N{SNOWMAN}".encode(), fin=True))
    assert other.expect("MSG ") == f"MSG lobby {w.id} one two three \N{SNOWMAN}"
    assert w.recv_event() == Pong(payload=b"mid")


def test_ping_is_answered_with_its_payload(web, ws_clients):
    w = ws_clients(web)
    w.ping(b"hello?")
    assert w.recv_event() == Pong(payload=b"hello?")


def test_unmasked_frame_closes_the_connection(web, ws_clients, clients):
    t = clients(web)
    w = ws_clients(web)
    t.expect(f"JOIN lobby {w.id}")
    w.send_raw(client_frame(0x1, b"SEND hi", mask=False))
    code, _, lines = w.expect_close()
    assert (code, lines) == (1002, ["BYE protocol-error"])
    assert t.expect("PART ") == f"PART lobby {w.id} protocol-error"


def test_oversized_message_closes_with_1009(start_server, ws_clients):
    server = web_server(start_server, "--web-max-message", "1024")
    w = ws_clients(server)
    w.send("SEND " + "x" * 1000)  # under the limit: goes through (the native line limit is 4096)
    assert w.sync() == []
    # Over it in fragments: closed at the fragment that crosses the limit.
    w.send_raw(client_frame(0x1, b"SEND " + b"y" * 600, fin=False))
    w.send_raw(client_frame(0x0, b"y" * 600, fin=False))
    code, reason, lines = w.expect_close()
    assert (code, reason, lines) == (1009, "message-too-big", ["BYE message-too-big"])


def test_invalid_utf8_text_frame_closes_with_1007(web, ws_clients):
    w = ws_clients(web)
    w.send_raw(client_frame(0x1, b"SEND caf\xe9"))
    code, _, lines = w.expect_close()
    assert (code, lines) == (1007, ["BYE invalid-utf8"])


def test_close_handshake_from_the_client(web, ws_clients, clients):
    t = clients(web)
    w = ws_clients(web)
    t.expect(f"JOIN lobby {w.id}")
    w.close_handshake(1000)
    code, _, lines = w.expect_close()
    assert (code, lines) == (1000, [])
    w.expect_eof()
    assert t.expect("PART ") == f"PART lobby {w.id} disconnected"


def test_quit_says_bye_then_closes_with_1000(web, ws_clients):
    w = ws_clients(web)
    w.send("QUIT done")
    assert w.expect_close() == (1000, "quit", ["BYE quit"])
    w.expect_eof()


def test_shutdown_sends_bye_and_close_1001(web, ws_clients):
    w = ws_clients(web)
    web.signal(15)
    assert w.expect_close() == (1001, "server-shutdown", ["BYE server-shutdown"])
    assert web.proc.wait(WAIT) == 0


def test_unanswered_ping_times_out_with_1008(start_server, ws_clients):
    server = web_server(start_server, "--idle-timeout", "0.2", "--ping-timeout", "0.3")
    w = ws_clients(server)
    assert w.recv_line().startswith("PING ")
    assert w.expect_close() == (1008, "ping-timeout", ["BYE ping-timeout"])


def test_flood_is_limited_as_on_tcp(start_server, ws_clients):
    server = web_server(start_server, "--flood-rate", "1", "--flood-burst", "2")
    w = ws_clients(server)
    for i in range(3):
        w.send(f"PING {i}")
    assert w.recv_line() == "PONG 0"
    assert w.recv_line() == "PONG 1"
    assert w.recv_line() == "ERR rate-limited over 1 lines/s; line dropped"


def test_client_that_stops_reading_is_evicted_and_others_are_unaffected(start_server, ws_clients):
    server = web_server(start_server, "--flood-rate", "0", "--outbox-limit", "65536",
                        "--outbox-soft-limit", "0")
    stuck = ws_clients(server, rcvbuf=4096)
    reader = ws_clients(server)
    sender = ws_clients(server)
    reader.expect(f"JOIN lobby {sender.id}")
    text = "z" * 1000
    count = 1000  # 1 MB: far over what the stuck client's buffers and outbox hold
    for _ in range(count // 100):  # a hundred frames a write
        sender.send_raw(b"".join(client_frame(0x1, f"SEND {text}".encode()) for _ in range(100)))
    got = 0
    while got < count:
        line = reader.recv_line()
        if line.startswith("MSG "):
            assert line == f"MSG lobby {sender.id} {text}"
            got += 1
        else:
            assert line == f"PART lobby {stuck.id} slow-consumer"
    server.wait_for(rf"Dropped {stuck.id}: slow-consumer")
    sender.send("SEND still here")
    assert reader.expect("MSG ", skip=("PART ",)) == f"MSG lobby {sender.id} still here"


def test_per_ip_limit_counts_web_connections(start_server, ws_clients):
    server = web_server(start_server, "--max-per-ip", "1")
    ws_clients(server)
    status, _, body = http_exchange(server.web_port, http_request(server.web_port))
    assert (status, body) == (503, b"too-many-connections\n")


# -- IRC over WebSocket -------------------------------------------------------------------------------


def irc_register(c, nick):
    c.send(f"NICK {nick}")
    c.send(f"USER {nick} 0 * :{nick}")
    while True:
        line = c.recv_line()
        if " 001 " in line:
            return line
        if " 376 " in line or " 422 " in line:
            return line


@pytest.mark.parametrize("proto,binary", [("text.ircv3.net", False), ("binary.ircv3.net", True)])
def test_irc_over_websocket_talks_to_irc_over_tcp(start_server, ws_clients, proto, binary):
    server = web_server(start_server, "--irc-port", "0")
    irc_port = int(server.wait_for(r"IRC listening on 127\.0\.0\.1:(\d+)").group(1))
    w = ws_clients(server, subprotocols=(proto,), hello=False, binary=binary)
    assert w.subprotocol == proto
    assert " 001 web " in irc_register(w, "web")
    t = LineClient(irc_port, hello=False)
    try:
        t.send("NICK tcp")
        t.send("USER tcp 0 * :tcp")
        t.expect(":", skip=())
        w.send("PRIVMSG tcp :hello over websocket")
        while True:
            line = t.recv_line().rstrip("\r")
            if " PRIVMSG " in line:
                break
        assert line.startswith(":web!") and line.endswith(" PRIVMSG tcp :hello over websocket")
        t.send("PRIVMSG web :and back")
        while True:
            line = w.recv_line()
            if " PRIVMSG " in line:
                break
        assert line.startswith(":tcp!") and line.endswith(" PRIVMSG web :and back")
        assert "\r" not in line and "\n" not in line  # one message per frame, no line end
    finally:
        t.close()


def test_irc_subprotocol_offered_first_wins(start_server, ws_clients):
    server = web_server(start_server)
    w = ws_clients(server, subprotocols=("binary.ircv3.net", "text.ircv3.net"), hello=False)
    assert w.subprotocol == "binary.ircv3.net"


def test_irc_register_over_websocket_is_answered_in_frames(start_server, ws_clients):
    server = web_server(start_server, "--irc-port", "0")
    w = ws_clients(server, subprotocols=("text.ircv3.net",), hello=False)
    w.send("REGISTER * * no-nick-yet")  # before NICK: a FAIL, one frame
    assert w.recv_line() == (":chatroom.local FAIL REGISTER NEED_NICK * "
                             ":Send NICK first: the account name is your nickname")
    w.send("NICK webreg")
    w.send("REGISTER * * webreg's password")
    assert w.recv_line() == ":chatroom.local REGISTER SUCCESS webreg :Account created"
    assert w.recv_line().startswith(":chatroom.local 900 * ")


def test_irc_quit_over_websocket_closes_with_1000(start_server, ws_clients):
    server = web_server(start_server)
    w = ws_clients(server, subprotocols=("text.ircv3.net",), hello=False)
    irc_register(w, "leaver")
    w.send("QUIT :bye")
    code, reason, lines = w.expect_close()
    assert (code, reason) == (1000, "quit")
    assert lines[-1].startswith("ERROR :Closing link: 127.0.0.1 (Quit: bye)")

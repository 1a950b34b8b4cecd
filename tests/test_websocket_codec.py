"""The WebSocket codec without sockets: server frames, the handshake rules, client frames in."""

import struct

import pytest

from chatroom.codec import websocket as ws
from wsclient import client_frame


def request(**headers):
    h = {"host": "127.0.0.1:8080", "upgrade": "websocket", "connection": "keep-alive, Upgrade",
         "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"}
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            h.pop(name, None)
        else:
            h[name] = value
    return ws.Request("GET", "/ws", h)


def test_accept_token_is_rfc_6455s_example():
    assert ws.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size,header", [
    (0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
])
def test_server_frame_lengths(size, header):
    data = ws.frame(ws.TEXT, b"x" * size)
    assert data == header + b"x" * size


def test_line_framer_drops_line_ends_and_frames_each_line():
    text = ws.line_framer(ws.TEXT)
    assert text(b"MSG lobby a hi\n") == b"\x81\x0eMSG lobby a hi"
    assert text(b":s 001 a :hi\r\n") == b"\x81\x0c:s 001 a :hi"
    assert text(b"A\r\nBC\r\n") == b"\x81\x01A\x81\x02BC"
    assert ws.line_framer(ws.BINARY)(b"X\n") == b"\x82\x01X"


def test_close_frame_carries_code_and_a_cut_reason():
    assert ws.close_frame(1000, "quit") == b"\x88\x06\x03\xe8quit"
    assert len(ws.close_frame(1008, "r" * 300)) == 2 + 125


def test_a_good_handshake_is_accepted_with_the_first_offered_subprotocol():
    up = ws.check_upgrade(request(sec_websocket_protocol="mqtt, text.ircv3.net, chatroom.v1"), None)
    assert isinstance(up, ws.Upgrade) and up.subprotocol == "text.ircv3.net"
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in up.response
    assert b"Sec-WebSocket-Protocol: text.ircv3.net\r\n" in up.response
    plain = ws.check_upgrade(request(), None)
    assert plain.subprotocol == ws.NATIVE and b"Sec-WebSocket-Protocol" not in plain.response


@pytest.mark.parametrize("headers,status", [
    ({"upgrade": None}, 426), ({"connection": "close"}, 426), ({"sec_websocket_version": "12"}, 426),
    ({"sec_websocket_key": None}, 400), ({"sec_websocket_key": "not base64!"}, 400),
    ({"sec_websocket_key": "c2hvcnQ="}, 400), ({"sec_websocket_protocol": "mqtt"}, 400),
    ({"origin": "http://evil.example"}, 403),
])
def test_bad_handshakes_are_refused(headers, status):
    result = ws.check_upgrade(request(**headers), ws.own_origins("127.0.0.1", 8080))
    assert isinstance(result, ws.Refused)
    assert result.response.startswith(f"HTTP/1.1 {status} ".encode())


def test_own_origins_on_loopback():
    own = ws.own_origins("127.0.0.1", 8080)
    assert {"http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"} <= own
    assert "http://127.0.0.1:8081" not in own


def test_http_reader_takes_a_request_in_pieces_and_keeps_what_follows():
    r = ws.HttpReader()
    assert r.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n") is None
    req = r.feed(b"X-a: 2\r\n\r\n\x81")
    assert (req.method, req.target, req.headers["x-a"]) == ("GET", "/ws", "1, 2")
    assert r.trailing_data == b"\x81"


def test_http_reader_refuses_junk():
    assert isinstance(ws.HttpReader().feed(b"\x16\x03\x01 tls hello\r\n\r\n"), ws.BadRequest)


def test_frame_reader_joins_fragments_and_answers_pings():
    r = ws.FrameReader(100)
    out = r.feed(client_frame(0x1, b"ab", fin=False) + client_frame(0x9, b"p")
                 + client_frame(0x0, b"cd"))
    assert out[0] == ws.Reply(b"\x8a\x01p")
    assert out[1] == b"abcd"
    assert r.feed(client_frame(0x2, b"\xff\x00")) == [b"\xff\x00"]


def test_frame_reader_closes_at_the_byte_over_the_limit():
    r = ws.FrameReader(10)
    assert r.feed(client_frame(0x1, b"x" * 10)) == [b"x" * 10]
    out = r.feed(client_frame(0x1, b"x" * 6, fin=False) + client_frame(0x0, b"x" * 5))
    assert out == [ws.Close(1009, "message-too-big", ws.close_frame(1009, "message over 10 bytes"))]
    assert r.feed(b"more") == []


def test_frame_reader_refuses_unmasked_frames():
    [close] = ws.FrameReader(100).feed(client_frame(0x1, b"hi", mask=False))
    assert (close.code, close.reason) == (1002, "protocol-error")


def test_frame_reader_answers_a_close():
    [close] = ws.FrameReader(100).feed(client_frame(0x8, struct.pack("!H", 1001)))
    assert (close.code, close.reason, close.data) == (1001, None, b"\x88\x02\x03\xe8")


def test_every_encoder_event_is_framed_for_websocket():
    """An event method added to an encoder and not to transport.web.EVENTS would reach
    WebSocket clients unframed."""
    from chatroom.codec import irc_events, native
    from chatroom.transport.web import EVENTS, NATIVE_ENCODER, irc_encoder_for

    for cls in (native.Encoder, irc_events.Encoder):
        events = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
        assert events <= set(EVENTS), events - set(EVENTS)
    assert NATIVE_ENCODER.wrap(b"PONG\n") == b"\x81\x04PONG"
    assert irc_encoder_for({"server-time"}, True) is irc_encoder_for({"server-time", "cap-notify"}, True)
    assert irc_encoder_for((), True).wrap(b"PING x\r\n") == b"\x82\x06PING x"


class _WsprotoOnly(ws.FrameReader):
    """The reader as it was before its fast path: every byte through wsproto (the reference)."""

    def feed(self, data):
        if self.closed:
            return []
        out = []
        self._wsproto(data, out)
        return out


def _stream(rng):
    """Client frames of every kind, mostly well formed, as one byte string."""
    frames = []
    for _ in range(rng.randrange(1, 12)):
        kind = rng.randrange(12)
        if kind < 4:
            text = "".join(rng.choice("ab é€😀\\:") for _ in range(rng.choice((0, 1, 5, 125, 126, 300))))
            frames.append(client_frame(0x1, text.encode()))
        elif kind == 4:
            frames.append(client_frame(0x2, bytes(rng.randrange(256) for _ in range(rng.choice((1, 70, 200))))))
        elif kind == 5:  # a fragmented message with a ping inside
            frames += [client_frame(0x1, b"fr", fin=False), client_frame(0x9, b"p"),
                       client_frame(0x0, "ag€".encode(), fin=False), client_frame(0x0, b"ment")]
        elif kind == 6:
            frames.append(client_frame(0x9, b"ping!"))
        elif kind == 7:
            frames.append(client_frame(0xA, b"pong"))
        elif kind == 8:
            frames.append(client_frame(0x1, b"caf\xc3\x28"))  # not UTF-8: 1007
        elif kind == 9:
            frames.append(client_frame(0x1, b"bare", mask=False))  # unmasked: 1002
        elif kind == 10:
            frames.append(client_frame(0x3, b"x"))  # a reserved opcode: 1002
        else:
            frames.append(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    return b"".join(frames)


def test_frame_reader_fast_path_answers_as_wsproto_alone_split_anywhere():
    import random

    rng = random.Random(12)
    for _ in range(300):
        data = _stream(rng)
        expected = _WsprotoOnly(1000).feed(data)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 6))))
        reader, got, last = ws.FrameReader(1000), [], 0
        for cut in cuts + [len(data)]:
            got += reader.feed(data[last:cut])
            last = cut
        assert got == expected, data
        byte_by_byte = ws.FrameReader(1000)
        assert [e for i in range(len(data)) for e in byte_by_byte.feed(data[i:i + 1])] == expected


def test_frame_reader_refuses_oversized_frames_from_their_header():
    r = ws.FrameReader(100)
    header_only = client_frame(0x1, b"x" * 1000)[:8]  # the rest never needs to come
    assert r.feed(header_only) == [ws.Close(1009, "message-too-big",
                                            ws.close_frame(1009, "message over 100 bytes"))]
    r = ws.FrameReader(100)
    [close] = r.feed(client_frame(0x9, b"p" * 126)[:8])  # a control frame over 125 bytes
    assert (close.code, close.reason) == (1002, "protocol-error")

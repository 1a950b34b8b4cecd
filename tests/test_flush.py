"""The transport's flush, in process: a ChatServer with real TCP connections on 127.0.0.1, each
client's sends recorded as they go to its socket.

A fan-out to a room bigger than one flush slice goes out in slices; the loop polls (and reads)
between them, and a line read meanwhile joins the outboxes not yet sent, so their one send
carries both lines. Everyone still gets both, in order.
"""

import gevent
import pytest
from gevent import socket

from chatroom.transport import server as transport
from chatroom.transport.native import NativeClient

#: Seconds a test waits for the server's loop to finish what it was given.
WAIT = 10.0


class Recorder:
    """Stands in for a client's ``out``: notes every send, then makes it on the real socket."""

    def __init__(self, out):
        self.out = out
        self.sends = []

    def send(self, data):
        sent = self.out.send(data)
        self.sends.append(bytes(data[:sent]))
        return sent


def settled(server):
    """Wait (bounded) until nothing is queued, scheduled or being written to any client."""
    with gevent.Timeout(WAIT):
        while (server._flush_scheduled or server.registry.ready
               or any(c.outbox or c.writer is not None for c in server.clients)):
            gevent.sleep(0.001)


def sync(peer):
    """Round trip a PING on a blocking ``peer``: all the server sent it before has arrived after.

    Not just reading what is there: a peer that was sent hundreds of small lines unread has a
    full receive buffer, and the rest waits in the server's kernel until it reads.
    """
    peer.sendall(b"PING sync\n")
    data = b""
    with gevent.Timeout(WAIT):
        while not data.endswith(b"PONG sync\n"):
            chunk = peer.recv(1 << 16)
            assert chunk, "the server closed the connection"
            data += chunk


def read_all(sock):
    """Everything the peer has received so far (the socket is non-blocking)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@pytest.fixture
def room():
    """A server whose lobby holds FLUSH_SLICE + 20 clients: (server, clients, their peers)."""
    server = transport.ChatServer(flood_rate=0, max_per_ip=0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    clients, peers = [], []
    try:
        for _ in range(transport.FLUSH_SLICE + 20):
            peer = socket.create_connection(listener.getsockname())
            sock, address = listener.accept()
            assert server.accept(sock, address, NativeClient)
            clients.append(list(server.clients)[-1])
            peers.append(peer)
        settled(server)
        for peer in peers:
            sync(peer)  # past the greetings and the others' JOINs
            peer.setblocking(False)
        yield server, clients, peers
    finally:
        for peer in peers:
            peer.close()
        for client in list(server.clients):
            server._discard(client)
        listener.close()


def test_a_line_read_between_slices_goes_out_with_the_line_being_sent(room):
    server, clients, peers = room
    sender, members = clients[0], clients[1:]
    for client in members:
        client.out = Recorder(client.out)
    # The second line waits in the sender's socket: the loop finds it only when it next polls,
    # which is after the first slice of the first line's fan-out.
    peers[0].sendall(b"SEND two\n")
    server.registry.say(sender, "one")
    settled(server)

    one = f"MSG lobby {sender.id} one\n".encode()
    two = f"MSG lobby {sender.id} two\n".encode()
    first, rest = members[:transport.FLUSH_SLICE], members[transport.FLUSH_SLICE:]
    assert [c.out.sends for c in first] == [[one, two]] * len(first)
    assert [c.out.sends for c in rest] == [[one + two]] * len(rest)  # one send, both lines
    assert [read_all(peer) for peer in peers[1:]] == [one + two] * len(members)


def test_a_small_room_is_sent_in_one_turn(room):
    server, clients, peers = room
    for client in clients[transport.FLUSH_SLICE // 2:]:
        server._discard(client)  # closed sockets: the flush skips them
        server.registry.remove(client, announce=False)
    sender, members = clients[0], clients[1:transport.FLUSH_SLICE // 2]
    for client in members:
        client.out = Recorder(client.out)
    server.registry.say(sender, "one")
    assert server._flush_scheduled
    server._flush()
    assert not server._flush_scheduled and not server.registry.ready
    assert all(c.out.sends == [f"MSG lobby {sender.id} one\n".encode()] for c in members)


def test_plain_sockets_are_sent_on_directly(room):
    """``client.out`` is the socket under gevent's wrapper for plain TCP, with the C ``send``:
    a gevent that renamed ``_sock`` would quietly fall back to the slower wrapper; this says so.
    (TLS clients send through the wrapper: tests/test_tls.py covers them end to end.)"""
    import _socket

    _, clients, _ = room
    out = clients[0].out
    assert isinstance(out, _socket.socket) and type(out).send is _socket.socket.send
    assert out.fileno() == clients[0].sock.fileno()
    assert out.gettimeout() == 0.0  # never blocks the loop


def test_one_client_that_fails_does_not_strand_the_rest(room, caplog):
    """An unexpected error sending to one client is logged; everyone after it still gets the line."""

    class Broken:
        def send(self, data):
            raise RuntimeError("not a socket error")

    server, clients, peers = room
    sender, members = clients[0], clients[1:]
    members[3].out = Broken()
    server.registry.say(sender, "one")
    with gevent.Timeout(WAIT):
        while server._flush_scheduled or server.registry.ready:
            gevent.sleep(0.001)
    line = f"MSG lobby {sender.id} one\n".encode()
    got = [read_all(peer) for peer in peers[1:]]
    assert got[:3] == [line] * 3 and got[3] == b"" and got[4:] == [line] * (len(members) - 4)
    assert f"flush to {members[3].id} failed" in caplog.text

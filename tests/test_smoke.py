"""Smoke test: the server starts, relays a message, and stops on SIGTERM."""

from conftest import LineClient


def test_send_reaches_the_other_client(server, clients):
    a, b = clients(server), clients(server)
    a.send("SEND hello")
    assert b.expect("MSG ") == f"MSG lobby {a.id} hello"
    assert server.stop() == 0
    assert isinstance(a, LineClient)

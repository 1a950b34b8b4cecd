"""``--metrics-port``: Prometheus text over HTTP whose values follow what clients do.

The counters are plain integers on the server, bumped per read, send or connection event; the
collector builds the families at scrape time. Scraped here over real HTTP from a real server.
"""

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatroom.codec import native
from conftest import WAIT, wait_until


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@pytest.fixture
def metered(start_server):
    server = start_server("--metrics-port", 0, "--flood-rate", 0, "--max-clients", 3,
                          "--outbox-limit", 64 * 1024, "--outbox-soft-limit", 0, "--send-timeout", 1)
    server.metrics_port = int(server.wait_for(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    return server


def test_metrics_follow_connects_chat_evictions_and_refusals(metered, clients):
    port = metered.metrics_port
    s = scrape(port)
    assert value(s, "chatroom_connections", listener="native") == 0
    assert value(s, "chatroom_connects_total", listener="native") == 0
    assert value(s, "process_resident_memory_bytes") > 0

    a, b = clients(metered), clients(metered)
    s = scrape(port)
    assert value(s, "chatroom_connections", listener="native") == 2
    assert value(s, "chatroom_connects_total", listener="native") == 2
    assert (value(s, "chatroom_members"), value(s, "chatroom_rooms")) == (2, 1)

    before = s
    a.send("SEND hello")
    assert b.expect("MSG ") == f"MSG lobby {a.id} hello"
    a.sync()
    s = scrape(port)
    assert value(s, "chatroom_lines_received_total") - value(before, "chatroom_lines_received_total") == 2
    assert value(s, "chatroom_messages_delivered_total") - value(before, "chatroom_messages_delivered_total") >= 2
    assert value(s, "chatroom_received_bytes_total") - value(before, "chatroom_received_bytes_total") == \
        len(b"SEND hello\nPING sync\n")
    assert value(s, "chatroom_sent_bytes_total") > value(before, "chatroom_sent_bytes_total")

    b.close()
    wait_until(lambda: value(scrape(port), "chatroom_disconnects_total", reason="disconnected") == 1)
    assert value(scrape(port), "chatroom_connections", listener="native") == 1

    # A client that never reads (small receive buffer and segments, as tests/test_faults.py's)
    # is evicted; the sender sees it leave.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    stuck.connect(("127.0.0.1", metered.port))
    m = metered.wait_for(r"Connection has been established with (\S+)", start=len(metered.lines) - 1)
    a.expect(f"JOIN lobby {m.group(1)}")
    a.send_raw(b"".join(native.format_command("SEND", f"{i} " + "y" * 1000) for i in range(400)))
    part = a.expect(f"PART lobby {m.group(1)}", timeout=WAIT)
    reason = part.split()[-1]
    assert reason in ("slow-consumer", "send-timeout")
    s = scrape(port)
    assert value(s, "chatroom_evictions_total", reason=reason) == 1
    assert value(s, "chatroom_disconnects_total", reason=reason) == 1
    assert value(s, "chatroom_connects_total", listener="native") == 3
    stuck.close()
    a.sync()
    assert value(scrape(port), "chatroom_lines_received_total") == 2 + 400 + 1

    # --max-clients 3: with a and two more, the next is refused.
    clients(metered), clients(metered)
    refused = clients(metered, hello=False)
    assert refused.expect_closed() == ["BYE server-full"]
    s = scrape(port)
    assert value(s, "chatroom_refusals_total", reason="server-full") == 1
    assert value(s, "chatroom_connections", listener="native") == 3
    assert value(s, "chatroom_outbox_bytes") >= 0

    # A QUIT's text is the client's: it is not part of the reason label (one series, not one each).
    a.send("QUIT see you")
    a.expect_closed()
    wait_until(lambda: value(scrape(port), "chatroom_disconnects_total", reason="quit") == 1)
    assert not any(name == "chatroom_disconnects_total" and "see you" in str(labels)
                   for name, labels in scrape(port))


def test_metrics_answer_only_at_metrics(metered):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{metered.metrics_port}/other", timeout=WAIT)
    assert err.value.code == 404


def test_cluster_link_state_is_a_gauge():
    """Without Redis at hand: the collector reports a cluster registry's link as up (1) or down (0)."""
    from chatroom.core.registry import Registry
    from chatroom.metrics import ServerCollector
    from chatroom.transport.server import ChatServer

    registry = Registry()
    registry.link = type("Link", (), {"up": True})()
    server = ChatServer(registry=registry)
    families = {f.name: f for f in ServerCollector(server).collect()}
    assert families["chatroom_cluster_up"].samples[0].value == 1
    registry.link.up = False
    families = {f.name: f for f in ServerCollector(server).collect()}
    assert families["chatroom_cluster_up"].samples[0].value == 0
    assert "chatroom_cluster_up" not in {f.name for f in ServerCollector(ChatServer()).collect()}

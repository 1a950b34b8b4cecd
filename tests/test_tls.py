"""TLS listeners: chat over TLS on both protocols, certificate checks in the client, SIGHUP reload,
and clients that never finish (or never start) a handshake dropped without holding anyone up.

Certificates come from ``trustme`` (a throwaway CA per test). Every wait is on a line or a closed
connection with a deadline, never a sleep.
"""

import re
import signal
import socket
import ssl
import sys
import time

import pytest

trustme = pytest.importorskip("trustme")

from conftest import WAIT, LineClient, wait_until  # noqa: E402
from test_client import ClientProcess  # noqa: E402


@pytest.fixture
def pki(tmp_path):
    """A CA and a certificate for 127.0.0.1 and localhost, as files; ``pki.client()`` trusts the CA."""
    return Pki(tmp_path)


class Pki:
    def __init__(self, path, names=("127.0.0.1", "localhost")):
        self.path = path
        self.cert = path / "cert.pem"
        self.key = path / "key.pem"
        self.issue(names)

    def issue(self, names, ca=None):
        """A new CA (unless given) and a certificate for ``names``, written over the files."""
        self.ca = ca or trustme.CA()
        cert = self.ca.issue_cert(*names)
        cert.private_key_pem.write_to_path(str(self.key))
        self.cert.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        self.cafile = self.path / f"ca-{id(self.ca)}.pem"
        self.ca.cert_pem.write_to_path(str(self.cafile))
        return self.ca

    def client(self, ca=None):
        context = ssl.create_default_context()
        (ca or self.ca).configure_trust(context)
        return context

    def flags(self):
        return ("--tls-cert", self.cert, "--tls-key", self.key)


def tls_port(server, label="TLS"):
    return int(server.wait_for(rf"^{label} listening on \S+:(\d+)$").group(1))


def irc_until(c, pattern):
    """Read IRC lines until one matches ``pattern`` in full (without its CR); returns it."""
    while True:
        line = c.recv_line().rstrip("\r")
        if re.fullmatch(pattern, line):
            return line


def test_tls_chat_on_both_protocols_with_plain_text_beside(start_server, pki, clients):
    server = start_server("--tls-port", 0, "--irc-tls-port", 0, *pki.flags())
    port, irc_port = tls_port(server), tls_port(server, "IRC TLS")
    plain = clients(server)
    secure = LineClient(port, tls=pki.client())
    irc = LineClient(irc_port, tls=pki.client(), hello=False)
    try:
        assert secure.sock.version() in ("TLSv1.2", "TLSv1.3")
        irc.send("NICK tlsirc")
        irc.send("USER tlsirc 0 * :someone")
        irc_until(irc, r":\S+ (376|422) tlsirc .*")
        irc.send("JOIN #lobby")
        irc_until(irc, r":\S+ 366 tlsirc #lobby .*")
        plain.sync()
        secure.sync()
        secure.send("SEND over TLS")
        assert plain.recv_line() == f"MSG lobby {secure.id} over TLS"
        irc_until(irc, r":127-0-0-1-\d+!\S+ PRIVMSG #lobby :over TLS")
        irc.send("PRIVMSG #lobby :back from IRC over TLS")
        assert secure.recv_line() == "MSG lobby tlsirc back from IRC over TLS"
        assert plain.recv_line() == "MSG lobby tlsirc back from IRC over TLS"
        plain.send("SEND plain text still works")
        assert secure.recv_line() == f"MSG lobby {plain.id} plain text still works"
    finally:
        secure.close()
        irc.close()


def test_decrypted_bytes_left_in_the_tls_layer_are_read(start_server, pki):
    """A TLS record bigger than one read leaves bytes that the kernel no longer signals."""
    # --outbox-limit 32768 makes each read 4096 bytes, a quarter of a full TLS record.
    server = start_server("--tls-port", 0, "--flood-rate", 0, "--outbox-limit", 32768,
                          "--outbox-soft-limit", 0, *pki.flags())
    port = tls_port(server)
    sender = LineClient(port, tls=pki.client())
    receiver = LineClient(port, tls=pki.client())
    try:
        sender.sync()
        lines = [f"SEND line {i:04d} of a burst in one record" for i in range(300)]
        data = "".join(line + "\n" for line in lines).encode()
        assert 4096 * 2 < len(data) < 16384  # one TLS record, several reads
        sender.send_raw(data)
        for i in range(300):
            assert receiver.recv_line() == f"MSG lobby {sender.id} line {i:04d} of a burst in one record"
    finally:
        sender.close()
        receiver.close()


def test_client_checks_certificate_and_host_name(start_server, pki, tmp_path):
    wrong = Pki(tmp_path / "wrong" if (tmp_path / "wrong").mkdir() is None else None,
                names=("chat.example.org",))
    good = start_server("--tls-port", 0, *pki.flags())
    bad = start_server("--tls-port", 0, *wrong.flags())
    client = ClientProcess(tls_port(good), "--tls", "--cafile", pki.cafile)
    try:
        client.type("CONNECT")
        client.expect(r"Connected to 127\.0\.0\.1:\d+ as 127\.0\.0\.1:\d+")
        client.type("QUIT")
        assert client.wait() == 0
    finally:
        client.kill()
    # A certificate from the right CA for another name: refused for the name.
    mismatch = ClientProcess(tls_port(bad), "--tls", "--cafile", wrong.cafile)
    # A server whose CA the client was not told to trust: refused for the certificate.
    untrusted = ClientProcess(tls_port(good), "--tls")
    try:
        for c in (mismatch, untrusted):
            c.type("CONNECT")
            c.expect_line("ERROR: Connection Failed.")
        mismatch.expect(r"TLS: IP address mismatch, certificate is not valid for '127\.0\.0\.1'\.")
        untrusted.expect(r"TLS: .*certificate.*")
        for c in (mismatch, untrusted):
            c.type("QUIT")
            assert c.wait() == 0
    finally:
        mismatch.kill()
        untrusted.kill()
    # By name: a certificate for chat.example.org, reached as localhost.
    by_name = ClientProcess(tls_port(bad), "--tls", "--cafile", wrong.cafile, "--host", "localhost")
    try:
        by_name.type("CONNECT")
        by_name.expect_line("ERROR: Connection Failed.")
        by_name.expect(r"TLS: Hostname mismatch, certificate is not valid for 'localhost'\.")
        by_name.type("QUIT")
        assert by_name.wait() == 0
    finally:
        by_name.kill()
    # The raw check too: a TLS client that checks names refuses the mismatch.
    with pytest.raises(ssl.SSLCertVerificationError):
        LineClient(tls_port(bad), tls=wrong.client(), hello=False)


def test_sighup_reloads_the_certificate_and_keeps_everyone(start_server, pki):
    server = start_server("--tls-port", 0, *pki.flags())
    port = tls_port(server)
    old_ca = pki.ca
    a = LineClient(port, tls=pki.client())
    b = LineClient(port, tls=pki.client())
    try:
        a.sync()
        new_ca = pki.issue(("127.0.0.1",))
        mark = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for(r"^TLS certificate reloaded from ", start=mark)
        # The old connections chat on.
        a.send("SEND after the reload")
        assert b.recv_line() == f"MSG lobby {a.id} after the reload"
        # New ones get the new certificate: the new CA verifies it, the old one no longer does.
        c = LineClient(port, tls=pki.client(new_ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            LineClient(port, tls=pki.client(old_ca), hello=False)
        # A certificate that does not load is logged and the one in use kept.
        pki.cert.write_text("not a certificate\n")
        mark = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for(r"^ERROR: TLS certificate not reloaded, keeping the one in use: ", start=mark)
        d = LineClient(port, tls=pki.client(new_ca))
        d.send("SEND still served")
        for other in (a, b, c):
            assert other.expect("MSG ") == f"MSG lobby {d.id} still served"
        for x in (c, d):
            x.close()
    finally:
        a.close()
        b.close()


def test_plain_text_and_stalled_handshakes_are_dropped_while_others_chat(start_server, pki):
    server = start_server("--tls-port", 0, "--irc-tls-port", 0, "--tls-handshake-timeout", 1,
                          *pki.flags())
    port, irc_port = tls_port(server), tls_port(server, "IRC TLS")
    stalled = socket.create_connection(("127.0.0.1", port), WAIT)  # never says anything
    half = socket.create_connection(("127.0.0.1", irc_port), WAIT)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
    started = time.monotonic()
    a = LineClient(port, tls=pki.client())
    b = LineClient(port, tls=pki.client())
    plain = LineClient(port, hello=False)
    junk = LineClient(irc_port, hello=False)
    try:
        plain.send("SEND hello in plain text")
        junk.send_raw(b"\x00\xff" * 64 + b"\r\n")
        # Dropped at their first bytes, well inside the deadline, and nothing sent back.
        assert plain.expect_closed(timeout=0.9) == []
        assert junk.expect_closed(timeout=0.9) == []
        server.wait_for(r"^TLS handshake with 127\.0\.0\.1:\d+ failed: ")
        # Meanwhile and after, TLS clients chat.
        a.send("SEND while others stall")
        assert b.expect("MSG ") == f"MSG lobby {a.id} while others stall"
        for sock in (stalled, half):
            sock.settimeout(WAIT)
            assert sock.recv(100) == b""  # closed by the server, not by this test's deadline
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 1 + 2.0
        # (The server's output reaches this test through a reader thread: wait for it.)
        wait_until(lambda: server.count(r"^TLS handshake with 127\.0\.0\.1:\d+ timed out after 1s$") == 2)
        b.send("SEND after the stallers went")
        assert a.expect("MSG ") == f"MSG lobby {b.id} after the stallers went"
    finally:
        for x in (a, b, plain, junk):
            x.close()
        stalled.close()
        half.close()


def test_tls_ports_need_a_certificate(start_server, tmp_path):
    import subprocess

    from conftest import BIN, ROOT

    result = subprocess.run([sys.executable, str(BIN / "chat-server"), "--port", "0", "--tls-port", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=WAIT)
    assert result.returncode == 2
    assert "--tls-port, --irc-tls-port and --web-tls-port need --tls-cert and --tls-key" in result.stderr
    missing = tmp_path / "missing.pem"
    result = subprocess.run([sys.executable, str(BIN / "chat-server"), "--port", "0", "--tls-port", "0",
                             "--tls-cert", str(missing), "--tls-key", str(missing)],
                            capture_output=True, text=True, cwd=ROOT, timeout=WAIT)
    assert result.returncode == 1
    assert "ERROR: cannot load the TLS certificate" in result.stdout


def test_chat_load_speaks_tls(start_server, pki):
    import json
    import subprocess

    from conftest import BIN, ROOT

    server = start_server("--tls-port", 0, "--flood-rate", 0, *pki.flags())
    done = subprocess.run([sys.executable, str(BIN / "chat-load"), "--json", "--tls", "--port",
                           str(tls_port(server)), "--receivers", "5", "--senders", "2",
                           "--messages", "50", "--duration", "5"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["lost"] == 0 and result["delivered"] == result["expected"] > 0


def test_the_web_listener_over_tls_serves_the_page_and_wss(start_server, pki, clients):
    import urllib.request

    from wsclient import WsClient

    server = start_server("--web-tls-port", 0, *pki.flags())
    port = tls_port(server, "Web TLS")
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=pki.client(),
                                timeout=WAIT) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    plain = clients(server)
    web = WsClient(port, tls=pki.client(), origin=f"https://127.0.0.1:{port}")
    try:
        assert web.sock.version() in ("TLSv1.2", "TLSv1.3")
        plain.sync()
        web.send("SEND over WSS")
        assert plain.recv_line() == f"MSG lobby {web.id} over WSS"
        plain.send("SEND and back")
        assert web.expect("MSG ") == f"MSG lobby {plain.id} and back"
    finally:
        web.close()
    with pytest.raises(ssl.SSLCertVerificationError):  # another CA's certificate: refused
        WsClient(port, tls=pki.client(trustme.CA()))
    junk = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    junk.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to the TLS port: dropped
    junk.settimeout(WAIT)
    try:
        while junk.recv(4096):
            pass
    except ConnectionResetError:
        pass
    junk.close()


def test_handshakes_under_way_count_against_the_per_address_limit(start_server, pki, clients):
    # A deadline far longer than this test waits: what closes the extra socket is the limit.
    server = start_server("--tls-port", 0, "--max-per-ip", 3, "--tls-handshake-timeout", 60,
                          *pki.flags())
    port = tls_port(server)
    stalled = [socket.create_connection(("127.0.0.1", port), WAIT) for _ in range(3)]
    try:
        extra = socket.create_connection(("127.0.0.1", port), WAIT)
        extra.settimeout(WAIT)
        assert extra.recv(100) == b""  # closed at once, without a handshake
        extra.close()
        server.wait_for(r"Refused 127\.0\.0\.1:\d+: too-many-connections \(before the TLS handshake\)$")
        stalled.pop().close()  # one staller gives up: its place is free again
        wait_until(lambda: _tls_connects(port, pki))
    finally:
        for sock in stalled:
            sock.close()


def _tls_connects(port, pki):
    try:
        c = LineClient(port, tls=pki.client())
    except (OSError, AssertionError, EOFError):
        return False
    c.close()
    return True

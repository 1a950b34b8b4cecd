"""A real IRC client against the server: irssi (in tmux, see irc_clients.py) and bin/chat-client
talk in #lobby / lobby and privately, both ways.

The harness itself is proven against ngIRCd, a known-good IRC server: if that test fails, the
harness or the machine is at fault, not chatroom. Every wait is on screen or output content with a
deadline; every process (server, chat-client, tmux, irssi, ngircd) is ended even when a test fails.
"""

import re

import pytest

from irc_clients import Irssi, Ngircd, irssi_missing, ngircd_missing, said
from test_client import ClientProcess

#: The line bin/chat-server prints for its IRC listener (next to "Listening on HOST:PORT ...").
IRC_LISTENING = r"IRC listening on (\S+):(\d+)"

needs_irssi = pytest.mark.skipif(irssi_missing() is not None, reason=irssi_missing() or "")
needs_ngircd = pytest.mark.skipif(ngircd_missing() is not None, reason=ngircd_missing() or "")


@pytest.fixture
def irssi():
    """Factory: ``irssi(nick, port)`` starts an Irssi connected to 127.0.0.1:port; all are closed
    after the test, however it ends."""
    made = []

    def start(nick, port, **kw):
        client = Irssi(nick, port, **kw)
        made.append(client)
        return client

    yield start
    for client in made:
        client.close()


@pytest.fixture
def chat_client():
    """Factory: ``chat_client(port, *args)`` starts a bin/chat-client; all are stopped after, and
    none may have printed a traceback."""
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
def ngircd():
    server = Ngircd()
    yield server
    server.close()


@needs_irssi
def test_irssi_and_chat_client_talk_in_lobby_and_privately(start_server, irssi, chat_client):
    server = start_server("--irc-port", "0")  # default limits: irssi stays within them
    irc_port = int(server.wait_for(IRC_LISTENING).group(2))

    nat = chat_client(server.port)
    nat.connect()
    nat.type("NICK natuser")
    nat.expect(r"\* \S+ is now known as natuser")

    irc = irssi("ircuser", irc_port)
    irc.join("#lobby")

    nat.type("SEND hello from terminal")
    irc.wait_for(said("natuser", "hello from terminal"))

    irc.type("hello from irssi")
    nat.expect_line("[lobby] ircuser: hello from irssi")

    irc.type("/msg natuser psst")
    nat.expect_line("[private] ircuser: psst")

    nat.type("TELL ircuser hi back")
    irc.window("natuser")  # the query window, opened by the /msg or by the message
    irc.wait_for(said("natuser", "hi back"))


@needs_irssi
@needs_ngircd
def test_irssi_harness_against_ngircd(ngircd, irssi):
    alice = irssi("alice", ngircd.port)
    bob = irssi("bob", ngircd.port)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", alice.version), alice.version

    alice.join("#lobby")
    bob.join("#lobby")
    alice.wait_for(r"bob \[\S+\] has joined #lobby")

    bob.type("hello from bob")
    alice.wait_for(said("bob", "hello from bob"))
    alice.type("hello from alice")
    bob.wait_for(said("alice", "hello from alice"))
    alice.wait_for(said("alice", "hello from alice"))  # irssi shows its own line too
    alice.type('odd; "keys" \\ -- ;')  # typed literally, even the last ';' (tmux's separator)
    bob.wait_for(said("alice", 'odd; "keys" \\ -- ;') + "$")

    alice.type("/msg bob psst")
    bob.window("alice")  # irssi opened a query window for it
    bob.wait_for(said("alice", "psst"))
    bob.type("/msg alice hi back")
    alice.window("bob")
    alice.wait_for(said("bob", "hi back"))

    alice.window(2)  # back to #lobby by number: its lines are still there
    alice.wait_for(said("bob", "hello from bob"))
    assert "#lobby" in alice.status_line()

"""Private messages to an offline registered account are kept and handed over at its next login
(docs/protocol.md, "Messages to an offline account"; docs/irc.md): native TELL, IRC PRIVMSG,
the mailbox limit, a restart in between, and a cluster where sender and recipient use different
nodes.

Real bin/chat-server processes and raw sockets; waits on lines, never sleeps.
"""

import base64
import calendar
import re
import time

import pytest

from chatroom.accounts.service import MAILBOX_MAX
from irc_helpers import MOTD_END, IrcClient
from test_cluster import node, redis_server  # noqa: F401 (fixtures)

KEPT = "NOTICE kept {} is offline; they get your message when they log in"
TELLHIST_RE = re.compile(r"TELLHIST (\S+) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (.*)")


def named(clients, server, nick):
    c = clients(server)
    c.send(f"NICK {nick}")
    c.expect(f"NICK {c.id} {nick}")  # others' comings and goings may come first (other nodes)
    return c


def said(c):
    """``c.sync()`` without the comings and goings of others (JOIN, PART, NICK)."""
    return [line for line in c.sync() if not line.startswith(("JOIN ", "PART ", "NICK "))]


def register_and_leave(clients, server, nick, password):
    """An account ``nick`` that nobody is logged in to (its registrar has left)."""
    c = clients(server)
    c.send(f"NICK {nick}")
    c.send(f"REGISTER {password}")
    assert c.sync() == [f"NICK {c.id} {nick}", f"ACCOUNT {nick}"]
    c.send("QUIT")
    c.expect_closed()


def login(clients, server, nick, password):
    """A new client logs in to ``nick``; returns it and the lines after its ``ACCOUNT``."""
    c = clients(server)
    c.send(f"LOGIN {nick} {password}")
    mine = f"NICK {c.id} {nick}"
    lines = [line for line in c.sync()
             if line == mine or not line.startswith(("JOIN ", "PART ", "NICK "))]
    assert lines[:2] == [f"NICK {c.id} {nick}", f"ACCOUNT {nick}"], lines
    return c, lines[2:]


def kept(lines):
    """``TELLHIST`` lines as ``(id, time in seconds, sender, text)``; they end with TELLHISTEND."""
    if not lines:
        return []
    assert lines[-1] == "TELLHISTEND", lines
    out = []
    for line in lines[:-1]:
        m = TELLHIST_RE.fullmatch(line)
        assert m, line
        when = calendar.timegm(time.strptime(m.group(2)[:19], "%Y-%m-%dT%H:%M:%S"))
        out.append((m.group(1), when, m.group(3), m.group(4)))
    return out


def test_a_tell_to_an_offline_account_is_kept_and_handed_over_once(server, clients):
    register_and_leave(clients, server, "ann", "ann's password")
    bob = named(clients, server, "bob")
    guest = clients(server)
    before = time.time()
    bob.send("TELL ann see you at 5")
    assert said(bob) == [KEPT.format("ann")]
    guest.send("TELL ANN from someone without a name")  # names are compared case-insensitively
    assert said(guest) == [KEPT.format("ANN")]
    bob.send("TELL nobody hello?")  # neither online nor an account: as ever
    assert said(bob) == ["ERR no-such-nick nobody is called 'nobody'"]
    server.wait_for(r"^bob left a message for ann \(offline\)$")

    ann, lines = login(clients, server, "ann", "ann's password")
    got = kept(lines)
    assert [(sender, text) for _, _, sender, text in got] == [
        ("bob", "see you at 5"), (guest.id, "from someone without a name")]
    assert all(int(before) - 1 <= when <= time.time() + 1 for _, when, _, _ in got)
    assert got[0][0] != got[1][0]  # each its own message id
    server.wait_for(r"^ann got 2 message\(s\) kept while offline$")

    ann.send("LOGOUT")
    ann.send("LOGIN ann ann's password")
    assert ann.sync() == ["ACCOUNT *", "ACCOUNT ann"]  # handed over once: nothing the second time
    bob.send("TELL ann now you are here")  # online: a live TELL, not kept
    assert said(bob) == []
    assert ann.sync() == ["TELL bob now you are here"]
    assert not any("see you at 5" in line for line in server.lines)  # texts are not logged


def test_the_mailbox_of_an_offline_account_is_bounded(start_server, clients):
    server = start_server("--flood-rate", "0")
    register_and_leave(clients, server, "cat", "cat's password")
    bob = named(clients, server, "bob")
    for n in range(MAILBOX_MAX):
        bob.send(f"TELL cat message {n}")
    assert said(bob) == [KEPT.format("cat")] * MAILBOX_MAX
    bob.send("TELL cat one too many")
    assert said(bob) == [f"ERR mailbox-full {MAILBOX_MAX} messages already wait for 'cat'; not kept"]
    cat, lines = login(clients, server, "cat", "cat's password")
    assert [text for _, _, _, text in kept(lines)] == [f"message {n}" for n in range(MAILBOX_MAX)]
    cat.send("QUIT")
    cat.expect_closed()
    bob.send("TELL cat room again")  # the mailbox was emptied
    assert said(bob) == [KEPT.format("cat")]


def test_kept_messages_survive_a_restart(start_server, clients, tmp_path):
    data = tmp_path / "state"
    server = start_server("--data-dir", data)
    register_and_leave(clients, server, "dora", "dora's password")
    bob = named(clients, server, "bob")
    bob.send("TELL dora before the restart")
    assert said(bob) == [KEPT.format("dora")]
    assert server.stop() == 0
    server = start_server("--data-dir", data)
    dora, lines = login(clients, server, "dora", "dora's password")
    assert [(sender, text) for _, _, sender, text in kept(lines)] == [("bob", "before the restart")]


def test_the_chat_client_shows_kept_messages_with_their_time(server, clients):
    from test_accounts import chat_client_as

    register_and_leave(clients, server, "lee", "lee's password")
    bob = named(clients, server, "bob")
    bob.send("TELL lee while you were out")
    assert said(bob) == [KEPT.format("lee")]
    code, out = chat_client_as(server, "lee", "lee's password")
    assert code == 0, out
    assert re.search(r"\* Logged in as lee\n"
                     r"\[private \d{4}-\d\d-\d\d \d\d:\d\d\] bob: while you were out\n"
                     r"---- kept private messages above, live from here ----\n", out), out


# -- IRC ------------------------------------------------------------------------------------------

def irc_connect(server):
    return IrcClient(server.irc_port)


def sasl_login(c, nick, password, caps=()):
    """Register ``c`` as ``nick`` after SASL PLAIN; returns the lines after the welcome burst."""
    c.send("CAP LS 302")
    c.expect("CAP", "*", "LS")
    c.send("CAP REQ :" + " ".join(("sasl",) + tuple(caps)))
    c.expect("CAP", "*", "ACK")
    c.send(f"NICK {nick}")
    c.send(f"USER {nick} 0 * :{nick}")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE", "+")
    c.send("AUTHENTICATE " + base64.b64encode(f"\0{nick}\0{password}".encode()).decode())
    c.expect("900")
    c.expect("903")
    c.send("CAP END")
    while c.recv().command not in MOTD_END:
        pass
    c.nick = nick
    return c.sync()


def test_irc_privmsg_to_an_offline_account_is_kept_and_handed_over_with_its_time(start_server, clients):
    server = start_server("--irc-port", 0)
    register_and_leave(clients, server, "ann", "ann's password")
    bob = irc_connect(server)
    try:
        bob.register("bob")
        bob.send("PRIVMSG ann :see you at \x02five\x02")
        notice = bob.expect("NOTICE")
        assert notice.raw == (b":chatroom.local NOTICE bob :ann is offline; "
                              b"they get your message when they log in\r\n")
        bob.send("PRIVMSG ann :\x01ACTION waves\x01")
        bob.expect("NOTICE")
        bob.send("NOTICE ann :a notice is never kept, nor answered")
        bob.send("PRIVMSG ann :\x01VERSION\x01")  # a CTCP request: nobody to answer it later
        bob.send("PRIVMSG nobody :hello?")
        assert [(line.command, line.params) for line in bob.sync()] == [
            ("401", ["bob", "ann", "No such nick/channel"]),
            ("401", ["bob", "nobody", "No such nick/channel"])]
        sent = time.time()

        ann = irc_connect(server)
        try:
            lines = sasl_login(ann, "ann", "ann's password", ("server-time", "message-tags"))
            assert [(line.source, line.command, line.params) for line in lines] == [
                ("bob!~bob@127.0.0.1", "PRIVMSG", ["ann", "see you at \x02five\x02"]),
                ("bob!~bob@127.0.0.1", "PRIVMSG", ["ann", "\x01ACTION waves\x01"])]
            for line in lines:
                assert set(line.tags) == {"time", "msgid"}
                when = calendar.timegm(time.strptime(line.tags["time"][:19], "%Y-%m-%dT%H:%M:%S"))
                assert sent - 60 <= when <= sent + 1
            assert lines[0].tags["msgid"] != lines[1].tags["msgid"]
            ann.send("QUIT")
            ann.expect_closed()
        finally:
            ann.close()

        bob.send("PRIVMSG ann :once more")
        bob.expect("NOTICE")
        ann = irc_connect(server)  # no server-time: the time goes before the text
        try:
            (line,) = sasl_login(ann, "ann", "ann's password")
            assert line.tags == {} and line.command == "PRIVMSG"
            assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d UTC\] once more", line.params[1]), line.raw
            ann.send("QUIT")
            ann.expect_closed()
        finally:
            ann.close()

        bob.send("PRIVMSG ann :\x0304red\x03 for native eyes")
        bob.expect("NOTICE")
        native, lines = login(clients, server, "ann", "ann's password")
        assert [(sender, text) for _, _, sender, text in kept(lines)] == [("bob", "red for native eyes")]
        native.send("TELL bob back online")
        assert bob.expect("PRIVMSG").params == ["bob", "back online"]
    finally:
        bob.close()


def test_irc_sasl_after_registration_hands_them_over_at_once(start_server, clients):
    server = start_server("--irc-port", 0)
    register_and_leave(clients, server, "eve", "eve's password")
    bob = named(clients, server, "bob")
    bob.send("TELL eve hello eve")
    assert said(bob) == [KEPT.format("eve")]
    eve = irc_connect(server)
    try:
        eve.send("CAP LS 302")
        eve.expect("CAP", "*", "LS")
        eve.send("CAP REQ :sasl")
        eve.expect("CAP", "*", "ACK")
        eve.send("CAP END")
        eve.register("guest")
        eve.send("AUTHENTICATE PLAIN")
        eve.expect("AUTHENTICATE", "+")
        eve.send("AUTHENTICATE " + base64.b64encode(b"\0eve\0eve's password").decode())
        eve.expect("900")
        eve.expect("903")
        (line,) = eve.sync()
        assert line.source.startswith("bob!") and line.command == "PRIVMSG"
        assert line.params[0] == "guest" and line.params[1].endswith("] hello eve")
    finally:
        eve.close()


def test_irc_echo_message_echoes_a_kept_message(start_server, clients):
    server = start_server("--irc-port", 0)
    register_and_leave(clients, server, "carl", "carl's password")
    bob = irc_connect(server)
    try:
        bob.register("bob", caps=("echo-message",))
        bob.send("PRIVMSG carl :kept and echoed")
        echo = bob.expect("PRIVMSG")
        assert echo.source.startswith("bob!") and echo.params == ["carl", "kept and echoed"]
        assert bob.expect("NOTICE").params[1].startswith("carl is offline")
    finally:
        bob.close()


# -- cluster --------------------------------------------------------------------------------------

def test_kept_in_redis_on_one_node_and_handed_over_on_another(node, clients):  # noqa: F811
    one = node("n1")
    two = node("n2")
    register_and_leave(clients, one, "ann", "ann's password")
    two.wait_for(r"^Accounts: account ann is registered \(cluster\)$")
    zed = named(clients, one, "zed")
    bob = named(clients, two, "bob")
    bob.send("TELL zed you are on the other node")  # online elsewhere: live, not kept
    assert said(bob) == []
    assert zed.expect("TELL ") == "TELL bob you are on the other node"
    bob.send("TELL ann kept in redis")
    assert said(bob) == [KEPT.format("ann")]
    ann, lines = login(clients, one, "ann", "ann's password")
    assert [(sender, text) for _, _, sender, text in kept(lines)] == [("bob", "kept in redis")]
    ann.send("QUIT")
    ann.expect_closed()
    again = clients(two)
    deadline = time.monotonic() + 10
    while True:  # the nickname is free in Redis once node one's release got there
        again.send("LOGIN ann ann's password")
        lines = said(again)
        if lines != ["ERR nick-taken nickname 'ann' is in use"] or time.monotonic() > deadline:
            break
    assert lines == ["ACCOUNT ann"]  # taken once, on whichever node: nothing the second time


# -- the service over a failing store -------------------------------------------------------------

class FailingStore:
    failures = (OSError,)

    def load_names(self):
        return ["ann"]

    def bans(self):
        return []

    def keep(self, key, message, limit):
        raise OSError("disk full")

    def take(self, key):
        raise OSError("disk full")

    def close(self):
        pass


def test_a_failing_store_answers_accounts_unavailable():
    from chatroom.accounts.service import Accounts
    from chatroom.accounts.store import Kept
    from chatroom.codec.native import ProtocolError

    accounts = Accounts(FailingStore(), hash_threads=1)
    try:
        with pytest.raises(ProtocolError) as err:
            accounts.keep("ann", Kept(0.0, "1-1", "bob", "bob!~native@h", "hi", False, True))
        assert err.value.code == "accounts-unavailable"
        with pytest.raises(ProtocolError) as err:
            accounts.take("ann")
        assert err.value.code == "accounts-unavailable"
    finally:
        accounts.close()


def test_the_sqlite_store_keeps_in_order_within_the_bound(tmp_path):
    from chatroom.accounts.store import Kept, SqliteStore

    store = SqliteStore(str(tmp_path))
    try:
        for n in range(3):
            assert store.keep("ann", Kept(n, f"{n}-1", "bob", "bob!~native@h", f"m{n}", False, True), 3)
        assert not store.keep("ann", Kept(9, "9-1", "bob", "bob!~native@h", "m9", False, True), 3)
        assert store.keep("cat", Kept(5, "5-1", "bob", "bob!~native@h", "for cat", True, False), 3)
        assert [m.text for m in store.take("ann")] == ["m0", "m1", "m2"]
        assert store.take("ann") == []
        assert store.take("cat") == [Kept(5.0, "5-1", "bob", "bob!~native@h", "for cat", True, False)]
    finally:
        store.close()

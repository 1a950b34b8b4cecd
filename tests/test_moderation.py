"""Moderation: room and server operators (--oper), native KICK, TOPIC, BAN, UNBAN; IRC OPER, KILL,
MODE +b; bans kept in the store and applied on every listener."""

import re

from conftest import LineClient
from test_tls import pki  # noqa: F401 (fixture)


def settle(*clients):
    return [c.sync() for c in clients]


def oper(server, clients, name="boss", password="boss password"):
    """A native client logged in to the --oper account ``name`` (registered here)."""
    c = clients(server)
    c.send(f"NICK {name}")
    c.send(f"REGISTER {password}")
    assert c.sync()[-1] == f"ACCOUNT {name}"
    server.wait_for(rf"^127\.0\.0\.1:\d+ logged in as {name} \(server operator\)$")
    return c


def irc_port(server):
    return int(server.wait_for(r"^IRC listening on \S+:(\d+)$").group(1))


def irc_until(c, pattern):
    while True:
        line = c.recv_line().rstrip("\r")
        if re.fullmatch(pattern, line):
            return line


def irc_join(port, nick):
    c = LineClient(port, hello=False)
    c.send(f"NICK {nick}")
    c.send(f"USER {nick} 0 * :{nick}")
    irc_until(c, rf":\S+ (376|422) {nick} .*")
    return c


def test_room_operators_kick_and_set_the_topic(server, clients):
    first, second, third = (clients(server) for _ in range(3))
    settle(first, second, third)
    second.send("KICK " + third.id)
    assert second.sync() == ["ERR not-operator you are not an operator of lobby"]
    second.send("TOPIC new topic")
    assert second.sync() == ["ERR not-operator you are not an operator of lobby"]
    second.send("TOPIC")
    assert second.sync() == ["TOPIC lobby *"]
    first.send("TOPIC a room with rules")  # the first member of a room is its operator
    for c in (first, second, third):
        assert c.expect("TOPIC ") == f"TOPIC lobby {first.id} a room with rules"
    second.send("JOIN side")
    settle(second, first, third)  # the JOIN has run before the others sync
    first.send("KICK " + second.id)
    assert first.sync() == [f"ERR no-such-nick no '{second.id}' in lobby"]
    first.send(f"KICK {third.id} behave")
    # Put out of the lobby: told who and why, then disconnected.
    assert third.expect_closed()[-2:] == [
        f"PART lobby {third.id} kicked by {first.id}: behave", "BYE kicked"]
    assert first.recv_line() == f"PART lobby {third.id} kicked by {first.id}: behave"


def test_server_operators_ban_nicknames_accounts_and_addresses(start_server, clients, tmp_path, pki):
    data = tmp_path / "state"
    server = start_server("--oper", "boss", "--irc-port", 0, "--data-dir", data, "--tls-port", 0,
                          "--tls-cert", pki.cert, "--tls-key", pki.key)
    boss = oper(server, clients)
    plain = clients(server)
    plain.send("BAN someone")
    assert plain.sync()[-1] == "ERR not-operator only server operators may do that"
    victim = clients(server)
    victim.send("NICK mallory")
    settle(victim, boss, plain)  # the NICK has run before the others sync
    boss.send("BAN mallory 10 spam")
    assert boss.recv_line() == "BANNED nick mallory 10"
    assert victim.expect_closed() == ["BYE banned"]
    server.wait_for(r"^boss banned nick mallory for 10 min$")
    again = clients(server)
    again.send("NICK Mallory")  # the nickname is banned, whoever takes it
    assert again.expect_closed() == ["BYE banned"]
    # An address ban refuses new connections at once, on every listener.
    boss.send("BAN 127.0.0.2")
    assert boss.expect("BANNED ") == "BANNED address 127.0.0.2"
    refused = LineClient(server.port, hello=False, source="127.0.0.2")
    assert refused.expect_closed() == ["BYE banned"]
    refused_irc = LineClient(irc_port(server), hello=False, source="127.0.0.2")
    assert refused_irc.expect_closed() == ["ERROR :Closing link: banned\r"]
    refused_tls = LineClient(int(server.wait_for(r"^TLS listening on \S+:(\d+)$").group(1)),
                             hello=False, source="127.0.0.2")
    assert refused_tls.expect_closed() == []  # closed before any handshake
    server.wait_for(r"^WARNING: Refused 127\.0\.0\.2:\d+: banned \(before the TLS handshake\)$")
    # Bans survive a restart (they are in the store).
    assert server.stop() == 0
    server = start_server("--oper", "boss", "--data-dir", data)
    again = LineClient(server.port, hello=False, source="127.0.0.2")
    assert again.expect_closed() == ["BYE banned"]
    boss = clients(server)
    boss.send("LOGIN boss boss password")
    assert boss.expect("ACCOUNT ") == "ACCOUNT boss"
    boss.send("UNBAN 127.0.0.2")
    assert boss.sync() == ["UNBANNED address 127.0.0.2"]
    boss.send("UNBAN 127.0.0.2")
    assert boss.sync() == ["ERR no-such-ban '127.0.0.2' is not banned"]
    welcome = LineClient(server.port, source="127.0.0.2")
    welcome.close()


def test_account_bans_close_logged_in_users(start_server, clients):
    server = start_server("--oper", "boss")
    boss = oper(server, clients)
    user = clients(server)
    user.send("NICK trent")
    user.send("REGISTER trent's password")
    assert user.sync()[-1] == "ACCOUNT trent"
    boss.sync()
    boss.send("BAN trent")  # a registered name: the account is banned
    assert boss.expect("BANNED ") == "BANNED account trent"
    assert user.expect_closed() == ["BYE banned"]
    back = clients(server)
    back.send("LOGIN trent trent's password")
    assert back.expect_closed()[-1] == "BYE banned"


def test_irc_oper_kill_and_ban_masks(start_server, clients):
    server = start_server("--oper", "boss", "--irc-port", 0)
    oper(server, clients).close()
    port = irc_port(server)
    op = irc_join(port, "opnick")
    victim = irc_join(port, "victim")
    other = irc_join(port, "other")
    try:
        victim.send("KILL other :no")
        assert victim.recv_line() == (":chatroom.local 481 victim :Permission Denied- "
                                      "You're not an IRC operator\r")
        op.send("OPER boss wrong")
        assert op.recv_line() == ":chatroom.local 464 opnick :Password incorrect\r"
        op.send("OPER nobody boss password")
        assert op.recv_line() == ":chatroom.local 491 opnick :No O-lines for your host\r"
        op.send("OPER boss :boss password")
        assert op.recv_line() == ":chatroom.local 381 opnick :You are now an IRC operator\r"
        other.send("WHO opnick")  # others see the operator: * in WHO, 313 in WHOIS
        assert other.recv_line() == (":chatroom.local 352 other * ~opnick 127.0.0.1 chatroom.local "
                                     "opnick H* :0 opnick\r")
        assert other.recv_line() == ":chatroom.local 315 other opnick :End of WHO list\r"
        other.send("WHOIS opnick")
        whois = [other.recv_line() for _ in range(5)]
        assert whois[2] == ":chatroom.local 313 other opnick :is an IRC operator\r", whois
        assert whois[4] == ":chatroom.local 318 other opnick :End of /WHOIS list\r"
        op.send("KILL other :enough")
        assert other.expect_closed() == ["ERROR :Closing link: 127.0.0.1 (killed)\r"]
        op.send("JOIN #lobby")
        irc_until(op, r":\S+ 366 opnick #lobby .*")
        op.send("MODE #lobby +b victim!*@*")
        assert op.recv_line() == ":opnick!~opnick@127.0.0.1 MODE #lobby +b victim!*@*\r"
        assert victim.expect_closed() == [":chatroom.local 465 victim :You are banned from this server\r",
                                          "ERROR :Closing link: 127.0.0.1 (banned)\r"]
        op.send("MODE #lobby b")
        assert op.recv_line() == ":chatroom.local 367 opnick #lobby victim!*@*\r"
        assert op.recv_line() == ":chatroom.local 368 opnick #lobby :End of channel ban list\r"
        native = clients(server)
        native.send("NICK victim")  # the ban applies on the native listener too
        assert native.expect_closed() == ["BYE banned"]
        op.send("MODE #lobby -b victim!*@*")
        irc_until(op, r":opnick!~opnick@127\.0\.0\.1 MODE #lobby -b victim!\*@\*")
        server.wait_for(r"^opnick killed other: enough$")
    finally:
        for c in (op, victim, other):
            c.close()

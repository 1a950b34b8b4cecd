"""End-to-end tests of the IRC listener: a real ``bin/chat-server --irc-port 0`` spoken to over raw
sockets by IRC clients (tests/irc_helpers.py) and native clients (conftest's LineClient).

Each test starts its own server. Numerics and texts are written out literally, never taken from the
server's constants, so a changed reply fails here. Absence is proven with ``sync()``: a PING round
trip after which everything queued before it has arrived.
"""

import re
import signal
import threading
import time
from datetime import datetime, timedelta, timezone


from conftest import WAIT


def raws(lines):
    return [line.raw for line in lines]


def settle(*clients):
    """Read everything queued so far to each client (IRC or native)."""
    for c in clients:
        c.sync()


def in_channel(channel, *clients):
    """Each client joins ``channel`` in turn; then all have read everything queued so far."""
    for c in clients:
        c.join(channel)
    settle(*clients)


def dashed(native):
    """How IRC users see a native client without a nickname: its id 127.0.0.1:PORT as 127-0-0-1-PORT."""
    return f"127-0-0-1-{native.sock.getsockname()[1]}"


def native_in(room, *natives):
    for n in natives:
        n.send(f"JOIN {room}")
        n.expect(f"JOIN {room} ")
    settle(*natives)


# == 1. registration ================================================================================

def test_registration_welcome_isupport_lusers_and_no_motd(irc_server, irc):
    server = irc_server()
    lurker = irc(server)  # connected, never registers: one unknown connection
    lurker.send("PING :here")
    lurker.expect("PONG")
    lines = irc(server).register("alice")
    assert [line.command for line in lines] == [
        "001", "002", "003", "004", "005", "005",
        "251", "252", "253", "254", "255", "265", "266", "422"]
    assert lines[0].raw == b":chatroom.local 001 alice :Welcome to the chatroom IRC network, alice!~alice@127.0.0.1\r\n"
    assert lines[1].raw == b":chatroom.local 002 alice :Your host is chatroom.local, running version chatroom-1.0\r\n"
    assert re.fullmatch(rb":chatroom.local 003 alice :This server was created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\r\n",
                        lines[2].raw)
    assert lines[3].raw == b":chatroom.local 004 alice chatroom.local chatroom-1.0 i mnost ov\r\n"
    tokens = []
    for line in lines[4:6]:
        assert line.params[0] == "alice" and line.params[-1] == "are supported by this server"
        assert len(line.params) <= 15
        tokens += line.params[1:-1]
    for token in ("NICKLEN=32", "CHANTYPES=#", "CASEMAPPING=ascii", "PREFIX=(ov)@+", "CHANNELLEN=33",
                  "NETWORK=chatroom", "CHANMODES=,,,mnst", "TOPICLEN=390", "UTF8ONLY", "WHOX"):
        assert token in tokens
    assert raws(lines[6:]) == [
        b":chatroom.local 251 alice :There are 1 users and 0 invisible on 1 servers\r\n",
        b":chatroom.local 252 alice 0 :operator(s) online\r\n",
        b":chatroom.local 253 alice 1 :unknown connection(s)\r\n",
        b":chatroom.local 254 alice 0 :channels formed\r\n",
        b":chatroom.local 255 alice :I have 1 clients and 0 servers\r\n",
        b":chatroom.local 265 alice 1 1 :Current local users 1, max 1\r\n",
        b":chatroom.local 266 alice 1 1 :Current global users 1, max 1\r\n",
        b":chatroom.local 422 alice :MOTD File is missing\r\n",
    ]
    lurker.close()
    server.wait_for(rf"Connection closed with 127\.0\.0\.1:{lurker.port} \(disconnected\)")
    bob = irc(server)
    bob.send("NICK bob")
    bob.send("USER bob 0 * :Bob")
    bob.expect("001")
    bob.join("#dev")
    bob.send("LUSERS")
    assert raws(bob.sync()) == [
        b":chatroom.local 251 bob :There are 2 users and 0 invisible on 1 servers\r\n",
        b":chatroom.local 252 bob 0 :operator(s) online\r\n",
        b":chatroom.local 254 bob 1 :channels formed\r\n",
        b":chatroom.local 255 bob :I have 2 clients and 0 servers\r\n",
        b":chatroom.local 265 bob 2 2 :Current local users 2, max 2\r\n",
        b":chatroom.local 266 bob 2 2 :Current global users 2, max 2\r\n",
    ]


def test_motd_file_and_server_name(irc_server, irc, tmp_path):
    motd = tmp_path / "motd.txt"
    motd.write_text("Welcome to the test net\n\nBe nice.\n")
    server = irc_server("--motd", motd, "--server-name", "irc.example.org")
    lines = irc(server).register("alice")
    assert raws(lines[-5:]) == [
        b":irc.example.org 375 alice :- irc.example.org Message of the day - \r\n",
        b":irc.example.org 372 alice :- Welcome to the test net\r\n",
        b":irc.example.org 372 alice :- \r\n",
        b":irc.example.org 372 alice :- Be nice.\r\n",
        b":irc.example.org 376 alice :End of /MOTD command.\r\n",
    ]
    assert lines[0].raw.startswith(b":irc.example.org 001 alice :")


def test_cap_negotiation_holds_registration_until_cap_end(irc_server, irc):
    server = irc_server()
    c = irc(server)
    c.send("CAP LS 302")
    ls = c.recv()
    assert ls.source == "chatroom.local" and ls.command == "CAP" and ls.params[:2] == ["*", "LS"]
    assert sorted(ls.params[2].split()) == sorted([
        "away-notify", "echo-message", "message-tags", "multi-prefix", "server-time",
        "userhost-in-names", "cap-notify", "batch", "labeled-response", "sasl=PLAIN",
        "draft/account-registration=before-connect"])
    # (draft/chathistory comes with history, which the test servers run without)
    c.send("NICK alice")
    c.send("USER alice 0 * :Alice A")
    assert c.sync() == []  # NICK and USER are in, but registration waits for CAP END
    c.send("CAP REQ :multi-prefix server-time")
    assert c.recv().raw == b":chatroom.local CAP * ACK :multi-prefix server-time\r\n"
    c.send("CAP REQ :multi-prefix no-such-cap")
    assert c.recv().raw == b":chatroom.local CAP * NAK :multi-prefix no-such-cap\r\n"
    c.send("CAP LIST")  # the NAK changed nothing; cap-notify came with LS 302
    assert c.recv().raw == b":chatroom.local CAP * LIST :cap-notify multi-prefix server-time\r\n"
    c.send("CAP REQ -server-time")
    assert c.recv().raw == b":chatroom.local CAP * ACK -server-time\r\n"
    c.send("CAP LIST")
    assert c.recv().raw == b":chatroom.local CAP * LIST :cap-notify multi-prefix\r\n"
    c.send("CAP BOGUS")
    assert c.recv().raw == b":chatroom.local 410 * BOGUS :Invalid CAP command\r\n"
    assert c.sync() == []  # still not registered
    other = irc(server, "bob")
    other.send("ISON alice")
    assert other.recv().raw == b":chatroom.local 303 bob :\r\n"  # not a user yet
    c.send("CAP END")
    assert c.recv().raw == b":chatroom.local 001 alice :Welcome to the chatroom IRC network, alice!~alice@127.0.0.1\r\n"
    c.until("422")
    c.send("CAP LIST")  # registered: the replies name the client
    assert c.recv().raw == b":chatroom.local CAP alice LIST :cap-notify multi-prefix\r\n"


def test_commands_before_registration_get_451(irc_server, irc):
    server = irc_server()
    c = irc(server)
    c.send("JOIN #dev")
    assert c.recv().raw == b":chatroom.local 451 * :You have not registered\r\n"
    c.send("PRIVMSG bob :hi")
    assert c.recv().raw == b":chatroom.local 451 * :You have not registered\r\n"
    c.send("001 ignored")  # a numeric from a client is not worth a reply
    c.send("NICK alice")
    c.send("WHOIS alice")
    assert c.recv().raw == b":chatroom.local 451 * :You have not registered\r\n"
    assert c.sync() == []
    c.send("USER alice 0 * :Alice")
    c.expect("001")


def test_nickname_refusals_at_registration(irc_server, irc, clients):
    server = irc_server()
    irc(server, "bob")
    c = irc(server)
    c.send("NICK bob")
    assert c.recv().raw == b":chatroom.local 433 * bob :Nickname is already in use\r\n"
    c.send("NICK BOB")  # nicknames compare case-insensitively
    assert c.recv().raw == b":chatroom.local 433 * BOB :Nickname is already in use\r\n"
    c.send("NICK -dash")
    assert c.recv().raw == b":chatroom.local 432 * -dash :Erroneous nickname\r\n"
    c.send("NICK n" + "x" * 32)  # 33 characters, NICKLEN is 32
    assert c.recv().raw == b":chatroom.local 432 * n" + b"x" * 32 + b" :Erroneous nickname\r\n"
    c.send("NICK caf\u00e9")
    assert c.recv().raw == ":chatroom.local 432 * caf\u00e9 :Erroneous nickname\r\n".encode()
    c.send("NICK 127-0-0-1-5555")  # kept for native clients without a nickname
    assert c.recv().raw == b":chatroom.local 432 * 127-0-0-1-5555 :Erroneous nickname\r\n"
    c.send("NICK")
    assert c.recv().raw == b":chatroom.local 431 * :No nickname given\r\n"
    c.send("USER carol 0 * :Carol")
    assert c.sync() == []  # no nickname yet: still unregistered
    c.send("NICK " + "c" * 32)
    assert c.recv().raw == b":chatroom.local 001 " + b"c" * 32 + b" :Welcome to the chatroom IRC network, " \
        + b"c" * 32 + b"!~carol@127.0.0.1\r\n"


def test_nickname_change_after_registration(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    alice.send("NICK bob")
    assert alice.recv().raw == b":chatroom.local 433 alice bob :Nickname is already in use\r\n"
    alice.send("NICK Bob")
    assert alice.recv().raw == b":chatroom.local 433 alice Bob :Nickname is already in use\r\n"
    alice.send("NICK 127-0-0-1-5555")
    assert alice.recv().raw == b":chatroom.local 432 alice 127-0-0-1-5555 :Erroneous nickname\r\n"
    alice.send("NICK -x")
    assert alice.recv().raw == b":chatroom.local 432 alice -x :Erroneous nickname\r\n"
    assert bob.sync() == []
    alice.send("NICK ann")
    assert alice.recv().raw == b":alice!~alice@127.0.0.1 NICK ann\r\n"
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 NICK ann\r\n"
    alice.send("NICK ANN")  # a change of case only is a change
    assert alice.recv().raw == b":ann!~alice@127.0.0.1 NICK ANN\r\n"
    assert bob.recv().raw == b":ann!~alice@127.0.0.1 NICK ANN\r\n"
    bob.send("NICK alice")  # the old nickname is free again
    assert bob.recv().raw == b":bob!~bob@127.0.0.1 NICK alice\r\n"


def test_nickname_taken_between_nick_and_user(irc_server, irc, clients):
    server = irc_server()
    c = irc(server)
    c.send("NICK alice")
    assert c.sync() == []
    nat = clients(server)
    nat.send("NICK Alice")  # a pending nickname is nobody's yet
    assert nat.recv_line() == f"NICK {nat.id} Alice"
    c.send("USER alice 0 * :Alice A")
    assert c.recv().raw == b":chatroom.local 433 * alice :Nickname is already in use\r\n"
    assert c.sync() == []
    c.send("NICK alice2")
    assert c.recv().raw.startswith(b":chatroom.local 001 alice2 :")


def test_user_pass_and_unknown_commands(irc_server, irc):
    server = irc_server()
    c = irc(server)
    c.send("USER alice 0 *")
    assert c.recv().raw == b":chatroom.local 461 * USER :Not enough parameters\r\n"
    c.send("PASS")
    assert c.recv().raw == b":chatroom.local 461 * PASS :Not enough parameters\r\n"
    c.send("PASS secret")  # no server password: accepted, nothing happens
    assert c.sync() == []
    c.send("NICK alice")
    c.send("USER alice 0 * :Alice A")
    assert c.recv().command == "001"
    c.until("422")
    c.send("USER alice 0 * :Again")
    assert c.recv().raw == b":chatroom.local 462 alice :You may not reregister\r\n"
    c.send("PASS secret")
    assert c.recv().raw == b":chatroom.local 462 alice :You may not reregister\r\n"
    c.send("FROBNICATE now")
    assert c.recv().raw == b":chatroom.local 421 alice FROBNICATE :Unknown command\r\n"
    c.send("frobnicate")  # commands are case-insensitive on IRC: it is reported upper-case
    assert c.recv().raw == b":chatroom.local 421 alice FROBNICATE :Unknown command\r\n"
    c.send("ping :lower")
    assert c.recv().raw == b":chatroom.local PONG chatroom.local lower\r\n"


def test_user_refused_for_an_empty_realname_does_not_count(irc_server, irc):
    server = irc_server()
    c = irc(server)
    c.send("USER alice 0 * :")
    assert c.recv().raw == b":chatroom.local 461 * USER :Not enough parameters\r\n"
    c.send("NICK alice")
    assert c.sync() == []  # no USER accepted yet: not registered
    c.send("USER alice 0 * :Alice A")
    assert c.recv().command == "001"


def test_malformed_lines_get_fail_and_the_connection_stays(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    alice.send_raw(b"PRIVMSG #dev :caf\xc3\x28\r\n")
    assert alice.recv().raw == b":chatroom.local FAIL * INVALID_UTF8 :line is not valid UTF-8\r\n"
    alice.send("PRIVMSG #dev :red \x1b[31malert")
    line = alice.recv()
    assert line.command == "FAIL" and line.params[:2] == ["PRIVMSG", "BAD_TEXT"]
    alice.send("PRIVMSG #dev :fine")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev fine\r\n"
    assert bob.sync() == []  # nothing of the refused lines


def test_messages_sent_at_once_arrive_whole_and_in_order(irc_server, irc, clients):
    """A read's PRIVMSGs to one channel go out as one fan-out; nothing is lost, reordered, or
    let through that a line on its own would not be."""
    server = irc_server()
    alice = irc(server, "alice", caps=("echo-message",))
    bob = irc(server, "bob")
    in_channel("#dev", alice, bob)
    in_channel("#ops", alice, bob)
    native = clients(server)
    native_in("dev", native)
    settle(alice, bob)
    burst = (b"PRIVMSG #dev :one\r\n"
             b"PRIVMSG #dev :\x02two\x02 bold\r\n"
             b"PRIVMSG #dev :red \x1b[31malert\r\n"          # refused in its place
             b"PRIVMSG #ops :elsewhere\r\n"                  # another channel in between
             b"PRIVMSG #dev :three\r\n"
             b"PRIVMSG #dev,#ops :to both\r\n"               # a list: on its own
             b"PRIVMSG #nowhere :lost\r\n"
             b"PRIVMSG #dev :four\r\n")
    alice.send_raw(burst)
    got = [(line.command, line.params) for line in alice.sync()]
    assert got == [("PRIVMSG", ["#dev", "one"]), ("PRIVMSG", ["#dev", "\x02two\x02 bold"]),
                   ("FAIL", ["PRIVMSG", "BAD_TEXT", got[2][1][2]]),
                   ("PRIVMSG", ["#ops", "elsewhere"]), ("PRIVMSG", ["#dev", "three"]),
                   ("PRIVMSG", ["#dev", "to both"]), ("PRIVMSG", ["#ops", "to both"]),
                   ("403", ["alice", "#nowhere", "No such channel"]),
                   ("PRIVMSG", ["#dev", "four"])]
    assert [(line.params[0], line.params[1]) for line in bob.sync()] == [
        ("#dev", "one"), ("#dev", "\x02two\x02 bold"), ("#ops", "elsewhere"), ("#dev", "three"),
        ("#dev", "to both"), ("#ops", "to both"), ("#dev", "four")]
    assert native.sync() == ["MSG dev alice one", "MSG dev alice two bold", "MSG dev alice three",
                             "MSG dev alice to both", "MSG dev alice four"]
    alice.send_raw(b"".join(b"PRIVMSG #dev :m%d\r\n" % i for i in range(200)))
    assert [line.params[1] for line in alice.sync()] == [f"m{i}" for i in range(200)]  # echoes
    assert [line.params[1] for line in bob.sync()] == [f"m{i}" for i in range(200)]


# == 2. commands ===================================================================================

def test_one_client_joins_at_most_100_channels(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    for start in range(0, 100, 50):
        alice.send("JOIN " + ",".join(f"#c{n}" for n in range(start, start + 50)))
    lines = raws(alice.sync())
    assert lines.count(b":chatroom.local 366 alice #c99 :End of /NAMES list\r\n") == 1
    alice.send("JOIN #c0,#c100")  # one it is in already, one more than the limit
    assert raws(alice.sync()) == [
        b":chatroom.local 405 alice #c100 :You have joined too many channels\r\n"]
    alice.send("PART #c0")
    alice.send("JOIN #c100")
    assert b":alice!~alice@127.0.0.1 JOIN #c100\r\n" in raws(alice.sync())


def test_join_names_and_join_zero(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    alice.send("JOIN #dev,#ops")
    assert raws(alice.sync()) == [
        b":alice!~alice@127.0.0.1 JOIN #dev\r\n",
        b":chatroom.local 353 alice = #dev @alice\r\n",
        b":chatroom.local 366 alice #dev :End of /NAMES list\r\n",
        b":alice!~alice@127.0.0.1 JOIN #ops\r\n",
        b":chatroom.local 353 alice = #ops @alice\r\n",
        b":chatroom.local 366 alice #ops :End of /NAMES list\r\n",
    ]
    bob.send("JOIN #DEV")  # channel names are case-insensitive: this is #dev
    assert raws(bob.sync()) == [
        b":bob!~bob@127.0.0.1 JOIN #dev\r\n",
        b":chatroom.local 353 bob = #dev :@alice bob\r\n",
        b":chatroom.local 366 bob #dev :End of /NAMES list\r\n",
    ]
    assert raws(alice.sync()) == [b":bob!~bob@127.0.0.1 JOIN #dev\r\n"]
    bob.send("JOIN #dev")  # already there: nothing
    assert bob.sync() == []
    bob.send("JOIN dev,#bad!name")
    assert raws(bob.sync()) == [
        b":chatroom.local 403 bob dev :No such channel\r\n",
        b":chatroom.local 403 bob #bad!name :No such channel\r\n",
    ]
    bob.send("JOIN")
    assert bob.recv().raw == b":chatroom.local 461 bob JOIN :Not enough parameters\r\n"
    alice.send("JOIN 0")
    assert raws(alice.sync()) == [
        b":alice!~alice@127.0.0.1 PART #dev :Left all channels\r\n",
        b":alice!~alice@127.0.0.1 PART #ops :Left all channels\r\n",
    ]
    assert raws(bob.sync()) == [b":alice!~alice@127.0.0.1 PART #dev :Left all channels\r\n"]
    bob.send("NAMES #dev,#ops")
    assert raws(bob.sync()) == [
        b":chatroom.local 353 bob = #dev bob\r\n",
        b":chatroom.local 366 bob #dev :End of /NAMES list\r\n",
        b":chatroom.local 366 bob #ops :End of /NAMES list\r\n",  # gone with its last member
    ]


def test_part(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    irc(server, "carol").join("#other")
    alice.send("PART #nowhere")
    assert alice.recv().raw == b":chatroom.local 403 alice #nowhere :No such channel\r\n"
    alice.send("PART #other")
    assert alice.recv().raw == b":chatroom.local 442 alice #other :You're not on that channel\r\n"
    alice.send("PART")
    assert alice.recv().raw == b":chatroom.local 461 alice PART :Not enough parameters\r\n"
    assert bob.sync() == []
    alice.send("PART #dev :see you later")
    for c in (alice, bob):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 PART #dev :see you later\r\n"
    alice.send("PRIVMSG #dev :after parting")
    assert alice.recv().raw == b":chatroom.local 404 alice #dev :Cannot send to channel\r\n"
    assert bob.sync() == []
    bob.send("PART #dev")
    assert bob.recv().raw == b":bob!~bob@127.0.0.1 PART #dev\r\n"


def test_privmsg_and_notice(irc_server, irc):
    server = irc_server()
    alice, bob, carol = irc(server, "alice"), irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", alice, bob)
    alice.send("PRIVMSG #dev :hello all")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev :hello all\r\n"
    alice.send("NOTICE #dev :a notice")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 NOTICE #dev :a notice\r\n"
    alice.send("PRIVMSG Bob :just you")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG bob :just you\r\n"
    alice.send("NOTICE bob :noticed")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 NOTICE bob noticed\r\n"
    alice.send("PRIVMSG #dev,carol :two targets")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev :two targets\r\n"
    assert carol.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG carol :two targets\r\n"
    assert alice.sync() == []  # nothing back to the sender without echo-message

    alice.send("PRIVMSG nobody :hi")
    assert alice.recv().raw == b":chatroom.local 401 alice nobody :No such nick/channel\r\n"
    alice.send("PRIVMSG #nowhere :hi")
    assert alice.recv().raw == b":chatroom.local 403 alice #nowhere :No such channel\r\n"
    carol.send("PRIVMSG #dev :from outside")  # #dev is +n
    assert carol.recv().raw == b":chatroom.local 404 carol #dev :Cannot send to channel\r\n"
    alice.send("PRIVMSG")
    assert alice.recv().raw == b":chatroom.local 411 alice :No recipient given (PRIVMSG)\r\n"
    alice.send("PRIVMSG bob")
    assert alice.recv().raw == b":chatroom.local 412 alice :No text to send\r\n"
    alice.send("PRIVMSG bob :")
    assert alice.recv().raw == b":chatroom.local 412 alice :No text to send\r\n"
    for line in ("NOTICE nobody :hi", "NOTICE #nowhere :hi", "NOTICE", "NOTICE bob", "NOTICE bob :"):
        alice.send(line)
    carol.send("NOTICE #dev :from outside")
    assert alice.sync() == [] and carol.sync() == []  # NOTICE never gets an error reply
    assert bob.sync() == []  # and nothing of those reached anyone


def test_names_with_multi_prefix_and_userhost_in_names(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob", caps=("multi-prefix",))
    carol = irc(server, "carol", caps=("userhost-in-names",))
    dave = irc(server, "dave", caps=("multi-prefix", "userhost-in-names"))
    in_channel("#dev", alice, bob, carol, dave)
    alice.send("MODE #dev +vv alice bob")
    settle(alice, bob, carol, dave)
    expected = {
        alice: b":chatroom.local 353 alice = #dev :@alice +bob carol dave\r\n",
        bob: b":chatroom.local 353 bob = #dev :@+alice +bob carol dave\r\n",
        carol: b":chatroom.local 353 carol = #dev :@alice!~alice@127.0.0.1 +bob!~bob@127.0.0.1 "
               b"carol!~carol@127.0.0.1 dave!~dave@127.0.0.1\r\n",
        dave: b":chatroom.local 353 dave = #dev :@+alice!~alice@127.0.0.1 +bob!~bob@127.0.0.1 "
              b"carol!~carol@127.0.0.1 dave!~dave@127.0.0.1\r\n",
    }
    for c, names in expected.items():
        c.send("NAMES #dev")
        assert raws(c.sync()) == [names, f":chatroom.local 366 {c.nick} #dev :End of /NAMES list\r\n".encode()]
    alice.send("NAMES")
    assert alice.recv().raw == b":chatroom.local 366 alice * :End of /NAMES list\r\n"
    alice.send("NAMES #nowhere")
    assert alice.recv().raw == b":chatroom.local 366 alice #nowhere :End of /NAMES list\r\n"


def test_who_by_channel_nick_and_mask(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob")
    in_channel("#dev", alice, bob)
    carol = irc(server, "carol")
    carol.send("MODE carol +i")
    carol.sync()
    alice.send("MODE #dev +v bob")
    bob.send("AWAY :out")
    settle(alice, bob)
    alice.send("WHO #dev")
    assert raws(alice.sync()) == [
        b":chatroom.local 352 alice #dev ~alice 127.0.0.1 chatroom.local alice H@ :0 alice real\r\n",
        b":chatroom.local 352 alice #dev ~bob 127.0.0.1 chatroom.local bob G+ :0 bob real\r\n",
        b":chatroom.local 315 alice #dev :End of WHO list\r\n",
    ]
    alice.send("WHO BOB")
    assert raws(alice.sync()) == [
        b":chatroom.local 352 alice #dev ~bob 127.0.0.1 chatroom.local bob G+ :0 bob real\r\n",
        b":chatroom.local 315 alice BOB :End of WHO list\r\n",
    ]
    alice.send("WHO b?b")
    assert raws(alice.sync()) == [
        b":chatroom.local 352 alice #dev ~bob 127.0.0.1 chatroom.local bob G+ :0 bob real\r\n",
        b":chatroom.local 315 alice b?b :End of WHO list\r\n",
    ]
    alice.send("WHO *")  # carol is +i and shares no channel with alice: not listed
    assert [line.params[5] for line in alice.sync()[:-1]] == ["alice", "bob"]
    alice.send("WHO carol")  # an exact nickname finds her all the same
    assert raws(alice.sync()) == [
        b":chatroom.local 352 alice * ~carol 127.0.0.1 chatroom.local carol H :0 carol real\r\n",
        b":chatroom.local 315 alice carol :End of WHO list\r\n",
    ]
    alice.send("WHO nobody")
    assert raws(alice.sync()) == [b":chatroom.local 315 alice nobody :End of WHO list\r\n"]


def test_whox_gives_the_fields_asked_for_in_their_order(irc_server, irc, clients):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob")
    in_channel("#dev", alice, bob)
    alice.send("MODE #dev +v bob")
    bob.send("AWAY :out")
    settle(alice, bob)
    for fields in ("%tcuihsnfdlaor,123", "%roaldfnshiuct,123"):  # the order asked is not the order
        alice.send(f"WHO bob {fields}")
        reply, end = alice.sync()
        assert reply.command == "354" and end.command == "315"
        assert reply.params[:10] == ["alice", "123", "#dev", "~bob", "127.0.0.1", "127.0.0.1",
                                     "chatroom.local", "bob", "G+", "0"]
        assert reply.params[10].isdigit()  # idle seconds
        assert reply.params[11:] == ["0", "n/a", "bob real"]  # no account; op level; real name
    alice.send("WHO #dev %na")
    assert raws(alice.sync()) == [b":chatroom.local 354 alice alice 0\r\n",
                                  b":chatroom.local 354 alice bob 0\r\n",
                                  b":chatroom.local 315 alice #dev :End of WHO list\r\n"]
    alice.send("WHO bob %tn,abcd")  # a token is 1 to 3 digits: another is left out
    assert raws(alice.sync())[0] == b":chatroom.local 354 alice bob\r\n"
    native = clients(server)  # a native user, as IRC users see them
    native.send("JOIN dev")
    native.sync()
    settle(alice)
    nick = native.id.replace(":", "-").replace(".", "-")
    alice.send(f"WHO {nick} %cnr")
    assert raws(alice.sync())[0] == f":chatroom.local 354 alice #dev {nick} {nick}\r\n".encode()


def test_whois(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    bob.join("#ops")
    bob.send("AWAY :gone fishing")
    bob.sync()
    alice.send("WHOIS Bob")
    lines = alice.sync()
    assert [line.command for line in lines] == ["311", "319", "312", "301", "317", "318"]
    assert lines[0].raw == b":chatroom.local 311 alice bob ~bob 127.0.0.1 * :bob real\r\n"
    assert lines[1].raw == b":chatroom.local 319 alice bob :#dev @#ops\r\n"
    assert lines[2].raw == b":chatroom.local 312 alice bob chatroom.local chatroom\r\n"
    assert lines[3].raw == b":chatroom.local 301 alice bob :gone fishing\r\n"
    assert lines[4].params[:2] == ["alice", "bob"] and lines[4].params[-1] == "seconds idle, signon time"
    assert abs(int(lines[4].params[3]) - time.time()) < 60
    assert lines[5].raw == b":chatroom.local 318 alice bob :End of /WHOIS list\r\n"
    alice.send("WHOIS nobody")
    assert raws(alice.sync()) == [
        b":chatroom.local 401 alice nobody :No such nick/channel\r\n",
        b":chatroom.local 318 alice nobody :End of /WHOIS list\r\n",
    ]


def test_list(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    alice.join("#ops")
    alice.send("TOPIC #ops :ops only")
    alice.sync()
    bob.send("LIST")
    assert raws(bob.sync()) == [
        b":chatroom.local 321 bob Channel :Users  Name\r\n",
        b":chatroom.local 322 bob #dev 2 :\r\n",
        b":chatroom.local 322 bob #ops 1 :ops only\r\n",
        b":chatroom.local 323 bob :End of /LIST\r\n",
    ]
    bob.send("LIST #ops,#nowhere")
    assert raws(bob.sync()) == [
        b":chatroom.local 321 bob Channel :Users  Name\r\n",
        b":chatroom.local 322 bob #ops 1 :ops only\r\n",
        b":chatroom.local 323 bob :End of /LIST\r\n",
    ]


def test_topic(irc_server, irc):
    server = irc_server()
    alice, bob, carol = irc(server, "alice"), irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", alice, bob)
    alice.send("TOPIC #dev")
    assert alice.recv().raw == b":chatroom.local 331 alice #dev :No topic is set\r\n"
    bob.send("TOPIC #dev :bob's topic")  # #dev is +t and bob is no operator
    assert bob.recv().raw == b":chatroom.local 482 bob #dev :You're not channel operator\r\n"
    carol.send("TOPIC #dev :from outside")
    assert carol.recv().raw == b":chatroom.local 442 carol #dev :You're not on that channel\r\n"
    carol.send("TOPIC #nowhere")
    assert carol.recv().raw == b":chatroom.local 403 carol #nowhere :No such channel\r\n"
    assert alice.sync() == [] and bob.sync() == []
    alice.send("TOPIC #dev :Release on Friday")
    for c in (alice, bob):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 TOPIC #dev :Release on Friday\r\n"
    assert carol.sync() == []
    bob.send("TOPIC #dev")
    reply, who = bob.recv(), bob.recv()
    assert reply.raw == b":chatroom.local 332 bob #dev :Release on Friday\r\n"
    assert who.command == "333" and who.params[:3] == ["bob", "#dev", "alice"]
    assert abs(int(who.params[3]) - time.time()) < 60
    lines = carol.join("#dev")  # a newcomer is told the topic
    assert [line.command for line in lines] == ["JOIN", "332", "333", "353", "366"]
    assert lines[1].raw == b":chatroom.local 332 carol #dev :Release on Friday\r\n"
    alice.send("MODE #dev -t")
    settle(alice, bob, carol)
    bob.send("TOPIC #dev :anyone may")
    for c in (alice, bob, carol):
        assert c.recv().raw == b":bob!~bob@127.0.0.1 TOPIC #dev :anyone may\r\n"


def test_channel_modes(irc_server, irc):
    server = irc_server()
    alice, bob, carol = irc(server, "alice"), irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", alice, bob, carol)
    bob.send("MODE #dev")
    mode, created = bob.recv(), bob.recv()
    assert mode.raw == b":chatroom.local 324 bob #dev +nt\r\n"
    assert created.command == "329" and created.params[:2] == ["bob", "#dev"]
    assert abs(int(created.params[2]) - time.time()) < 60
    bob.send("MODE #dev +m")
    assert bob.recv().raw == b":chatroom.local 482 bob #dev :You're not channel operator\r\n"
    alice.send("MODE #dev +o bob")
    for c in (alice, bob, carol):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 MODE #dev +o bob\r\n"
    bob.send("MODE #dev +m")
    for c in (alice, bob, carol):
        assert c.recv().raw == b":bob!~bob@127.0.0.1 MODE #dev +m\r\n"
    carol.send("PRIVMSG #dev :may I?")
    assert carol.recv().raw == b":chatroom.local 404 carol #dev :Cannot send to channel\r\n"
    bob.send("PRIVMSG #dev :ops may")
    for c in (alice, carol):
        assert c.recv().raw == b":bob!~bob@127.0.0.1 PRIVMSG #dev :ops may\r\n"
    bob.send("MODE #dev +v carol")
    for c in (alice, bob, carol):
        assert c.recv().raw == b":bob!~bob@127.0.0.1 MODE #dev +v carol\r\n"
    carol.send("PRIVMSG #dev :voiced now")
    for c in (alice, bob):
        assert c.recv().raw == b":carol!~carol@127.0.0.1 PRIVMSG #dev :voiced now\r\n"
    bob.send("MODE #dev -v carol")
    for c in (alice, bob, carol):
        assert c.recv().raw == b":bob!~bob@127.0.0.1 MODE #dev -v carol\r\n"
    alice.send("MODE #dev -o bob")
    for c in (alice, bob, carol):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 MODE #dev -o bob\r\n"
    bob.send("MODE #dev -m")
    assert bob.recv().raw == b":chatroom.local 482 bob #dev :You're not channel operator\r\n"
    alice.send("MODE #dev -m+z")
    assert alice.recv().raw == b":chatroom.local 472 alice z :is an unknown mode char to me\r\n"
    for c in (alice, bob, carol):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 MODE #dev -m\r\n"
    carol.send("PRIVMSG #dev :free again")
    for c in (alice, bob):
        assert c.recv().raw == b":carol!~carol@127.0.0.1 PRIVMSG #dev :free again\r\n"
    alice.send("MODE #dev +o nobody")
    assert alice.recv().raw == b":chatroom.local 401 alice nobody :No such nick/channel\r\n"
    alice.send("MODE #nowhere")
    assert alice.recv().raw == b":chatroom.local 403 alice #nowhere :No such channel\r\n"
    alice.send("MODE #dev b")  # the ban list: always empty
    assert alice.recv().raw == b":chatroom.local 368 alice #dev :End of channel ban list\r\n"
    bob.send("MODE #dev")
    assert bob.recv().raw == b":chatroom.local 324 bob #dev +nt\r\n"
    assert bob.recv().command == "329"
    assert alice.sync() == [] and bob.sync() == [] and carol.sync() == []


def test_user_modes(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    alice.send("MODE alice")
    assert alice.recv().raw == b":chatroom.local 221 alice +\r\n"
    alice.send("MODE alice +i")
    assert alice.recv().raw == b":alice!~alice@127.0.0.1 MODE alice +i\r\n"
    alice.send("MODE alice")
    assert alice.recv().raw == b":chatroom.local 221 alice +i\r\n"
    alice.send("MODE bob +i")
    assert alice.recv().raw == b":chatroom.local 502 alice :Can't change mode for other users\r\n"
    alice.send("MODE alice +x")
    assert alice.recv().raw == b":chatroom.local 501 alice :Unknown MODE flag\r\n"
    alice.send("MODE nobody")
    assert alice.recv().raw == b":chatroom.local 401 alice nobody :No such nick/channel\r\n"
    bob.send("LUSERS")
    assert bob.recv().raw == b":chatroom.local 251 bob :There are 1 users and 1 invisible on 1 servers\r\n"
    bob.sync()
    alice.send("MODE alice -i")
    assert alice.recv().raw == b":alice!~alice@127.0.0.1 MODE alice -i\r\n"
    assert bob.sync() == []  # one's user modes are news to nobody else


def test_kick(irc_server, irc):
    server = irc_server()
    alice, bob, carol = irc(server, "alice"), irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", alice, bob)
    bob.send("KICK #dev alice")
    assert bob.recv().raw == b":chatroom.local 482 bob #dev :You're not channel operator\r\n"
    alice.send("KICK #dev carol")
    assert alice.recv().raw == b":chatroom.local 441 alice carol #dev :They aren't on that channel\r\n"
    alice.send("KICK #dev nobody")
    assert alice.recv().raw == b":chatroom.local 401 alice nobody :No such nick/channel\r\n"
    carol.send("KICK #dev bob")
    assert carol.recv().raw == b":chatroom.local 442 carol #dev :You're not on that channel\r\n"
    alice.send("KICK #dev")
    assert alice.recv().raw == b":chatroom.local 461 alice KICK :Not enough parameters\r\n"
    assert bob.sync() == []
    alice.send("KICK #dev bob :please behave")
    for c in (alice, bob):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 KICK #dev bob :please behave\r\n"
    alice.send("NAMES #dev")
    assert alice.recv().raw == b":chatroom.local 353 alice = #dev @alice\r\n"
    bob.send("PRIVMSG #dev :let me back")
    assert bob.recv().raw == b":chatroom.local 404 bob #dev :Cannot send to channel\r\n"
    alice.send("PRIVMSG #dev :bob is out")
    alice.sync()
    assert bob.sync() == []
    bob.join("#dev")
    settle(alice)
    alice.send("KICK #dev bob")  # no reason: the kicker's nickname
    for c in (alice, bob):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 KICK #dev bob alice\r\n"


def test_away(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob", caps=("away-notify",))
    carol = irc(server, "carol")
    in_channel("#dev", alice, bob, carol)
    alice.send("AWAY :at lunch")
    assert alice.recv().raw == b":chatroom.local 306 alice :You have been marked as being away\r\n"
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 AWAY :at lunch\r\n"
    assert carol.sync() == []  # no away-notify: not told
    carol.send("PRIVMSG alice :are you there?")
    assert carol.recv().raw == b":chatroom.local 301 carol alice :at lunch\r\n"
    assert alice.recv().raw == b":carol!~carol@127.0.0.1 PRIVMSG alice :are you there?\r\n"
    carol.send("NOTICE alice :no reply to notices")
    assert alice.recv().command == "NOTICE"
    assert carol.sync() == []
    carol.send("USERHOST alice bob")
    assert carol.recv().raw == b":chatroom.local 302 carol :alice=-~alice@127.0.0.1 bob=+~bob@127.0.0.1\r\n"
    alice.send("AWAY")
    assert alice.recv().raw == b":chatroom.local 305 alice :You are no longer marked as being away\r\n"
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 AWAY\r\n"
    carol.send("PRIVMSG alice :back?")
    assert carol.sync() == []  # no 301 any more


def test_ison_userhost_and_ping(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    alice.send("ISON BOB nobody alice")
    assert alice.recv().raw == b":chatroom.local 303 alice :bob alice\r\n"
    alice.send("ISON :bob nobody")
    assert alice.recv().raw == b":chatroom.local 303 alice bob\r\n"
    alice.send("ISON nobody")
    assert alice.recv().raw == b":chatroom.local 303 alice :\r\n"
    alice.send("USERHOST bob nobody")
    assert alice.recv().raw == b":chatroom.local 302 alice bob=+~bob@127.0.0.1\r\n"
    alice.send("USERHOST")
    assert alice.recv().raw == b":chatroom.local 461 alice USERHOST :Not enough parameters\r\n"
    alice.send("PING :a token with spaces")
    assert alice.recv().raw == b":chatroom.local PONG chatroom.local :a token with spaces\r\n"
    alice.send("PING")
    assert alice.recv().raw == b":chatroom.local 409 alice :No origin specified\r\n"
    alice.send("PONG :whatever")  # an unasked PONG is harmless
    assert alice.sync() == [] and bob.sync() == []


def test_quit(irc_server, irc):
    server = irc_server()
    alice, bob, carol = irc(server, "alice"), irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", alice, bob)
    alice.send("QUIT :off to bed")
    assert alice.expect_closed() == [b"ERROR :Closing link: 127.0.0.1 (Quit: off to bed)\r\n"]
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 QUIT :Quit: off to bed\r\n"
    assert carol.sync() == []  # shares no channel with alice
    server.wait_for(r"Connection closed with 127\.0\.0\.1:\d+ \(quit: off to bed\)")
    bob.send("ISON alice")
    assert bob.recv().raw == b":chatroom.local 303 bob :\r\n"
    carol.join("#dev")
    settle(bob)
    carol.send("QUIT")
    assert carol.expect_closed() == [b"ERROR :Closing link: 127.0.0.1 (Quit)\r\n"]
    assert bob.recv().raw == b":carol!~carol@127.0.0.1 QUIT Quit\r\n"
    dave = irc(server, "dave")
    dave.join("#dev")
    settle(bob)
    dave.close()  # vanishes without a word
    assert bob.recv().raw == b":dave!~dave@127.0.0.1 QUIT disconnected\r\n"
    quitter = irc(server)  # before registration too
    quitter.send("QUIT :never mind")
    assert quitter.expect_closed() == [b"ERROR :Closing link: 127.0.0.1 (Quit: never mind)\r\n"]
    assert bob.sync() == []


# == 3. IRCv3 =======================================================================================

MSGID = re.compile(r"\S+")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_message_tags_relay_client_tags_to_those_who_asked(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob", caps=("message-tags",))
    carol = irc(server, "carol")
    in_channel("#dev", alice, bob, carol)
    alice.send(r"@+example.org/mood=very\shappy;label=server-only;+draft/react=x PRIVMSG #dev :tagged")
    got = bob.recv()
    assert got.raw.endswith(b" :alice!~alice@127.0.0.1 PRIVMSG #dev tagged\r\n")
    assert set(got.tags) == {"msgid", "+example.org/mood", "+draft/react"}
    assert got.tags["+example.org/mood"] == "very happy" and got.tags["+draft/react"] == "x"
    assert MSGID.fullmatch(got.tags["msgid"])
    assert carol.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev tagged\r\n"
    alice.send("PRIVMSG #dev :untagged")
    again = bob.recv()
    assert set(again.tags) == {"msgid"} and again.tags["msgid"] != got.tags["msgid"]
    assert again.raw.endswith(b" :alice!~alice@127.0.0.1 PRIVMSG #dev untagged\r\n")
    assert carol.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev untagged\r\n"
    alice.send("@+draft/react=y PRIVMSG bob :private tags")
    private = bob.recv()
    assert private.tags.keys() == {"msgid", "+draft/react"} and private.params == ["bob", "private tags"]
    assert carol.sync() == []


def test_server_time_tags_messages_with_utc_milliseconds(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob", caps=("server-time",))
    in_channel("#dev", alice, bob)
    before = datetime.now(timezone.utc)
    alice.send("@+draft/react=x PRIVMSG #dev :what time is it")
    got = bob.recv()
    after = datetime.now(timezone.utc)
    assert set(got.tags) == {"time"}  # no msgid nor client tags without message-tags
    assert TIME.fullmatch(got.tags["time"])
    stamp = datetime.strptime(got.tags["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    # Rounded to the nearest millisecond: up to half of one either side of the true time.
    half_ms = timedelta(microseconds=500)
    assert before - half_ms <= stamp <= after + half_ms
    assert got.raw.endswith(b" :alice!~alice@127.0.0.1 PRIVMSG #dev :what time is it\r\n")
    both = irc(server, "carol", caps=("server-time", "message-tags"))
    both.join("#dev")
    alice.send("PRIVMSG #dev :both tags")
    got = both.expect("PRIVMSG")
    assert set(got.tags) == {"time", "msgid"} and TIME.fullmatch(got.tags["time"])


def test_echo_message_returns_own_messages_to_the_sender_only(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=("echo-message",))
    bob, carol = irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", alice, bob)
    alice.send("PRIVMSG #dev :echoed")
    for c in (alice, bob):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev echoed\r\n"
    alice.send("NOTICE carol :echoed privately")
    for c in (alice, carol):
        assert c.recv().raw == b":alice!~alice@127.0.0.1 NOTICE carol :echoed privately\r\n"
    assert alice.sync() == [] and bob.sync() == [] and carol.sync() == []  # once each
    bob.send("PRIVMSG #dev :not echoed")
    assert alice.recv().raw == b":bob!~bob@127.0.0.1 PRIVMSG #dev :not echoed\r\n"
    assert bob.sync() == []
    # Asked for after registration, in a channel: bob's echo carries the msgid the others get.
    bob.send("CAP REQ :echo-message message-tags")
    assert bob.recv().raw == b":chatroom.local CAP bob ACK :echo-message message-tags\r\n"
    carol.send("CAP REQ message-tags")
    assert carol.recv().raw == b":chatroom.local CAP carol ACK message-tags\r\n"
    carol.join("#dev")
    settle(alice, bob)
    bob.send("PRIVMSG #dev :tagged echo")
    mine, theirs = bob.recv(), carol.recv()
    assert mine.raw == theirs.raw
    assert mine.raw.endswith(b" :bob!~bob@127.0.0.1 PRIVMSG #dev :tagged echo\r\n")
    assert alice.recv().raw == b":bob!~bob@127.0.0.1 PRIVMSG #dev :tagged echo\r\n"
    bob.send("CAP REQ :-echo-message")
    assert bob.recv().raw == b":chatroom.local CAP bob ACK -echo-message\r\n"
    bob.send("PRIVMSG #dev :no echo again")
    assert alice.recv().raw == b":bob!~bob@127.0.0.1 PRIVMSG #dev :no echo again\r\n"
    assert bob.sync() == []


def test_tagmsg(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice")
    bob = irc(server, "bob", caps=("message-tags",))
    carol = irc(server, "carol")
    in_channel("#dev", alice, bob, carol)
    alice.send("@+typing=active TAGMSG #dev")
    got = bob.recv()
    assert got.command == "TAGMSG" and got.source == "alice!~alice@127.0.0.1" and got.params == ["#dev"]
    assert set(got.tags) == {"msgid", "+typing"} and got.tags["+typing"] == "active"
    alice.send("@+typing=paused TAGMSG bob")
    got = bob.recv()
    assert got.command == "TAGMSG" and got.params == ["bob"] and got.tags["+typing"] == "paused"
    alice.send("@+typing=done TAGMSG carol")
    alice.send("TAGMSG #dev")  # no client tags: nothing to relay
    assert alice.sync() == []
    assert carol.sync() == [] and bob.sync() == []


def test_overlong_line_gets_417_and_the_connection_stays(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    head = "PRIVMSG #dev :"
    longest = "a" * (510 - len(head))  # 510 bytes and CRLF: exactly 512
    alice.send(head + longest)
    # Relayed with its source the line would pass 512 bytes: it is cut there, as text.
    relayed = f":alice!~alice@127.0.0.1 PRIVMSG #dev :{longest}"[:510]
    assert len(relayed) == 510 and relayed.endswith("a")
    assert bob.recv().raw == f"{relayed}\r\n".encode()
    alice.send(head + longest + "b")
    assert alice.recv().raw == b":chatroom.local 417 alice :Input line was too long\r\n"
    alice.send(head + "x" * 2000)
    assert alice.recv().raw == b":chatroom.local 417 alice :Input line was too long\r\n"
    alice.send("PRIVMSG #dev :short again")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev :short again\r\n"
    assert bob.sync() == []  # nothing of the long ones


def test_cr_only_and_lf_only_line_endings(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    alice.send_raw(b"PRIVMSG #dev :cr only\rPRIVMSG #dev :lf only\nPRIVMSG #dev :crlf\r\n")
    assert raws([bob.recv(), bob.recv(), bob.recv()]) == [
        b":alice!~alice@127.0.0.1 PRIVMSG #dev :cr only\r\n",
        b":alice!~alice@127.0.0.1 PRIVMSG #dev :lf only\r\n",
        b":alice!~alice@127.0.0.1 PRIVMSG #dev crlf\r\n",
    ]
    c = irc(server)  # a whole registration with bare LF
    c.send_raw(b"NICK lf\nUSER lf 0 * :LF user\n")
    assert c.recv().command == "001"
    d = irc(server)  # and with bare CR
    d.send_raw(b"NICK cr\rUSER cr 0 * :CR user\r")
    assert d.recv().command == "001"


# == 4. native and IRC clients in one room ===========================================================

def test_native_and_irc_members_of_one_room_hear_each_other(irc_server, irc, clients):
    server = irc_server()
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    native_in("dev", nat)
    alice = irc(server, "alice")
    assert raws(alice.join("#dev")) == [
        b":alice!~alice@127.0.0.1 JOIN #dev\r\n",
        b":chatroom.local 353 alice = #dev :@nat alice\r\n",  # the native user made the room
        b":chatroom.local 366 alice #dev :End of /NAMES list\r\n",
    ]
    assert nat.recv_line() == "JOIN dev alice"
    nat.send("SEND hello irc")
    assert alice.recv().raw == b":nat!~native@127.0.0.1 PRIVMSG #dev :hello irc\r\n"
    alice.send("PRIVMSG #dev :hello native")
    assert nat.recv_line() == "MSG dev alice hello native"
    alice.send("NOTICE #dev :a notice")
    assert nat.recv_line() == "MSG dev alice a notice"
    nat.send("WHO")
    assert nat.recv_line() == "WHO dev nat alice"
    alice.send("WHO #dev")
    assert raws(alice.sync()) == [
        b":chatroom.local 352 alice #dev ~native 127.0.0.1 chatroom.local nat H@ :0 nat\r\n",
        b":chatroom.local 352 alice #dev ~alice 127.0.0.1 chatroom.local alice H :0 alice real\r\n",
        b":chatroom.local 315 alice #dev :End of WHO list\r\n",
    ]
    alice.send("NICK alicia")
    assert nat.recv_line() == "NICK alice alicia"
    nat.send("NICK natalie")
    assert nat.recv_line() == "NICK nat natalie"
    assert raws(alice.sync()) == [b":alice!~alice@127.0.0.1 NICK alicia\r\n",
                                  b":nat!~native@127.0.0.1 NICK natalie\r\n"]
    alice.send("PART #dev :brb")
    assert nat.recv_line() == "PART dev alicia brb"
    alice.join("#dev")
    assert nat.recv_line() == "JOIN dev alicia"
    nat.send("JOIN lobby")
    assert nat.recv_line() == "JOIN lobby natalie"
    assert alice.recv().raw == b":natalie!~native@127.0.0.1 PART #dev join\r\n"
    nat.send("JOIN dev")
    assert alice.recv().raw == b":natalie!~native@127.0.0.1 JOIN #dev\r\n"
    alice.send("QUIT :gone home")
    assert nat.expect("PART dev alicia", skip=("JOIN ",)) == "PART dev alicia quit: gone home"
    assert nat.sync() == []


def test_native_quit_and_disconnect_seen_on_irc(irc_server, irc, clients):
    server = irc_server()
    alice = irc(server, "alice")
    alice.join("#lobby")  # the native protocol's lobby
    nat, other = clients(server), clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    nat.send("QUIT see you")
    assert nat.expect_closed() == ["BYE quit"]
    assert raws(alice.sync()) == [
        f":{dashed(nat)}!~native@127.0.0.1 JOIN #lobby\r\n".encode(),
        f":{dashed(other)}!~native@127.0.0.1 JOIN #lobby\r\n".encode(),
        f":{dashed(nat)}!~native@127.0.0.1 NICK nat\r\n".encode(),
        b":nat!~native@127.0.0.1 QUIT :Quit: see you\r\n",
    ]
    name = dashed(other)
    other.close()
    assert alice.recv().raw == f":{name}!~native@127.0.0.1 QUIT disconnected\r\n".encode()


def test_private_messages_between_native_and_irc(irc_server, irc, clients):
    server = irc_server()
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    alice = irc(server, "alice")  # shares no room with nat
    nat.send("TELL ALICE psst, over here")
    assert alice.recv().raw == b":nat!~native@127.0.0.1 PRIVMSG alice :psst, over here\r\n"
    alice.send("PRIVMSG Nat :hi back")
    assert nat.recv_line() == "TELL alice hi back"
    alice.send("NOTICE nat :a notice")
    assert nat.recv_line() == "TELL alice a notice"
    alice.send("WHOIS nat")
    assert alice.recv().raw == b":chatroom.local 311 alice nat ~native 127.0.0.1 * nat\r\n"
    alice.sync()
    nat.send("TELL nobody hello")
    assert nat.recv_line().startswith("ERR no-such-nick ")
    assert alice.sync() == [] and nat.sync() == []


def test_native_without_nickname_is_known_on_irc_by_its_dashed_id(irc_server, irc, clients):
    server = irc_server()
    anon = clients(server)
    port = anon.sock.getsockname()[1]
    assert anon.id == f"127.0.0.1:{port}"
    name = f"127-0-0-1-{port}"
    native_in("dev", anon)
    alice = irc(server, "alice")
    assert alice.join("#dev")[1].raw == f":chatroom.local 353 alice = #dev :@{name} alice\r\n".encode()
    assert anon.recv_line() == "JOIN dev alice"
    anon.send("SEND who am I")
    assert alice.recv().raw == f":{name}!~native@127.0.0.1 PRIVMSG #dev :who am I\r\n".encode()
    alice.send(f"PRIVMSG {name} :you are {name}")
    assert anon.recv_line() == f"TELL alice you are {name}"
    alice.send(f"WHOIS {name}")
    assert alice.until("318")[0].raw == \
        f":chatroom.local 311 alice {name} ~native 127.0.0.1 * {name}\r\n".encode()
    anon.send(f"TELL alice {anon.id} here")
    assert alice.recv().raw == f":{name}!~native@127.0.0.1 PRIVMSG alice :{anon.id} here\r\n".encode()
    other = clients(server)
    other.send(f"NICK {name}")  # the IRC form of an id is no nickname anyone may take
    assert other.recv_line().startswith("ERR nick-invalid ")
    other.send("NICK 127-0-0-1-5555")
    assert other.recv_line().startswith("ERR nick-invalid ")
    alice.send("NICK 127-0-0-1-5555")
    assert alice.recv().raw == b":chatroom.local 432 alice 127-0-0-1-5555 :Erroneous nickname\r\n"
    anon.send("NICK named")
    assert anon.recv_line() == f"NICK {anon.id} named"
    assert alice.recv().raw == f":{name}!~native@127.0.0.1 NICK named\r\n".encode()
    alice.send(f"PRIVMSG {name} :still there?")  # the id form keeps working
    assert anon.recv_line() == "TELL alice still there?"


def test_irc_formatting_reaches_irc_unchanged_and_native_stripped(irc_server, irc, clients):
    server = irc_server()
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    native_in("dev", nat)
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    settle(nat)
    alice.send("PRIVMSG #dev :\x02bold\x02 and \x0304red\x03, \x0312,04blue on red\x0f, \x1ditalic\x1d")
    assert bob.recv().raw == (b":alice!~alice@127.0.0.1 PRIVMSG #dev :\x02bold\x02 and \x0304red\x03, "
                              b"\x0312,04blue on red\x0f, \x1ditalic\x1d\r\n")
    assert nat.recv_line() == "MSG dev alice bold and red, blue on red, italic"
    alice.send("PRIVMSG #dev :\x01ACTION waves\x01")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev :\x01ACTION waves\x01\r\n"
    assert nat.recv_line() == "MSG dev alice * waves"
    alice.send("PRIVMSG #dev :\x01VERSION\x01")  # other CTCP is not for terminal users
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev \x01VERSION\x01\r\n"
    alice.send("PRIVMSG nat :\x02psst\x02 in bold")
    assert nat.recv_line() == "TELL alice psst in bold"
    assert nat.sync() == []
    nat.send("SEND plain \u00e9t\u00e9")
    assert alice.recv().raw == ":nat!~native@127.0.0.1 PRIVMSG #dev :plain \u00e9t\u00e9\r\n".encode()


def test_one_nickname_namespace_for_native_and_irc(irc_server, irc, clients):
    server = irc_server()
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    c = irc(server)
    c.send("NICK NAT")
    assert c.recv().raw == b":chatroom.local 433 * NAT :Nickname is already in use\r\n"
    c.send("NICK alice")
    c.send("USER alice 0 * :Alice")
    c.until("422")
    nat.send("NICK Alice")
    assert nat.recv_line() == "ERR nick-taken nickname 'Alice' is in use"
    c.send("NICK nat")
    assert c.recv().raw == b":chatroom.local 433 alice nat :Nickname is already in use\r\n"
    nat.send("QUIT")
    nat.expect_closed()
    server.wait_for(r"Connection closed with .* \(quit\)")
    c.send("NICK nat")  # free once its holder left
    assert c.recv().raw == b":alice!~alice@127.0.0.1 NICK nat\r\n"
    n2 = clients(server)
    n2.send("NICK alice")  # and the IRC user's old one is free too
    assert n2.recv_line() == f"NICK {n2.id} alice"


def test_irc_op_kicks_native_members(irc_server, irc, clients):
    server = irc_server()
    alice = irc(server, "alice")
    alice.join("#lobby", "#dev")  # alice made both rooms: she is their operator
    nat = clients(server)
    nat.send("NICK nat")
    native_in("dev", nat)
    settle(alice)
    alice.send("KICK #dev nat :not here")
    assert alice.recv().raw == b":alice!~alice@127.0.0.1 KICK #dev nat :not here\r\n"
    assert nat.recv_line() == "PART dev nat kicked by alice: not here"
    assert nat.recv_line() == "JOIN lobby nat"  # a native user has to be somewhere: back to the lobby
    assert alice.recv().raw == b":nat!~native@127.0.0.1 JOIN #lobby\r\n"
    alice.send("KICK #lobby nat")  # out of the lobby itself: out of the server
    assert alice.recv().raw == b":alice!~alice@127.0.0.1 KICK #lobby nat alice\r\n"
    assert nat.expect_closed()[-1] == "BYE kicked"
    assert alice.sync() == []
    alice.send("ISON nat")
    assert alice.recv().raw == b":chatroom.local 303 alice :\r\n"


def test_native_kicked_from_the_lobby_is_told_by_whom_and_why(irc_server, irc, clients):
    server = irc_server()
    alice = irc(server, "alice")
    alice.join("#lobby")
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    settle(alice)
    alice.send("KICK #lobby nat :spamming")
    assert alice.recv().raw == b":alice!~alice@127.0.0.1 KICK #lobby nat spamming\r\n"
    assert nat.expect_closed() == ["PART lobby nat kicked by alice: spamming", "BYE kicked"]


def test_ison_and_userhost_find_a_native_user_without_nickname(irc_server, irc, clients):
    server = irc_server()
    anon = clients(server)
    name = dashed(anon)
    alice = irc(server, "alice")
    alice.send(f"WHOIS {name}")
    assert alice.recv().command == "311"  # known by that name
    alice.sync()
    alice.send(f"ISON {name}")
    assert alice.recv().raw == f":chatroom.local 303 alice {name}\r\n".encode()
    alice.send(f"USERHOST {name}")
    assert alice.recv().raw == f":chatroom.local 302 alice {name}=+~native@127.0.0.1\r\n".encode()


def test_irc_part_and_kick_reasons_reach_native_users_stripped(irc_server, irc, clients):
    server = irc_server()
    alice = irc(server, "alice")
    alice.join("#dev")
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    native_in("dev", nat)
    bob = irc(server, "bob")
    bob.join("#dev")
    assert nat.recv_line() == "JOIN dev bob"
    bob.send("PART #dev :\x02bold\x02 exit")
    assert nat.recv_line() == "PART dev bob bold exit"
    alice.send("KICK #dev nat :\x0304red\x03 card")
    assert nat.recv_line() == "PART dev nat kicked by alice: red card"


# == 5. one IRC client in several rooms =============================================================

def test_irc_client_in_two_rooms_next_to_a_native_one(irc_server, irc, clients):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#a", alice, bob)
    in_channel("#b", alice, bob)
    nat = clients(server)
    nat.send("NICK nat")
    nat.expect("NICK ")
    native_in("a", nat)
    settle(alice, bob)
    alice.send("PRIVMSG #b :only b")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #b :only b\r\n"
    alice.send("PRIVMSG #a :only a")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #a :only a\r\n"
    assert nat.recv_line() == "MSG a alice only a"
    assert nat.sync() == []  # #b never reached room a
    alice.send("NICK alicia")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 NICK alicia\r\n"
    assert nat.recv_line() == "NICK alice alicia"
    assert bob.sync() == [] and nat.sync() == []  # once, not once per shared room
    alice.send("QUIT :bye both")
    alice.expect_closed()
    assert bob.recv().raw == b":alicia!~alice@127.0.0.1 QUIT :Quit: bye both\r\n"
    assert nat.recv_line() == "PART a alicia quit: bye both"
    assert bob.sync() == [] and nat.sync() == []
    bob.send("NAMES #a,#b")
    assert raws(bob.sync()) == [
        b":chatroom.local 353 bob = #a :bob nat\r\n",
        b":chatroom.local 366 bob #a :End of /NAMES list\r\n",
        b":chatroom.local 353 bob = #b bob\r\n",
        b":chatroom.local 366 bob #b :End of /NAMES list\r\n",
    ]


# == 6. protection ==

def test_junk_without_line_end_closes_the_irc_connection_only(irc_server, irc):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    junk = irc(server)
    try:
        junk.send_raw(b"\x16\x03\x01" + b"A" * (70 * 1024))  # a TLS hello, say, then more
    except OSError:
        pass  # closed part-way, as it should be
    lines = junk.expect_closed()
    assert lines[-1] == b"ERROR :Closing link: 127.0.0.1 (no-line-end)\r\n"
    server.wait_for(rf"Connection closed with 127\.0\.0\.1:{junk.port} \(no-line-end\)")
    alice.send("PRIVMSG #dev :unaffected")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev unaffected\r\n"


def test_irc_flooder_is_throttled_then_dropped_while_others_chat(irc_server, irc):
    server = irc_server("--flood-rate", 5, "--flood-burst", 5)
    flooder, bob, carol = irc(server, "flooder"), irc(server, "bob"), irc(server, "carol")
    in_channel("#dev", flooder, bob, carol)
    sent = []

    def flood():  # 200 lines/s, forty times the limit, until the server hangs up
        deadline = time.monotonic() + WAIT
        try:
            while time.monotonic() < deadline:
                flooder.send(f"PRIVMSG #dev :flood {len(sent)}")
                sent.append(1)
                time.sleep(0.005)
        except OSError:
            pass

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    for i in range(4):  # under the rate: every one of these arrives
        bob.send(f"PRIVMSG #dev :bob {i}")
        time.sleep(0.25)
    got = []
    while b":flooder!~flooder@127.0.0.1 QUIT flood\r\n" not in got or sum(
            r.startswith(b":bob!") for r in got) < 4:
        got.append(carol.recv().raw)
    assert [r for r in got if r.startswith(b":bob!")] == [
        f":bob!~bob@127.0.0.1 PRIVMSG #dev :bob {i}\r\n".encode() for i in range(4)]
    relayed = [r for r in got if r.startswith(b":flooder!~flooder@127.0.0.1 PRIVMSG")]
    flooding.join(WAIT * 2)
    assert 0 < len(relayed) < len(sent)
    lines = flooder.expect_closed()
    assert lines[-1] == b"ERROR :Closing link: 127.0.0.1 (flood)\r\n"
    assert b":chatroom.local NOTICE flooder :*** Flood: over 5 lines/s; line dropped\r\n" in lines
    server.wait_for(r"Connection closed with 127\.0\.0\.1:\d+ \(flood\)")
    bob.send("PRIVMSG #dev :still here")
    assert carol.recv().raw == b":bob!~bob@127.0.0.1 PRIVMSG #dev :still here\r\n"


def test_slow_irc_reader_is_dropped_and_the_others_get_everything(irc_server, irc):
    count = 1000
    server = irc_server("--flood-rate", 0, "--outbox-limit", 64 * 1024, "--outbox-soft-limit", 0,
                        "--send-timeout", 60)
    slow = irc(server, "slow", rcvbuf=4096)
    sender, reader = irc(server, "sender"), irc(server, "reader")
    in_channel("#big", slow, sender, reader)
    slow_port = slow.port
    pad = "x" * 400
    data = b"".join(f"PRIVMSG #big :{i:04d} {pad}\r\n".encode() for i in range(count))
    sending = threading.Thread(target=sender.send_raw, args=(data,), daemon=True)
    sending.start()
    texts = []
    quit_line = b":slow!~slow@127.0.0.1 QUIT slow-consumer\r\n"
    seen_quit = False
    while len(texts) < count or not seen_quit:
        line = reader.recv()
        if line.raw == quit_line:
            seen_quit = True
        else:
            assert line.command == "PRIVMSG" and line.source == "sender!~sender@127.0.0.1", line.raw
            texts.append(line.params[1])
    assert texts == [f"{i:04d} {pad}" for i in range(count)]
    sending.join(WAIT)
    server.wait_for(rf"Dropped 127\.0\.0\.1:{slow_port}: slow-consumer \(\d+ bytes queued\)")
    assert server.count(rf"Dropped 127\.0\.0\.1:{slow_port}: ") == 1
    sender.send("PRIVMSG #big :after")
    assert reader.recv().raw == b":sender!~sender@127.0.0.1 PRIVMSG #big after\r\n"
    assert raws(sender.sync()) == [quit_line]
    slow.expect_closed()  # what it had queued, then the end


def test_ping_timeout(irc_server, irc):
    server = irc_server("--idle-timeout", 0.3, "--ping-timeout", 0.3)
    silent, alive = irc(server, "silent"), irc(server, "alive")
    in_channel("#dev", silent, alive)
    ping = silent.recv()
    assert ping.source is None and ping.command == "PING" and re.fullmatch(rb"PING \d+\r\n", ping.raw)
    while True:  # alive answers every PING until silent is gone
        line = alive.recv()
        if line.command == "PING":
            alive.send(f"PONG :{line.params[0]}")
            continue
        assert line.raw == b":silent!~silent@127.0.0.1 QUIT ping-timeout\r\n"
        break
    assert silent.expect_closed() == [b"ERROR :Closing link: 127.0.0.1 (ping-timeout)\r\n"]
    server.wait_for(rf"Connection closed with 127\.0\.0\.1:{silent.port} \(ping-timeout\)")
    alive.send("PING :still")
    while (line := alive.recv()).command == "PING":
        alive.send(f"PONG :{line.params[0]}")
    assert line.raw == b":chatroom.local PONG chatroom.local still\r\n"
    assert server.count(rf"Connection closed with 127\.0\.0\.1:{alive.port}") == 0


def test_sigterm_sends_error_to_irc_clients_then_closes(irc_server, irc, clients):
    server = irc_server()
    alice, bob = irc(server, "alice"), irc(server, "bob")
    in_channel("#dev", alice, bob)
    unregistered = irc(server)
    nat = clients(server)
    alice.send("PRIVMSG #dev :last words")
    assert bob.recv().raw == b":alice!~alice@127.0.0.1 PRIVMSG #dev :last words\r\n"
    server.signal(signal.SIGTERM)
    for c in (alice, bob, unregistered):
        assert c.expect_closed() == [b"ERROR :Closing link: 127.0.0.1 (server-shutdown)\r\n"]
    assert nat.expect_closed() == ["BYE server-shutdown"]
    assert server.proc.wait(WAIT) == 0
    server.wait_for(r"Server stopped")


def test_max_clients_counts_irc_connections(irc_server, irc, clients):
    server = irc_server("--max-clients", 1)
    first = irc(server, "first")
    extra = irc(server)
    assert extra.expect_closed() == [b"ERROR :Closing link: server-full\r\n"]
    server.wait_for(r"Refused 127\.0\.0\.1:\d+: server-full")
    nat = clients(server, hello=False)
    assert nat.expect_closed() == ["BYE server-full"]
    assert first.sync() == []
    first.send("QUIT")
    first.expect_closed()
    server.wait_for(r"Connection closed with .* \(quit\)")
    nat = clients(server)  # the slot is free again
    again = irc(server)
    assert again.expect_closed() == [b"ERROR :Closing link: server-full\r\n"]

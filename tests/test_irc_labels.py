"""IRCv3 labeled-response on the IRC listener: a labeled command's answer carries its label.

A real bin/chat-server with --irc-port 0, raw sockets (tests/irc_helpers.py).
"""

CAPS = ("batch", "labeled-response", "echo-message", "message-tags")


def test_a_one_line_answer_carries_the_label(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=CAPS)
    alice.send("@label=abc123 PING :hello")
    pong = alice.expect("PONG")
    assert pong.tags == {"label": "abc123"}
    assert pong.params[-1] == "hello"


def test_a_command_without_answer_gets_an_ack(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=CAPS)
    alice.send("@label=quiet PONG :nothing-expected")
    ack = alice.recv()
    assert ack.command == "ACK" and ack.tags == {"label": "quiet"} and ack.source == "chatroom.local"


def test_several_lines_come_in_a_labeled_response_batch(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=CAPS)
    bob = irc(server, "bob", caps=("message-tags",))
    bob.join("#dev")
    alice.send("@label=j1 JOIN #dev")
    start = alice.recv()
    assert start.command == "BATCH" and start.tags == {"label": "j1"}
    ref = start.params[0][1:]
    assert start.params == ["+" + ref, "labeled-response"]
    inner = alice.until("BATCH")
    assert inner[-1].params == ["-" + ref] and "label" not in inner[-1].tags
    assert [line.command for line in inner[:-1]][:1] == ["JOIN"]
    assert "366" in [line.command for line in inner]
    for line in inner[:-1]:
        assert line.tags.get("batch") == ref and "label" not in line.tags, line.raw
    # bob's copy of the same JOIN is the shared one: no label, no batch
    joined = bob.expect("JOIN", "#dev")
    assert joined.source.startswith("alice!") and "label" not in joined.tags
    assert "batch" not in joined.tags


def test_without_batch_only_the_first_line_is_labeled(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=("labeled-response",))
    alice.send("@label=nb JOIN #dev")
    lines = alice.until("366")
    assert lines[0].command == "JOIN" and lines[0].tags == {"label": "nb"}
    assert all(not line.tags for line in lines[1:])
    assert not [line for line in lines if line.command == "BATCH"]


def test_a_message_to_self_labels_only_the_echo(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=CAPS)
    alice.send("@label=me PRIVMSG alice :hi me")
    first, second = alice.recv(), alice.recv()
    assert [first.command, second.command] == ["PRIVMSG", "PRIVMSG"]
    assert [first.params, second.params] == [["alice", "hi me"], ["alice", "hi me"]]
    assert [line.tags.get("label") for line in (first, second)] == [None, "me"]
    assert alice.sync() == []  # and nothing else: no batch


def test_a_word_that_is_no_command_is_421_with_the_label(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=CAPS)
    alice.send("@label=deadbeef NONEXISTENT_COMMAND")
    reply = alice.recv()
    assert reply.command == "421" and reply.tags == {"label": "deadbeef"}
    assert reply.params[:2] == ["alice", "NONEXISTENT_COMMAND"]
    alice.send("NO-SUCH-COMMAND x")  # unlabeled too: 421, not a FAIL
    assert alice.recv().params[:2] == ["alice", "NO-SUCH-COMMAND"]


def test_a_label_with_special_characters_comes_back_escaped(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=CAPS)
    alice.send(r"@label=a\:b\sc PING :x")
    pong = alice.expect("PONG")
    assert pong.tags == {"label": "a;b c"}
    assert pong.raw.startswith(b"@label=a\\:b\\sc ")


def test_labels_are_ignored_without_the_capability(irc_server, irc):
    server = irc_server()
    alice = irc(server, "alice", caps=("batch", "message-tags"))
    alice.send("@label=x PING :plain")
    pong = alice.expect("PONG")
    assert pong.tags == {}
    alice.send("@label=y PONG :z")
    assert alice.sync() == []  # no ACK either

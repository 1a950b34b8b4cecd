"""The cluster's event records without Redis: built on one node, applied to another's registry.

A record says what happened (who, where, what); the receiving registry encodes it once per
encoder group of its own members. IRC members are stood in for by :class:`IrcLike`, a member
whose encoder writes IRC-shaped lines and counts its calls, so these tests need no IRC codec.
"""

import pytest

from chatroom.cluster import records
from chatroom.cluster.records import Remote
from chatroom.core.registry import Member, Registry


class IrcLikeEncoder:
    """What ``codec.irc_events.Encoder`` does, in a shape easy to read in assertions."""

    per_room = False
    echo = False
    stamped = True

    def __init__(self):
        self.calls = 0
        self.stamps = []  # the stamps of the messages encoded

    def _count(self, line):
        self.calls += 1
        return line.encode() + b"\r\n"

    def msg(self, room, sender, text, stamp, notice, tags):
        verb = "NOTICE" if notice else "PRIVMSG"
        shown = "".join(f"@{k}={v} " for k, v in (tags or {}).items())
        self.stamps.append(stamp)
        return self._count(f"{shown}:{sender.prefix} {verb} #{room.name} :{text}")

    def tell(self, sender, target, text, stamp, notice, tags):
        return self._count(f":{sender.prefix} PRIVMSG {target.ircnick} :{text}")

    def tagmsg(self, room, sender, target, stamp, tags):
        return self._count(f":{sender.prefix} TAGMSG #{room.name}")

    def join(self, room, who):
        return self._count(f":{who.prefix} JOIN #{room.name}")

    def part(self, room, who, reason):
        return self._count(f":{who.prefix} PART #{room.name} :{reason}")

    def quit(self, room, who, reason):
        return self._count(f":{who.prefix} QUIT :{reason}")

    def nick(self, room, who, old_name, old_prefix):
        return self._count(f":{old_prefix} NICK {who.ircnick}")

    def kick(self, room, by, target, reason):
        return self._count(f":{by.prefix} KICK #{room.name} {target.ircnick} :{reason}")

    def topic(self, room, by, text):
        return self._count(f":{by.prefix} TOPIC #{room.name} :{text}")

    def away(self, room, who, text):
        return self._count(f":{who.prefix} AWAY :{text}" if text else f":{who.prefix} AWAY")

    def mode(self, room, by, change, arg):
        return self._count(f":{by.prefix} MODE #{room.name} {change}" + (f" {arg}" if arg else ""))


class IrcLike(Member):
    """A multi-room member with the IRC-like encoder (as ``transport.irc.IrcClient`` is)."""

    __slots__ = ("channels", "encoder")
    multi = True
    plain = False
    user = "~irc"

    def __init__(self, member_id, encoder):
        super().__init__(member_id)
        self.channels = {}
        self.encoder = encoder

    def joined(self):
        return self.channels


def lines(member):
    out = b"".join(member.outbox).decode().splitlines()
    member.outbox.clear()
    member.queued = 0
    return out


NODE = "here"
STAMP = (1700000000.25, "18bcfe568fa-there-7")
ANN = Remote("ann", "ann!~native@10.0.0.1")
IRCBOB = Remote("bob", "bob!~bob@10.0.0.2", plain=False)


@pytest.fixture
def reg():
    registry = Registry()
    registry.node = NODE
    return registry


@pytest.fixture
def enc():
    return IrcLikeEncoder()


def native(reg, member_id, room="lobby"):
    m = Member(member_id)
    reg.add(m, room=room)
    return m


def irc(reg, member_id, nick, enc, *rooms):
    m = IrcLike(member_id, enc)
    reg.add(m, room=None, nick=nick)
    for room in rooms:
        reg.enter(m, room)
    return m


def apply(reg, *recs):
    records.deliver(reg, b"elsewhere\n" + b"".join(recs))


def clear(*members):
    for m in members:
        lines(m)


def test_a_message_is_encoded_once_per_encoder_group_of_the_receiving_room(reg, enc):
    a, b = native(reg, "10.1.0.1:1"), native(reg, "10.1.0.1:2")
    x = irc(reg, "10.1.0.1:3", "xena", enc, "lobby")
    y = irc(reg, "10.1.0.1:4", "yuri", enc, "lobby")
    clear(a, b, x, y)
    enc.calls = 0
    apply(reg, records.msg("lobby", ANN, "hi all", False, None, STAMP))
    assert lines(a) == lines(b) == ["MSG lobby ann hi all"]
    assert lines(x) == lines(y) == [":ann!~native@10.0.0.1 PRIVMSG #lobby :hi all"]
    assert enc.calls == 1  # one IRC group, one encoding
    assert enc.stamps == [STAMP]  # the sender's time and msgid, the same on every node


def test_notice_and_client_tags_cross_with_their_escapes(reg, enc):
    x = irc(reg, "10.1.0.1:3", "xena", enc, "dev")
    clear(x)
    tags = {"+draft/react": "a b;c\\d", "+flag": ""}
    apply(reg, records.msg("dev", IRCBOB, "look", True, tags, STAMP))
    assert lines(x) == ["@+draft/react=a b;c\\d @+flag= :bob!~bob@10.0.0.2 NOTICE #dev :look"]
    assert records.decode_tags(records.encode_tags(tags)) == tags


def test_text_that_would_break_a_record_is_cleaned(reg):
    a = native(reg, "10.1.0.1:1")
    clear(a)
    apply(reg, records.msg("lobby", ANN, "one\0two\nthree", False, None, STAMP),
          records.msg("lobby", ANN, "next", False, None, STAMP))
    assert lines(a) == ["MSG lobby ann onetwo three", "MSG lobby ann next"]


def test_a_message_to_a_room_this_node_does_not_have_is_dropped(reg):
    a = native(reg, "10.1.0.1:1")
    clear(a)
    apply(reg, records.msg("nowhere", ANN, "hello?", False, None, STAMP))
    assert lines(a) == []


def test_join_part_and_kick_reach_each_group_in_its_protocol(reg, enc):
    a = native(reg, "10.1.0.1:1", "dev")
    x = irc(reg, "10.1.0.1:3", "xena", enc, "dev")
    clear(a, x)
    apply(reg, records.join("dev", IRCBOB), records.part("dev", "bob", IRCBOB.prefix, "bye"),
          records.kick("dev", ANN, "bob", IRCBOB.prefix, "spam"))
    assert lines(a) == ["JOIN dev bob", "PART dev bob bye", "PART dev bob kicked by ann: spam"]
    assert lines(x) == [":bob!~bob@10.0.0.2 JOIN #dev", ":bob!~bob@10.0.0.2 PART #dev :bye",
                        ":ann!~native@10.0.0.1 KICK #dev bob :spam"]


def test_a_quit_is_a_part_per_room_for_native_members_and_one_quit_for_irc_ones(reg, enc):
    a, b = native(reg, "10.1.0.1:1", "dev"), native(reg, "10.1.0.1:2", "ops")
    x = irc(reg, "10.1.0.1:3", "xena", enc, "dev", "ops")
    clear(a, b, x)
    apply(reg, records.quit("bob", IRCBOB.prefix, "quit: later", ["dev", "ops", "gone"]))
    assert lines(a) == ["PART dev bob quit: later"]
    assert lines(b) == ["PART ops bob quit: later"]
    assert lines(x) == [":bob!~bob@10.0.0.2 QUIT :quit: later"]  # once, though in both rooms


def test_a_reaped_member_leaves_every_room_except_on_the_node_said_dead(reg, enc):
    a = native(reg, "10.1.0.1:1", "dev")
    x = irc(reg, "10.1.0.1:3", "xena", enc, "dev", "ops")
    clear(a, x)
    apply(reg, records.reaped("gone-node", "bob", IRCBOB.prefix, "disconnected", ["dev", "ops"]))
    assert lines(a) == ["PART dev bob disconnected"]
    assert lines(x) == [":bob!~bob@10.0.0.2 QUIT :disconnected"]
    apply(reg, records.reaped(NODE, "bob", IRCBOB.prefix, "disconnected", ["dev", "ops"]))
    assert lines(a) == lines(x) == []  # said of this node: it was only cut off, nobody left


def test_a_nick_change_is_told_once_to_each(reg, enc):
    a = native(reg, "10.1.0.1:1", "dev")
    x = irc(reg, "10.1.0.1:3", "xena", enc, "dev", "ops")
    clear(a, x)
    new = Remote("robert", "robert!~bob@10.0.0.2")
    apply(reg, records.nick("bob", IRCBOB.prefix, new, ["dev", "ops"]))
    assert lines(a) == ["NICK bob robert"]
    assert lines(x) == [":bob!~bob@10.0.0.2 NICK robert"]


def test_tell_reaches_only_the_member_named_on_the_node_named(reg, enc):
    a = native(reg, "10.1.0.1:1")
    x = irc(reg, "10.1.0.1:3", "xena", enc)
    clear(a, x)
    apply(reg, records.tell(NODE, a.id, IRCBOB, "psst", False, None, STAMP),
          records.tell(NODE, x.id, ANN, "hey xena", False, None, STAMP),
          records.tell("other", a.id, ANN, "not for you", False, None, STAMP),
          records.tell(NODE, "10.9.9.9:9", ANN, "left already", False, None, STAMP))
    assert lines(a) == ["TELL bob psst"]
    assert lines(x) == [":ann!~native@10.0.0.1 PRIVMSG xena :hey xena"]


def test_presence_over_the_limit_is_not_announced_but_messages_are(enc):
    reg = Registry(presence_limit=1)
    reg.node = NODE
    a, b = native(reg, "10.1.0.1:1"), native(reg, "10.1.0.1:2")
    clear(a, b)
    apply(reg, records.join("lobby", ANN), records.quit("ann", ANN.prefix, "x", ["lobby"]),
          records.msg("lobby", ANN, "still heard", False, None, STAMP))
    assert lines(a) == ["MSG lobby ann still heard"]


def test_topic_and_modes_are_applied_to_the_local_room(reg, enc):
    x = irc(reg, "10.1.0.1:3", "xena", enc, "dev")
    clear(x)
    apply(reg, records.topic("dev", IRCBOB, "release day"),
          records.mode("dev", IRCBOB, "+m", None, "mnt"),
          records.mode("dev", IRCBOB, "+o", "xena", None),
          records.away(IRCBOB, "lunch", ["dev"]), records.away(IRCBOB, None, ["dev"]))
    room = reg.rooms["dev"]
    assert room.topic[:2] == ("release day", "bob")
    assert room.modes == "mnt"
    assert lines(x) == [":bob!~bob@10.0.0.2 TOPIC #dev :release day",
                        ":bob!~bob@10.0.0.2 MODE #dev +m", ":bob!~bob@10.0.0.2 MODE #dev +o xena",
                        ":bob!~bob@10.0.0.2 AWAY :lunch", ":bob!~bob@10.0.0.2 AWAY"]
    apply(reg, records.topic("dev", IRCBOB, ""))
    assert room.topic is None


def test_remote_stands_in_with_what_encoders_read():
    named = Remote("ann", "ann!~native@10.0.0.1")
    assert (named.nick, named.ircnick, named.user) == ("ann", "ann", "~native")
    assert named.host == "10.0.0.1"
    unnamed = Remote("10.0.0.1:5000", "10-0-0-1-5000!~native@10.0.0.1")
    assert unnamed.nick is None and unnamed.ircnick == "10-0-0-1-5000"


def test_records_of_local_members_carry_their_native_name_and_irc_prefix(reg, enc):
    a = native(reg, "10.1.0.1:1")
    x = irc(reg, "10.1.0.1:3", "xena", enc, "lobby")
    assert records.msg("lobby", a, "hi", False, None, STAMP) == (
        b"Mlobby\x0010.1.0.1:1\x0010-1-0-1-1!~native@10.1.0.1\x00p\x00"
        b"18bcfe568fa\x0018bcfe568fa-there-7\x00\x00hi\n")
    assert records.msg("lobby", x, "hi", True, {"+a": "1"}, STAMP) == (
        b"Mlobby\x00xena\x00xena!~irc@10.1.0.1\x00n\x00"
        b"18bcfe568fa\x0018bcfe568fa-there-7\x00+a=1\x00hi\n")

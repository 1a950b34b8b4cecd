"""ClusterRegistry without Redis: two nodes in one process, their link replaced by a recorder.

What one node queues for Redis (event records, state commands) is checked as it is queued, and
its records are handed to the other node as a PUBLISH payload would be. The real link, scripts
and processes are tested in test_cluster.py.
"""

import pytest

from chatroom.cluster import registry as cluster_registry
from chatroom.cluster.registry import ClusterRegistry
from chatroom.codec.native import ProtocolError
from chatroom.core.registry import Member

from test_cluster_records import IrcLike, IrcLikeEncoder, lines


class FakeLink:
    """Records what the registry queues; answers lookups from dicts the test fills."""

    up = True
    keys_ms = 30000

    def __init__(self, url, registry):
        self.registry = registry
        self.published = []
        self.commands = []
        self.taken = set()  # casefolded nicknames another node holds
        self.located = {}  # name -> (node, id, "name prefix")

    def publish(self, record):
        self.published.append(record)

    def command(self, *args):
        self.commands.append(args)

    def claim_nick(self, key, owner, given_up=None):
        return key not in self.taken

    def locate(self, who, ids):
        return self.located.get(who)

    def take(self):
        """The records queued since last asked, as the payload another node would receive."""
        out, self.published = self.published, []
        return self.registry.node.encode() + b"\n" + b"".join(out)


@pytest.fixture
def nodes(monkeypatch):
    monkeypatch.setattr(cluster_registry, "Link", FakeLink)
    return ClusterRegistry("redis://unused", "a"), ClusterRegistry("redis://unused", "b")


def kinds(link):
    return [r[:1].decode() for r in link.published]


def native(reg, member_id, room="lobby"):
    m = Member(member_id)
    reg.add(m, room=room)
    return m


def irc(reg, member_id, nick, *rooms, enc=None):
    m = IrcLike(member_id, enc or IrcLikeEncoder())
    reg.add(m, room=None, nick=nick)
    for room in rooms:
        reg.enter(m, room)
    return m


def flush(*members):
    for m in members:
        lines(m)


def test_one_record_per_message_however_many_hear_it(nodes):
    a, b = nodes
    people = [native(a, f"10.0.0.1:{i}") for i in range(50)]
    a.link.published.clear()
    a.say(people[0], "hello")
    assert kinds(a.link) == ["M"]


def test_native_and_irc_members_on_two_nodes_hear_each_other(nodes):
    a, b = nodes
    ann = native(a, "10.0.0.1:1", "dev")
    a.set_nick(ann, "ann")
    xena = irc(b, "10.0.0.2:1", "xena", "dev")
    b.deliver(a.link.take())
    a.deliver(b.link.take())
    flush(ann, xena)
    a.say(ann, "from native")
    b.deliver(a.link.take())
    assert lines(xena) == [":ann!~native@10.0.0.1 PRIVMSG #dev :from native"]
    b.say(xena, "from irc", b.rooms["dev"])
    a.deliver(b.link.take())
    assert lines(ann) == ["MSG dev xena from irc"]
    b.set_nick(xena, "xavier")
    a.deliver(b.link.take())
    assert lines(ann) == ["NICK xena xavier"]
    assert lines(xena) == [":xena!~irc@10.0.0.2 NICK xavier"]


def test_an_irc_members_quit_names_every_room_it_was_in(nodes):
    a, b = nodes
    x = irc(a, "10.0.0.1:1", "xena", "dev", "ops")
    n1, n2 = native(b, "10.0.0.2:1", "dev"), native(b, "10.0.0.2:2", "ops")
    y = irc(b, "10.0.0.2:3", "yuri", "dev", "ops")
    a.link.published.clear()
    a.remove(x, "quit: bye")
    assert kinds(a.link) == ["Q"]
    flush(n1, n2, y)
    b.deliver(a.link.take())
    assert lines(n1) == ["PART dev xena quit: bye"]
    assert lines(n2) == ["PART ops xena quit: bye"]
    assert lines(y) == [":xena!~irc@10.0.0.1 QUIT :quit: bye"]
    assert ("HDEL", a.ids_key, x.id) in a.link.commands


def test_an_irc_nick_taken_on_another_node_is_refused_at_registration(nodes):
    a, b = nodes
    a.link.taken.add("bob")
    m = IrcLike("10.0.0.1:1", IrcLikeEncoder())
    with pytest.raises(ProtocolError) as err:
        a.add(m, room=None, nick="Bob")
    assert err.value.code == "nick-taken"
    assert len(a) == 0 and not a.nicks and m.id not in a._owners
    irc(a, "10.0.0.1:2", "carol")
    assert a.find_nick("CAROL") is not None


def test_tell_to_a_member_of_another_node(nodes):
    a, b = nodes
    ann = native(a, "10.0.0.1:1")
    xena = irc(b, "10.0.0.2:1", "xena")
    a.link.located["xena"] = ("b", xena.id, f"xena {xena.prefix}")
    target = a.tell(ann, "xena", "psst")
    assert target.ircnick == "xena" and target.node == "b"
    b.deliver(a.link.take())
    assert lines(xena) == [":10-0-0-1-1!~native@10.0.0.1 PRIVMSG xena :psst"]
    with pytest.raises(ProtocolError):
        a.tell(ann, "nobody", "hello?")


def test_a_kick_crosses_then_the_native_member_joins_the_lobby(nodes):
    a, b = nodes
    op = irc(a, "10.0.0.1:1", "oper", "dev")
    victim = native(a, "10.0.0.1:2", "dev")
    watcher = native(b, "10.0.0.2:1", "dev")
    a.link.published.clear()
    a.kick(op, a.rooms["dev"], victim, "enough")
    assert kinds(a.link) == ["K", "J"]
    flush(watcher)
    b.deliver(a.link.take())
    assert lines(watcher) == [f"PART dev {victim.id} kicked by oper: enough"]
    assert victim.room.name == "lobby"


def test_a_dead_nodes_multi_room_member_leaves_once_everywhere(nodes):
    a, b = nodes
    n1, n2 = native(a, "10.0.0.1:1", "dev"), native(a, "10.0.0.1:2", "ops")
    y = irc(a, "10.0.0.1:3", "yuri", "dev", "ops")
    flush(n1, n2, y)
    a.link.published.clear()
    idents = {"10.0.0.9:1": "bob bob!~bob@10.0.0.9", "10.0.0.9:2": "lurker lurker!~l@10.0.0.9"}
    memberships = [("dev", "10.0.0.9:1", "1.0 bob"), ("ops", "10.0.0.9:1", "2.0 bob")]
    a.node_died("dead", idents, memberships)
    assert lines(n1) == ["PART dev bob disconnected"]
    assert lines(n2) == ["PART ops bob disconnected"]
    assert lines(y) == [":bob!~bob@10.0.0.9 QUIT :disconnected"]
    assert kinds(a.link) == ["R"]  # the lurker was in no room: only its nickname is freed
    freed = [c for c in a.link.commands if c[0] == "EVAL"][-1]
    assert "chatroom:nick:bob" in freed and "chatroom:nick:lurker" in freed
    m = native(b, "10.0.0.2:1", "dev")
    flush(m)
    b.deliver(a.link.take())
    assert lines(m) == ["PART dev bob disconnected"]


def test_a_dead_nodes_big_room_is_announced_only_below_the_presence_limit(monkeypatch):
    monkeypatch.setattr(cluster_registry, "Link", FakeLink)
    a = ClusterRegistry("redis://unused", "a", presence_limit=2)
    watcher = native(a, "10.0.0.1:1", "big")
    flush(watcher)
    memberships = [("big", f"10.0.0.9:{i}", f"{i}.0 p{i}") for i in range(4)]
    a.node_died("dead", {}, memberships)
    assert lines(watcher) == ["PART big p2 disconnected", "PART big p3 disconnected"]


def test_membership_is_written_per_room_and_identity_per_member(nodes):
    a, b = nodes
    x = irc(a, "10.0.0.1:1", "xena", "dev", "ops")
    ids, rooms, hashes = a.snapshot()
    assert ids == {x.id: "xena xena!~irc@10.0.0.1"}
    assert rooms == {"dev": 1, "ops": 1}
    assert set(hashes) == {"dev", "ops"} and hashes["dev"][x.id].endswith(" xena")
    a.part(x, a.rooms["dev"], "later")
    assert set(a.snapshot()[1]) == {"ops"}

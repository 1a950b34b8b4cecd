"""Registry tests without sockets: members are plain ``Member`` objects and we read their outboxes.

Covers fan-out (who hears what, encode once), the ready list and its hook, nicknames, rooms and
presence announcements, TELL/WHO/ROOMS, and eviction by the hard and the soft outbox limit.
"""

import pytest

from chatroom.codec import native
from chatroom.codec.native import ProtocolError
from chatroom.core.registry import Member, Registry


class FakeClock:
    """A clock the test moves by hand, for the soft limit's ``clock=``."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def lines(member):
    """Drain ``member``'s outbox as decoded lines (what it would have received)."""
    out = b"".join(member.outbox).decode().splitlines()
    member.outbox.clear()
    member.queued = 0
    return out


class Hooks:
    def __init__(self, registry):
        self.ready_calls = 0
        self.evicted = []
        registry.on_ready = self.on_ready
        registry.on_evict = self.on_evict

    def on_ready(self):
        self.ready_calls += 1

    def on_evict(self, member, reason):
        self.evicted.append((member, reason))


def make(registry, *ids):
    members = []
    for member_id in ids:
        m = Member(member_id)
        registry.add(m)
        members.append(m)
    for m in members:
        lines(m)
    return members


@pytest.fixture
def reg():
    return Registry()


# -- membership and broadcast --------------------------------------------------------------------

def test_add_greets_then_joins_lobby_and_others_see_it(reg):
    a = Member("127.0.0.1:1")
    reg.add(a, native.format_hello(a.id))
    assert lines(a) == ["HELLO 127.0.0.1:1 chatroom/1.0", "JOIN lobby 127.0.0.1:1"]
    b = Member("127.0.0.1:2")
    reg.add(b, native.format_hello(b.id))
    assert lines(a) == ["JOIN lobby 127.0.0.1:2"]
    assert lines(b) == ["HELLO 127.0.0.1:2 chatroom/1.0", "JOIN lobby 127.0.0.1:2"]
    assert len(reg) == 2 and a.room is b.room and a.room.name == "lobby"


def test_say_skips_sender_and_reaches_only_the_room(reg):
    a, b, c, d = make(reg, "a:1", "b:2", "c:3", "d:4")
    reg.join(d, "dev")
    for m in (a, b, c, d):
        lines(m)
    reg.say(a, "hello all")
    assert lines(a) == []
    assert lines(b) == ["MSG lobby a:1 hello all"]
    assert lines(c) == ["MSG lobby a:1 hello all"]
    assert lines(d) == []
    reg.say(d, "anyone here?")
    assert [lines(m) for m in (a, b, c, d)] == [[], [], [], []]


def test_broadcast_is_encoded_once_and_shared(reg):
    sender, *others = make(reg, "s:1", *(f"o:{i}" for i in range(10)))
    reg.say(sender, "one frame")
    frames = [m.outbox[-1] for m in others]
    assert all(f is frames[0] for f in frames)
    assert frames[0] == b"MSG lobby s:1 one frame\n"
    assert all(m.queued == len(frames[0]) for m in others)


def test_broadcast_all_reaches_every_room(reg):
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.join(c, "dev")
    for m in (a, b, c):
        lines(m)
    reg.broadcast_all(native.format_bye("server-shutdown"))
    assert [lines(m) for m in (a, b, c)] == [["BYE server-shutdown"]] * 3
    assert a.outbox is not c.outbox


def test_ready_list_and_on_ready_once_per_transition(reg):
    hooks = Hooks(reg)
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.ready = []
    hooks.ready_calls = 0
    reg.say(a, "1")
    assert reg.ready == [b, c]
    assert hooks.ready_calls == 1
    reg.say(a, "2")
    reg.say(b, "3")
    assert reg.ready == [b, c, a]  # each member once, in order of first bytes
    assert hooks.ready_calls == 1  # the list never went back to empty
    # The owner takes the list and drains the outboxes: the next message is a new transition.
    reg.ready = []
    for m in (a, b, c):
        lines(m)
    reg.say(c, "4")
    assert reg.ready == [a, b]
    assert hooks.ready_calls == 2


def test_member_with_queued_bytes_is_not_listed_again(reg):
    hooks = Hooks(reg)
    a, b = make(reg, "a:1", "b:2")
    reg.ready = []
    hooks.ready_calls = 0
    reg.say(a, "1")
    reg.ready = []  # taken by the owner, but b's outbox is still full (a writer is on it)
    reg.say(a, "2")
    assert reg.ready == []
    assert hooks.ready_calls == 1
    assert lines(b) == ["MSG lobby a:1 1", "MSG lobby a:1 2"]


# -- nicknames -----------------------------------------------------------------------------------

def test_nick_is_announced_and_used_as_name(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.set_nick(a, "ann")
    assert lines(a) == ["NICK a:1 ann"]
    assert lines(b) == ["NICK a:1 ann"]
    reg.say(a, "hi")
    assert lines(b) == ["MSG lobby ann hi"]
    reg.set_nick(a, "Annie")
    assert lines(b) == ["NICK ann Annie"]
    assert a.name == a.nick == "Annie"


def test_nick_unique_case_insensitively(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.set_nick(a, "Ann")
    for taken in ("ann", "ANN", "Ann", "aNn"):
        with pytest.raises(ProtocolError) as info:
            reg.set_nick(b, taken)
        assert info.value.code == "nick-taken"
    assert b.nick is None and b.name == "b:2"


def test_own_nick_case_change_is_allowed(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.set_nick(a, "ann")
    lines(b)
    reg.set_nick(a, "Ann")
    assert lines(b) == ["NICK ann Ann"]
    assert reg.find("ANN") is a
    with pytest.raises(ProtocolError):
        reg.set_nick(b, "ann")


def test_nick_invalid(reg):
    (a,) = make(reg, "a:1")
    for bad in ("-x", "x" * 33, "a b", "\u00e9"):
        with pytest.raises(ProtocolError) as info:
            reg.set_nick(a, bad)
        assert info.value.code == "nick-invalid"
    assert a.nick is None and lines(a) == []


def test_nick_released_on_change_and_on_remove(reg):
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.set_nick(a, "ann")
    reg.set_nick(a, "anna")
    reg.set_nick(b, "ANN")  # the old one is free again
    assert reg.find("ann") is b
    reg.set_nick(c, "carl")
    reg.remove(c)
    assert reg.find("carl") is None
    reg.set_nick(a, "Carl")
    assert reg.find("carl") is a


# -- rooms ---------------------------------------------------------------------------------------

def test_join_moves_rooms_with_part_and_join_to_the_right_people(reg):
    a, b, c, d = make(reg, "a:1", "b:2", "c:3", "d:4")
    reg.join(d, "dev")
    for m in (a, b, c, d):
        lines(m)
    reg.join(a, "dev")
    assert lines(a) == ["JOIN dev a:1"]
    assert lines(b) == ["PART lobby a:1 join"]
    assert lines(c) == ["PART lobby a:1 join"]
    assert lines(d) == ["JOIN dev a:1"]
    assert a.room is d.room and list(a.room.members) == [d, a]
    reg.say(a, "in dev")
    assert lines(d) == ["MSG dev a:1 in dev"]
    assert lines(b) == lines(c) == []


def test_join_same_room_confirms_only_to_self(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.join(a, "lobby")
    assert lines(a) == ["JOIN lobby a:1"]
    assert lines(b) == []


def test_join_invalid_room(reg):
    (a,) = make(reg, "a:1")
    with pytest.raises(ProtocolError) as info:
        reg.join(a, "-bad")
    assert info.value.code == "room-invalid"
    assert a.room.name == "lobby"


def test_rooms_are_case_sensitive_and_empty_rooms_vanish(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.join(a, "Dev")
    reg.join(b, "dev")
    assert a.room is not b.room
    reg.join(a, "lobby")
    assert "Dev" not in reg.rooms
    reg.remove(b)
    assert "dev" not in reg.rooms
    assert list(reg.rooms) == ["lobby"]


def test_remove_announces_part_to_the_room_only(reg):
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.join(c, "dev")
    lines(a), lines(c)
    assert reg.remove(b, "quit: bye now")
    assert lines(a) == ["PART lobby b:2 quit: bye now"]
    assert lines(c) == []
    assert not reg.remove(b)  # only once
    assert reg.find("b:2") is None and len(reg) == 2


def test_remove_without_announce(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.remove(b, "server-shutdown", announce=False)
    assert lines(a) == []


def test_presence_limit():
    reg = Registry(presence_limit=3)
    a, b, c = make(reg, "a:1", "b:2", "c:3")  # 3 members: at the limit, still announced
    reg.set_nick(a, "ann")
    assert lines(a) == lines(b) == lines(c) == ["NICK a:1 ann"]
    d = Member("d:4")
    reg.add(d)  # 4 > 3: only d gets its JOIN
    assert lines(d) == ["JOIN lobby d:4"]
    assert lines(a) == lines(b) == lines(c) == []
    reg.set_nick(b, "bob")  # NICK only to b
    assert lines(b) == ["NICK b:2 bob"]
    assert lines(a) == lines(c) == lines(d) == []
    reg.join(d, "dev")  # lobby had 4: its PART is not announced
    assert lines(a) == lines(b) == lines(c) == []
    assert lines(d) == ["JOIN dev d:4"]
    reg.remove(c)  # lobby had 3: announced again
    assert lines(a) == lines(b) == ["PART lobby c:3 disconnected"]
    reg.who(a)  # WHO still lists everyone
    assert lines(a) == ["WHO lobby ann bob"]
    reg.say(a, "messages always go through")
    assert lines(b) == ["MSG lobby ann messages always go through"]


@pytest.mark.parametrize("limit", [3, None], ids=["presence-limit-3", "default-200"])
def test_leaving_a_room_over_the_presence_limit_is_not_announced(limit):
    """The leaver counts, as a joiner does: a room of limit + 1 is over the limit, one of exactly
    limit is not. (Moving to another room is judged the same way: test_presence_limit.)"""
    reg = Registry() if limit is None else Registry(presence_limit=limit)
    size = 200 if limit is None else limit  # the documented default: --presence-limit 200
    leaver, *rest = make(reg, *(f"m:{i}" for i in range(size + 1)))
    reg.remove(leaver, "quit")  # from a room of size + 1: not announced
    assert [lines(m) for m in rest] == [[]] * size
    leaver, *rest = rest
    reg.remove(leaver, "quit")  # from a room of size: announced
    assert [lines(m) for m in rest] == [["PART lobby m:1 quit"]] * (size - 1)


# -- TELL, WHO, ROOMS ----------------------------------------------------------------------------

def test_tell_by_nick_and_by_id_across_rooms(reg):
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.set_nick(b, "bob")
    reg.join(b, "dev")
    for m in (a, b, c):
        lines(m)
    reg.tell(a, "BOB", "psst")
    assert lines(b) == ["TELL a:1 psst"]
    reg.tell(b, "c:3", "by id")
    assert lines(c) == ["TELL bob by id"]
    assert lines(a) == []


def test_tell_to_nobody(reg):
    a, b = make(reg, "a:1", "b:2")
    for who in ("nobody", "c:3", "A:1"):
        with pytest.raises(ProtocolError) as info:
            reg.tell(a, who, "hello?")
        assert info.value.code == "no-such-nick"
    assert lines(a) == lines(b) == []


def test_who_reply_is_built_once_and_rebuilt_after_each_change(reg):
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.who(a)
    reg.who(b)
    assert a.outbox[0] is b.outbox[0]  # one bytes object for every asker
    assert lines(a) == lines(b) == ["WHO lobby a:1 b:2 c:3"]
    lines(c)
    for change, expected in [
        (lambda: reg.set_nick(b, "bob"), "WHO lobby a:1 bob c:3"),
        (lambda: reg.join(c, "dev"), "WHO lobby a:1 bob"),
        (lambda: reg.add(Member("d:4")), "WHO lobby a:1 bob d:4"),
        (lambda: reg.remove(b), "WHO lobby a:1 d:4"),
    ]:
        change()
        lines(a)
        reg.who(a)
        assert lines(a) == [expected]


def test_rooms_reply_is_built_once_and_rebuilt_after_each_change(reg):
    a, b = make(reg, "a:1", "b:2")
    reg.list_rooms(a)
    reg.list_rooms(b)
    assert a.outbox[0] is b.outbox[0]
    assert lines(a) == lines(b) == ["ROOMS lobby:2"]
    reg.join(b, "dev")
    lines(a)
    reg.list_rooms(a)
    assert lines(a) == ["ROOMS lobby:1 dev:1"]
    reg.remove(b)
    reg.list_rooms(a)
    assert lines(a) == ["ROOMS lobby:1"]


def test_who_lists_room_in_joining_order(reg):
    a, b, c = make(reg, "a:1", "b:2", "c:3")
    reg.set_nick(b, "bob")
    reg.join(a, "dev")
    reg.join(a, "lobby")  # back in: now last
    lines(a)
    reg.who(a)
    assert lines(a) == ["WHO lobby bob c:3 a:1"]
    assert not [line for line in lines(b) + lines(c) if line.startswith("WHO")]  # only the asker
    reg.join(c, "dev")
    lines(c)
    reg.who(c)
    assert lines(c) == ["WHO dev c:3"]


def test_rooms_lists_every_room_with_its_size(reg):
    a, b, c, d = make(reg, "a:1", "b:2", "c:3", "d:4")
    reg.join(c, "dev")
    reg.join(d, "ops")
    lines(a)
    reg.list_rooms(a)
    assert lines(a) == ["ROOMS lobby:2 dev:1 ops:1"]
    reg.join(d, "dev")
    reg.list_rooms(a)
    assert lines(a) == ["ROOMS lobby:2 dev:2"]


# -- outbox limits -------------------------------------------------------------------------------

def test_full_outbox_evicts_only_that_member():
    reg = Registry(outbox_limit=1000, soft_limit=0)
    hooks = Hooks(reg)
    sender, slow, *fast = make(reg, "s:1", "slow:2", "f:3", "f:4", "f:5")
    slow.blocked = True  # its socket takes nothing more
    text = "x" * 80
    frame = f"MSG lobby s:1 {text}"
    sent = 0
    while not hooks.evicted and sent < 100:
        reg.say(sender, text)
        sent += 1
        if not hooks.evicted:
            for m in fast:  # these keep reading
                assert lines(m) == [frame]
    assert hooks.evicted == [(slow, "slow-consumer")]
    assert sent == 1000 // (len(frame) + 1) + 1  # evicted on the first frame over the limit
    assert slow.gone == "slow-consumer" and slow.room is None and reg.find("slow:2") is None
    for m in fast:
        assert lines(m) == [frame, "PART lobby slow:2 slow-consumer"]
    reg.say(sender, "still here")
    for m in fast:
        assert lines(m) == ["MSG lobby s:1 still here"]
    assert hooks.evicted == [(slow, "slow-consumer")]


def test_exactly_at_hard_limit_is_not_evicted():
    frame_len = len(b"MSG lobby s:1 yyyyyyyyyy\n")
    reg = Registry(outbox_limit=frame_len * 3, soft_limit=0)
    hooks = Hooks(reg)
    s, m = make(reg, "s:1", "m:2")
    m.blocked = True
    for _ in range(3):
        reg.say(s, "y" * 10)
    assert m.queued == reg.outbox_limit and hooks.evicted == []
    reg.say(s, "y" * 10)
    assert hooks.evicted == [(m, "slow-consumer")]


def test_over_the_limit_while_still_sending_is_judged_after_the_send():
    """A burst may queue more than the limit to a reader whose socket still takes bytes."""
    reg = Registry(outbox_limit=300, soft_limit=0)
    hooks = Hooks(reg)
    s, burst, behind = make(reg, "s:1", "burst:2", "behind:3")
    for _ in range(10):
        reg.say(s, "b" * 50)
    assert burst.queued > 300 and hooks.evicted == []  # neither socket was known to be full
    burst.outbox.clear()
    burst.queued = 0  # the owner sent it all
    reg.check_backlog(burst)
    reg.check_backlog(behind)  # the owner's send left more than the limit queued
    assert hooks.evicted == [(behind, "slow-consumer")]
    assert burst.gone is None and reg.find("burst:2") is burst


def test_soft_limit_with_a_fake_clock():
    clock = FakeClock()
    reg = Registry(outbox_limit=100_000, soft_limit=500, soft_seconds=10.0, clock=clock)
    hooks = Hooks(reg)
    s, lagging, keeping_up = make(reg, "s:1", "lag:2", "ok:3")
    text = "z" * 100
    for _ in range(6):  # over 500 bytes queued: the soft clock starts
        reg.say(s, text)
        lines(keeping_up)
    assert lagging.queued > 500 and lagging.soft_since == clock.now
    clock.now += 9.9
    reg.say(s, text)
    lines(keeping_up)
    assert hooks.evicted == []  # over the soft limit, but not for long enough
    clock.now += 0.2
    reg.say(s, text)
    assert hooks.evicted == [(lagging, "slow-consumer")]
    assert lines(keeping_up) == [f"MSG lobby s:1 {text}", "PART lobby lag:2 slow-consumer"]


def test_soft_limit_under_it_no_eviction_however_long():
    clock = FakeClock()
    reg = Registry(outbox_limit=100_000, soft_limit=500, soft_seconds=1.0, clock=clock)
    hooks = Hooks(reg)
    s, m = make(reg, "s:1", "m:2")
    for _ in range(50):
        reg.say(s, "w" * 50)
        clock.now += 60.0
        lines(m)  # reads everything: never over 500 bytes
    assert hooks.evicted == [] and m.soft_since is None


def test_soft_limit_clock_restarts_after_draining():
    clock = FakeClock()
    reg = Registry(outbox_limit=100_000, soft_limit=500, soft_seconds=10.0, clock=clock)
    hooks = Hooks(reg)
    s, m = make(reg, "s:1", "m:2")
    for _ in range(6):
        reg.say(s, "q" * 100)
    assert m.soft_since == clock.now
    # The owner drained it (what the server does after a complete send).
    lines(m)
    m.soft_since = None
    clock.now += 100.0
    for _ in range(6):
        reg.say(s, "q" * 100)
    assert hooks.evicted == [] and m.soft_since == clock.now


def test_soft_limit_off_when_not_below_hard_limit():
    reg = Registry(outbox_limit=1000, soft_limit=5000)
    assert reg.soft_limit == 0
    reg = Registry(outbox_limit=1000, soft_limit=0)
    assert reg.soft_limit == 0


#: Each case: the Registry's arguments, and the hard limit, soft limit and seconds it must then
#: have, spelled out. The defaults are the server's documented ones (README's limits table).
LIMIT_CASES = [
    pytest.param({}, 1024 * 1024, 256 * 1024, 10.0, id="defaults"),
    pytest.param({"outbox_limit": 1000, "soft_limit": 500, "soft_seconds": 3.0}, 1000, 500, 3.0,
                 id="small"),
]


@pytest.mark.parametrize("kw, hard, soft, seconds", LIMIT_CASES)
def test_blocked_member_exactly_at_the_hard_limit_with_the_soft_limit_on_stays(kw, hard, soft, seconds):
    """Exactly the hard limit queued is not over it, even for a member whose socket is full."""
    clock = FakeClock()
    reg = Registry(clock=clock, **kw)
    hooks = Hooks(reg)
    (m,) = make(reg, "m:1")
    m.blocked = True
    reg.send(m, b"x" * (hard - 1))
    reg.send(m, b"x")
    assert m.queued == hard and hooks.evicted == []
    assert m.soft_since == clock.now  # over the soft limit, whose clock has only just started
    reg.send(m, b"x")  # one byte over the hard limit: out at once, the soft clock notwithstanding
    assert hooks.evicted == [(m, "slow-consumer")]


@pytest.mark.parametrize("kw, hard, soft, seconds", LIMIT_CASES)
def test_exactly_the_soft_limit_starts_no_clock(kw, hard, soft, seconds):
    clock = FakeClock()
    reg = Registry(clock=clock, **kw)
    (m,) = make(reg, "m:1")
    reg.send(m, b"x" * soft)
    assert m.soft_since is None
    reg.send(m, b"x")
    assert m.soft_since == clock.now


@pytest.mark.parametrize("kw, hard, soft, seconds", LIMIT_CASES)
def test_exactly_soft_seconds_over_the_soft_limit_is_not_yet_too_long(kw, hard, soft, seconds):
    clock = FakeClock()  # 1000.0: it and every time below are exact in binary floating point
    reg = Registry(clock=clock, **kw)
    hooks = Hooks(reg)
    (m,) = make(reg, "m:1")
    reg.send(m, b"x" * (soft + 1))
    started = clock.now
    assert m.soft_since == started
    clock.now = started + seconds
    reg.send(m, b"x")
    assert hooks.evicted == [] and m.soft_since == started
    clock.now = started + seconds + 1 / 1024
    reg.send(m, b"x")
    assert hooks.evicted == [(m, "slow-consumer")]


# -- leaving during a broadcast ------------------------------------------------------------------

def test_several_members_evicted_in_one_broadcast():
    reg = Registry(outbox_limit=300, soft_limit=0)
    hooks = Hooks(reg)
    s, *members = make(reg, "s:1", *(f"m:{i}" for i in range(8)))
    readers, sleepers = members[:3], members[3:]
    for m in sleepers:
        m.queued = 290  # already near the limit, and not reading
        m.blocked = True
    reg.say(s, "tip over")
    assert sorted(m.id for m, _ in hooks.evicted) == sorted(m.id for m in sleepers)
    assert all(reason == "slow-consumer" for _, reason in hooks.evicted)
    assert list(s.room.members) == [s] + readers
    for m in readers:
        got = lines(m)
        assert got[0] == "MSG lobby s:1 tip over"
        assert sorted(got[1:]) == sorted(f"PART lobby {m.id} slow-consumer" for m in sleepers)
    reg.say(s, "after")
    assert all(lines(m) == ["MSG lobby s:1 after"] for m in readers)


def test_evict_hook_that_removes_another_member_is_safe():
    # presence_limit keeps PART quiet, so b is over the limit from the MSG alone and is still
    # waiting for its own check when the hook removes it.
    reg = Registry(outbox_limit=300, soft_limit=0, presence_limit=2)
    s, a, b, c, d = make(reg, "s:1", "a:2", "b:3", "c:4", "d:5")
    evicted = []

    def on_evict(member, reason):
        evicted.append(member)
        if member is a:
            reg.remove(b, "disconnected")  # e.g. the owner notices b's socket died meanwhile

    reg.on_evict = on_evict
    a.queued = b.queued = 290
    a.blocked = b.blocked = True
    reg.say(s, "boom")
    assert evicted == [a]  # b was removed by the hook before its own check; not evicted twice
    assert b.gone is None and reg.find("b:3") is None
    assert list(s.room.members) == [s, c, d]
    assert lines(c) == ["MSG lobby s:1 boom"]
    reg.say(s, "after")
    assert lines(d) == ["MSG lobby s:1 boom", "MSG lobby s:1 after"]


def test_evict_hook_that_removes_the_sender_and_whole_room_is_safe():
    reg = Registry(outbox_limit=300, soft_limit=0)
    s, a, b = make(reg, "s:1", "a:2", "b:3")
    (other,) = make(reg, "o:4")
    reg.join(other, "dev")

    def on_evict(member, reason):
        for m in list(reg.ids.values()):
            if m.room is not None and m.room.name == "lobby":
                reg.remove(m, "server-shutdown", announce=False)

    reg.on_evict = on_evict
    a.queued = 290
    a.blocked = True
    reg.say(s, "last words")
    assert "lobby" not in reg.rooms
    assert list(reg.ids) == ["o:4"]
    reg.broadcast_all(b"BYE server-shutdown\n")
    assert lines(other)[-1] == "BYE server-shutdown"


def test_broadcast_all_with_evictions_across_rooms():
    reg = Registry(outbox_limit=100, soft_limit=0)
    hooks = Hooks(reg)
    a, b, c, d = make(reg, "a:1", "b:2", "c:3", "d:4")
    reg.join(c, "dev")
    reg.join(d, "dev")
    for m in (a, b, c, d):
        lines(m)
    b.queued = c.queued = 95
    b.blocked = c.blocked = True
    reg.broadcast_all(b"NOTICE something\n")
    assert {m.id for m, _ in hooks.evicted} == {"b:2", "c:3"}
    assert lines(a)[0] == "NOTICE something"
    assert lines(d)[0] == "NOTICE something"
    assert len(reg) == 2


def test_ready_hook_that_removes_members_is_safe():
    reg = Registry()
    s, a, b = make(reg, "s:1", "a:2", "b:3")
    reg.ready = []
    reg.on_ready = lambda: reg.remove(b)
    reg.say(s, "hi")
    assert lines(a) == ["MSG lobby s:1 hi", "PART lobby b:3 disconnected"]
    assert list(s.room.members) == [s, a]

"""With --redis, accounts and bans are in Redis: what one node registers or bans, every node knows.

Two bin/chat-server nodes on a throwaway redis-server (skipped where it is not installed).
"""

from test_cluster import node, redis_server  # noqa: F401 (fixtures)


def test_accounts_and_bans_are_shared_by_the_nodes(node, clients):  # noqa: F811
    one = node("n1", "--oper", "boss")
    two = node("n2", "--oper", "boss")
    a = clients(one)
    a.send("NICK ann")
    a.send("REGISTER ann's password")
    assert a.sync()[-1] == "ACCOUNT ann"
    a.close()
    two.wait_for(r"^Accounts: account ann is registered \(cluster\)$")
    b = clients(two)
    b.send("NICK ann")  # registered on the other node: refused here too
    assert b.sync()[-1] == "ERR nick-registered nickname 'ann' is registered; LOGIN ann <password> to use it"
    b.send("LOGIN ann ann's password")
    assert b.expect("ACCOUNT ") == "ACCOUNT ann"
    boss = clients(one)
    boss.send("NICK boss")
    boss.send("REGISTER boss password")
    assert boss.expect("ACCOUNT ") == "ACCOUNT boss"
    victim = clients(two)
    victim.send("NICK mallory")
    victim.sync()
    boss.send("BAN mallory")  # on node one; mallory is on node two
    assert boss.expect("BANNED ") == "BANNED nick mallory"
    assert victim.expect_closed()[-1] == "BYE banned"
    again = clients(two)
    again.send("NICK mallory")
    assert again.expect_closed()[-1] == "BYE banned"
    boss.send("UNBAN mallory")
    assert boss.expect("UNBANNED ") == "UNBANNED nick mallory"
    two.wait_for(r"^Accounts: nick mallory is no longer banned \(cluster\)$")
    free = clients(two)
    free.send("NICK mallory")
    assert free.sync()[-1] == f"NICK {free.id} mallory"

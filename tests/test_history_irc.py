"""Room history on the IRC listener: replay on JOIN, and IRCv3 draft/chathistory in a batch.

A real bin/chat-server with --history on and --irc-port 0, spoken to over raw sockets.
"""

import re

from conftest import LineClient

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def start_irc(start_server, tmp_path, *args):
    server = start_server("--history", "on", "--data-dir", tmp_path, "--irc-port", "0",
                          "--server-name", "irc.test", *args)
    server.irc_port = int(server.wait_for(r"IRC listening on \S+:(\d+)").group(1))
    return server


class Irc(LineClient):
    def __init__(self, server, nick, caps=()):
        super().__init__(server.irc_port, hello=False)
        self.nick = nick
        if caps:
            self.send("CAP LS 302")
            self.ls = self.until(r" CAP \* LS ")
            self.send("CAP REQ :" + " ".join(caps))
            self.until(r" CAP \S+ ACK ")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        if caps:
            self.send("CAP END")
        self.isupport = " ".join(self.collect(" 005 ", r" (422|376) "))

    def recv_line(self, timeout=None):
        return super().recv_line(timeout).rstrip("\r")

    def until(self, pattern):
        """Lines up to and including the first matching ``pattern``; returns that line."""
        while True:
            line = self.recv_line()
            if re.search(pattern, line):
                return line

    def collect(self, keep, end):
        """Lines containing ``keep`` up to the line matching ``end``."""
        out = []
        while True:
            line = self.recv_line()
            if re.search(end, line):
                return out
            if keep in line:
                out.append(line)

    def sync(self, token="sync"):
        """Lines before the answer to a PING: everything queued before it."""
        self.send(f"PING {token}")
        lines = []
        while True:
            line = self.recv_line()
            if line == f":irc.test PONG irc.test {token}":
                return lines
            lines.append(line)

    def join(self, channel):
        self.send(f"JOIN {channel}")
        self.until(f" 366 {self.nick} {channel} ")


def test_join_replays_the_recent_lines_with_their_time(start_server, clients, tmp_path):
    server = start_irc(start_server, tmp_path, "--scrollback", "2")
    ann = clients(server)
    ann.send("NICK ann")
    ann.send("SEND one\nSEND two\nSEND three")
    ann.sync()
    bob = Irc(server, "bob", ["server-time"])
    try:
        assert "CHATHISTORY=100" in bob.isupport and "MSGREFTYPES=msgid,timestamp" in bob.isupport
        assert " batch draft/chathistory" in bob.ls
        bob.join("#lobby")
        for text in ("two", "three"):
            assert re.fullmatch(rf"@time={TIME} :ann!~native@127\.0\.0\.1 PRIVMSG #lobby {text}",
                                bob.recv_line())
        carl = Irc(server, "carl")
        carl.join("#lobby")
        assert carl.recv_line() == ":ann!~native@127.0.0.1 PRIVMSG #lobby two"
        assert carl.recv_line() == ":ann!~native@127.0.0.1 PRIVMSG #lobby three"
        carl.send("PRIVMSG #lobby :from irc")
        assert ann.expect("MSG ") == "MSG lobby carl from irc"
        carl.close()
    finally:
        bob.close()


CAPS = ["message-tags", "server-time", "echo-message", "batch", "draft/chathistory"]
LINE_RE = re.compile(rf"@batch=(\S+);time=({TIME});msgid=(\S+) :bar!~bar@127\.0\.0\.1 PRIVMSG "
                     r"#chan (m\d)")


def test_chathistory_subcommands(start_server, tmp_path):
    server = start_irc(start_server, tmp_path, "--flood-rate", "0")
    bar = Irc(server, "bar", CAPS)
    try:
        bar.join("#chan")
        assert bar.sync() == []  # no replay to a client that asks for history itself
        ids, times = [], []
        for i in range(10):
            bar.send(f"PRIVMSG #chan m{i}")
            m = re.fullmatch(rf"@time=({TIME});msgid=(\S+) :bar!~bar@127\.0\.0\.1 PRIVMSG #chan m{i}",
                             bar.recv_line())
            assert m, "echo expected"
            times.append(m.group(1))
            ids.append(m.group(2))
        assert len(set(ids)) == 10

        def ask(line):
            bar.send("CHATHISTORY " + line)
            ref, lines = read_batch(bar, "chathistory #chan")
            texts = []
            for line in lines:
                got = LINE_RE.fullmatch(line)
                assert got and got.group(1) == ref, line
                assert ids[int(got.group(4)[1:])] == got.group(3)
                texts.append(got.group(4))
            return texts

        m = [f"m{i}" for i in range(10)]
        assert ask("LATEST #chan * 3") == m[7:]
        assert ask("LATEST #chan * 100") == m
        assert ask(f"LATEST #chan msgid={ids[5]} 10") == m[6:]
        assert ask(f"BEFORE #chan msgid={ids[5]} 2") == m[3:5]
        assert ask(f"AFTER #chan msgid={ids[5]} 2") == m[6:8]
        assert ask(f"AROUND #chan msgid={ids[7]} 1") == m[7:8]
        assert ask(f"AROUND #chan msgid={ids[7]} 3") == m[6:9]
        assert ask(f"BETWEEN #chan msgid={ids[0]} msgid={ids[9]} 10") == m[1:9]
        assert ask(f"BETWEEN #chan msgid={ids[0]} msgid={ids[9]} 3") == m[1:4]
        assert ask(f"BETWEEN #chan msgid={ids[9]} msgid={ids[0]} 3") == m[6:9]
        # A time a client was shown (rounded to the millisecond) names the messages shown with
        # it: "between" two of them excludes both ends, whichever comes first.
        inside = [m[i] for i in range(10) if times[0] < times[i] < times[9]]
        assert ask(f"BETWEEN #chan timestamp={times[0]} timestamp={times[9]} 10") == inside
        assert ask(f"BETWEEN #chan timestamp={times[9]} timestamp={times[0]} 10") == inside
        assert ask(f"AFTER #chan timestamp={times[5]} 10") == [m[i] for i in range(10)
                                                               if times[i] > times[5]]
        assert ask(f"BEFORE #chan timestamp={times[5]} 10") == [m[i] for i in range(10)
                                                                if times[i] < times[5]]
        assert ask("BEFORE #chan timestamp=2000-01-01T00:00:00.000Z 5") == []
        assert ask("AFTER #chan timestamp=2000-01-01T00:00:00.000Z 2") == m[:2]
        assert ask("BEFORE #chan msgid=nosuchid 5") == []

        bar.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z "
                 "timestamp=2100-01-01T00:00:00.000Z 10")
        start = bar.recv_line()
        ref = re.fullmatch(r":irc\.test BATCH \+(\S+) draft/chathistory-targets", start).group(1)
        assert re.fullmatch(rf"@batch={ref} :irc\.test CHATHISTORY TARGETS #chan {TIME}",
                            bar.recv_line())
        assert bar.recv_line() == f":irc.test BATCH -{ref}"

        bar.send("CHATHISTORY LATEST #elsewhere * 10")
        assert bar.recv_line() == (":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST #elsewhere "
                                   ":You cannot read that history")
        bar.send("CHATHISTORY BEFORE #chan * 10")
        assert bar.recv_line() == ":irc.test FAIL CHATHISTORY INVALID_PARAMS BEFORE :Bad message reference"
        bar.send("CHATHISTORY SIDEWAYS #chan * 10")
        assert bar.recv_line() == ":irc.test FAIL CHATHISTORY INVALID_PARAMS SIDEWAYS :Unknown subcommand"
    finally:
        bar.close()


def test_irc_lines_in_native_history_are_plain_and_notices_kept(start_server, clients, tmp_path):
    server = start_irc(start_server, tmp_path)
    dora = Irc(server, "dora")
    try:
        dora.join("#lobby")
        dora.send("PRIVMSG #lobby :\x02bold\x02 and \x0304red\x03")
        dora.send("NOTICE #lobby :a notice")
        dora.send("PRIVMSG #lobby :\x01ACTION waves\x01")
        dora.sync()
        ann = clients(server, hello=False)
        assert ann.recv_line().startswith("HELLO ")
        assert ann.recv_line().startswith("JOIN lobby ")
        lines = [ann.recv_line() for _ in range(4)]
        assert [re.sub(r"^HIST lobby \S+ \S+ ", "", line) for line in lines] == [
            "dora bold and red", "dora a notice", "dora * waves", "HISTEND lobby"]  # as MSG shows them
    finally:
        dora.close()


class Sasl(Irc):
    """An IRC client that logs in to account ``nick`` with SASL PLAIN while it registers."""

    def __init__(self, server, nick, password, caps=CAPS):
        import base64

        LineClient.__init__(self, server.irc_port, hello=False)
        self.nick = nick
        self.send("CAP LS 302")
        self.until(r" CAP \* LS ")
        self.send("CAP REQ :" + " ".join([*caps, "sasl"]))
        self.until(r" CAP \S+ ACK ")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        self.send("AUTHENTICATE PLAIN")
        self.until(r"^AUTHENTICATE \+$")
        self.send("AUTHENTICATE " + base64.b64encode(f"\0{nick}\0{password}".encode()).decode())
        self.until(r" 903 ")
        self.send("CAP END")
        self.until(r" (422|376) ")


def read_batch(client, kind):
    """``(reference, lines)`` of the batch ``kind`` (``chathistory #chan``) that comes next."""
    start = client.recv_line()
    ref = re.fullmatch(rf":irc\.test BATCH \+(\S+) {re.escape(kind)}", start)
    assert ref, start
    lines = []
    while True:
        line = client.recv_line()
        if line == f":irc.test BATCH -{ref.group(1)}":
            return ref.group(1), lines
        lines.append(line)


def history_of(client, target, query="LATEST {} * 10"):
    """``(source nick, command target, text)`` of each line of a CHATHISTORY answer about ``target``."""
    client.send("CHATHISTORY " + query.format(target))
    ref, lines = read_batch(client, f"chathistory {target}")
    out = []
    for line in lines:
        m = re.fullmatch(rf"@batch={ref};time={TIME};msgid=\S+ :(\S+?)!\S+ PRIVMSG (\S+) :?(.*)", line)
        assert m, line
        out.append(m.groups())
    return out


def test_private_history_belongs_to_the_accounts_and_survives_a_restart(start_server, clients,
                                                                       tmp_path):
    server = start_irc(start_server, tmp_path, "--flood-rate", "0")
    for name in ("ann", "bob"):
        c = clients(server)
        c.send(f"NICK {name}")
        c.send(f"REGISTER {name}'s password")
        assert c.expect("ACCOUNT ", skip=("JOIN ", "PART ", "NICK ", "HIST")) == f"ACCOUNT {name}"
        c.close()
    ann = Sasl(server, "ann", "ann's password")
    bob = Sasl(server, "bob", "bob's password")
    carol = Irc(server, "carol", CAPS)  # no account
    dave = Irc(server, "dave", CAPS)
    try:
        for c, line in ((ann, "PRIVMSG bob :hi bob"), (ann, "PRIVMSG bob :are you there?"),
                        (bob, "PRIVMSG ann :yes"), (carol, "PRIVMSG ann :hello from a guest"),
                        (carol, "PRIVMSG dave :between guests: never kept"),
                        (ann, "PRIVMSG ann :a note to myself")):
            c.send(line)
            c.sync()  # (the echo) in this order, one client after the other
        for c in (ann, bob, carol, dave):
            c.sync()
        assert history_of(ann, "bob") == [("ann", "bob", "hi bob"), ("ann", "bob", "are you there?"),
                                          ("bob", "ann", "yes")]
        assert history_of(bob, "ANN") == [("ann", "bob", "hi bob"), ("ann", "bob", "are you there?"),
                                          ("bob", "ann", "yes")]
        assert history_of(ann, "carol") == [("carol", "ann", "hello from a guest")]
        assert history_of(ann, "ann") == [("ann", "ann", "a note to myself")]
        assert history_of(ann, "bob", "BEFORE {} timestamp=2100-01-01T00:00:00.000Z 1") == [
            ("bob", "ann", "yes")]
        ann.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z "
                 "timestamp=2100-01-01T00:00:00.000Z 10")
        _, targets = read_batch(ann, "draft/chathistory-targets")
        assert [t.split()[4] for t in targets] == ["bob", "carol", "ann"]  # by latest message
        for guest in (carol, dave):  # without an account there is no private history to read
            guest.send("CHATHISTORY LATEST ann * 10")
            assert guest.recv_line() == (":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST ann "
                                         ":You cannot read that history")
    finally:
        for c in (ann, bob, carol, dave):
            c.close()
    server.stop()
    import sqlite3

    db = sqlite3.connect(tmp_path / "history.sqlite3")
    kept = [row[0] for row in db.execute("SELECT text FROM messages WHERE room LIKE '@%'")]
    db.close()
    assert "between guests: never kept" not in kept and len(kept) == 5
    again = start_irc(start_server, tmp_path, "--flood-rate", "0")
    ann = Sasl(again, "ann", "ann's password")
    try:
        assert history_of(ann, "bob") == [("ann", "bob", "hi bob"), ("ann", "bob", "are you there?"),
                                          ("bob", "ann", "yes")]
    finally:
        ann.close()

"""Accounts on the native protocol: REGISTER, LOGIN, LOGOUT, registered nicknames, failed-login
limits, and the SQLite store under --data-dir (WAL, versioned schema, hashes only).

Real bin/chat-server processes and raw sockets; waits on lines, never sleeps.
"""

import sqlite3
import time


from chatroom.accounts.store import MIGRATIONS
from conftest import LineClient


def lobby(server, clients, n=2):
    made = [clients(server) for _ in range(n)]
    for c in made:
        c.sync()
    return made


def register(c, nick, password, *others):
    """``c`` takes ``nick`` and registers it; ``others`` in the room read the NICK line."""
    c.send(f"NICK {nick}")
    c.send(f"REGISTER {password}")
    assert c.sync() == [f"NICK {c.id} {nick}", f"ACCOUNT {nick}"]
    for other in others:
        assert other.sync() == [f"NICK {c.id} {nick}"]


def test_register_then_login_elsewhere_takes_the_nickname(server, clients):
    a, b = lobby(server, clients)
    register(a, "ann", "open sesame", b)
    server.wait_for(r"^Account ann registered$")
    b.send("NICK Ann")
    assert b.sync() == ["ERR nick-registered nickname 'Ann' is registered; LOGIN Ann <password> to use it"]
    b.send("LOGIN ann open sesame")
    assert b.sync() == ["ERR nick-taken nickname 'ann' is in use"]  # ann is still here
    a.send("QUIT")
    assert a.recv_line() == "BYE quit"
    assert b.recv_line() == "PART lobby ann quit"
    b.send("LOGIN ANN open sesame")
    assert b.recv_line() == f"NICK {b.id} ann"
    assert b.recv_line() == "ACCOUNT ann"
    server.wait_for(rf"^{b.id} logged in as ann$")
    b.send("LOGOUT")
    assert b.sync() == ["ACCOUNT *"]
    b.send("LOGOUT")
    assert b.sync() == ["ERR not-logged-in you are not logged in"]
    assert not any("open sesame" in line for line in server.lines)


def test_register_needs_a_nickname_and_a_fresh_name_and_a_good_password(server, clients):
    a, b = lobby(server, clients)
    a.send("REGISTER secret")
    assert a.sync() == ["ERR nick-required set a nickname (NICK) to register it"]
    a.send("REGISTER")
    assert a.sync() == ["ERR missing-argument usage: REGISTER <password>"]
    a.send("NICK bob")
    a.send("REGISTER ab")
    assert a.sync() == [f"NICK {a.id} bob", "ERR bad-password a password is 3 to 1024 characters"]
    a.send("REGISTER " + "x" * 1025)
    assert a.sync() == ["ERR bad-password a password is 3 to 1024 characters"]
    a.send("REGISTER good password")
    assert a.sync() == ["ACCOUNT bob"]
    b.sync()
    a.send("REGISTER another one")
    assert a.sync() == ["ERR account-exists 'bob' is already registered"]
    b.send("LOGIN bob")
    assert b.sync() == ["ERR missing-argument usage: LOGIN <nickname> <password>"]


def test_wrong_password_and_unknown_account_fail_alike(server, clients):
    a, b = lobby(server, clients)
    register(a, "carol", "right password", b)
    a.close()
    assert b.recv_line() == "PART lobby carol disconnected"
    timings = {}
    for name, line in (("wrong", "LOGIN carol wrong password"), ("unknown", "LOGIN nobody right password")):
        start = time.monotonic()
        b.send(line)
        assert b.recv_line() == "ERR login-failed no such account, or wrong password"
        timings[name] = time.monotonic() - start
    # Both are a full Argon2id check (tens of ms); neither answers in the time of a dict lookup.
    assert min(timings.values()) > 0.01, timings


def test_passwords_are_compared_after_nfkc(server, clients):
    a, b = lobby(server, clients)
    register(a, "dave", "ｆｕｌｌｗｉｄｔｈ１")  # full-width letters and digit
    a.close()
    b.sync()
    b.send("LOGIN dave fullwidth1")
    assert b.expect("ACCOUNT ") == "ACCOUNT dave"


def test_failed_logins_are_limited_per_account(server, clients):
    a, b, c = lobby(server, clients, 3)
    register(a, "erin", "the password", b, c)
    register(c, "frank", "the password", a, b)
    a.close()
    assert b.recv_line() == "PART lobby erin disconnected"
    c.close()
    assert b.recv_line() == "PART lobby frank disconnected"
    for _ in range(5):
        b.send("LOGIN erin guess")
        assert b.recv_line() == "ERR login-failed no such account, or wrong password"
    b.send("LOGIN erin the password")  # right, but too late
    assert b.expect("ERR ") == "ERR rate-limited too many failed logins; try again later"
    server.wait_for(r"^WARNING: Login to erin from 127\.0\.0\.1 refused: too many failures$")
    b.send("LOGIN frank the password")  # another account from the same address is fine
    assert b.expect("ACCOUNT ") == "ACCOUNT frank"


def test_failed_logins_are_limited_per_address(server, clients):
    a, b = lobby(server, clients)
    register(a, "quinn", "quinn's password", b)
    a.close()
    assert b.recv_line() == "PART lobby quinn disconnected"
    for i in range(20):  # 20 accounts, one failure each: no account is over its own limit
        b.send(f"LOGIN nobody{i} guess")
    for i in range(20):
        assert b.recv_line() == "ERR login-failed no such account, or wrong password"
    b.send("LOGIN quinn quinn's password")  # right, but this address is over its limit
    assert b.recv_line() == "ERR rate-limited too many failed logins; try again later"
    other = LineClient(server.port, source="127.0.0.2")  # another address is not
    try:
        other.send("LOGIN quinn quinn's password")
        assert other.expect("ACCOUNT ") == "ACCOUNT quinn"
    finally:
        other.close()


def test_chat_goes_on_while_passwords_are_hashed(server, clients):
    a, b, c = lobby(server, clients, 3)
    c.send("".join(f"LOGIN user{i} some password\n" for i in range(4)))  # ~4 hashes in a row
    a.send("SEND not held up")
    assert b.recv_line() == f"MSG lobby {a.id} not held up"
    # While c's reader waits for its hashes, the message still reaches c's own outbox: it
    # arrives before the last answer, and the answers come in the order asked.
    lines = [c.recv_line() for _ in range(5)]
    assert lines.index(f"MSG lobby {a.id} not held up") < 4
    lines.remove(f"MSG lobby {a.id} not held up")
    assert lines == ["ERR login-failed no such account, or wrong password"] * 4


def test_accounts_persist_in_a_wal_sqlite_file_with_hashes_only(start_server, clients, tmp_path):
    data = tmp_path / "state"
    server = start_server("--data-dir", data)
    a = clients(server)
    register(a, "gina", "persistent pw")
    assert server.stop() == 0
    db = sqlite3.connect(data / "chatroom.sqlite3")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        (stored,) = db.execute("SELECT password FROM accounts WHERE key = 'gina'").fetchone()
    finally:
        db.close()
    assert stored.startswith("$argon2id$") and "persistent" not in stored
    server = start_server("--data-dir", data)
    b = clients(server)
    b.send("NICK gina")
    assert b.sync()[0].startswith("ERR nick-registered ")
    b.send("LOGIN gina persistent pw")
    assert b.expect("ACCOUNT ") == "ACCOUNT gina"


def test_an_older_schema_is_migrated(start_server, clients, tmp_path):
    data = tmp_path / "state"
    data.mkdir()
    db = sqlite3.connect(data / "chatroom.sqlite3")
    db.execute(MIGRATIONS[0])
    from chatroom.accounts.passwords import scrypt_hash

    # The first format: scrypt. Still verified after the migration.
    db.execute("INSERT INTO accounts VALUES ('hal', 'Hal', ?, 0)", (scrypt_hash("old password"),))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    server = start_server("--data-dir", data)
    a = clients(server)
    a.send("LOGIN hal old password")
    assert a.expect("ACCOUNT ") == "ACCOUNT Hal"
    db = sqlite3.connect(data / "chatroom.sqlite3")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        db.close()


def test_an_unusable_data_dir_stops_the_server(tmp_path):
    import subprocess
    import sys

    from conftest import BIN, ROOT, WAIT

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run([sys.executable, str(BIN / "chat-server"), "--port", "0",
                             "--data-dir", str(blocker / "sub")],
                            capture_output=True, text=True, cwd=ROOT, timeout=WAIT)
    assert result.returncode == 1
    assert "ERROR: cannot open the accounts database in " in result.stdout


# -- IRC: SASL PLAIN, draft/account-registration, registered nicknames ----------------------------

def irc_client(server):
    from conftest import LineClient

    port = int(server.wait_for(r"^IRC listening on \S+:(\d+)$").group(1))
    return LineClient(port, hello=False)


def irc_until(c, pattern):
    """IRC lines up to one matching ``pattern`` in full (CR stripped); returns that one."""
    import re

    while True:
        line = c.recv_line().rstrip("\r")
        if re.fullmatch(pattern, line):
            return line


def test_irc_sasl_plain_logs_in_to_a_registered_nickname(start_server, clients):
    import base64

    server = start_server("--irc-port", 0)
    a = clients(server)
    register(a, "ivy", "ivy's password")
    a.close()
    irc = irc_client(server)
    try:
        irc.send("CAP LS 302")
        caps = irc_until(irc, r":chatroom\.local CAP \* LS :.*")
        assert "sasl=PLAIN" in caps.split() and "draft/account-registration=before-connect" in caps.split()
        irc.send("NICK ivy")
        irc.send("USER ivy 0 * :Ivy")
        irc.send("CAP REQ :sasl")
        irc_until(irc, r":chatroom\.local CAP \* ACK :?sasl")
        irc.send("AUTHENTICATE PLAIN")
        assert irc.recv_line() == "AUTHENTICATE +\r"
        irc.send("AUTHENTICATE " + base64.b64encode(b"\0ivy\0wrong password").decode())
        assert irc.recv_line() == ":chatroom.local 904 * :SASL authentication failed\r"
        irc.send("CAP END")  # not logged in: the registered nickname is refused
        assert irc.recv_line() == (":chatroom.local 433 * ivy :Nickname is registered; "
                                   "log in with SASL to use it\r")
        irc.send("AUTHENTICATE PLAIN")
        assert irc.recv_line() == "AUTHENTICATE +\r"
        irc.send("AUTHENTICATE " + base64.b64encode(b"ivy\0ivy\0ivy's password").decode())
        assert irc.recv_line() == (":chatroom.local 900 * *!*@127.0.0.1 ivy "
                                   ":You are now logged in as ivy\r")
        assert irc.recv_line() == ":chatroom.local 903 * :SASL authentication successful\r"
        irc.send("NICK ivy")
        irc_until(irc, r":chatroom\.local 001 ivy .*")
        server.wait_for(r"^127\.0\.0\.1:\d+ logged in as ivy$")
        irc.send("WHOIS ivy")  # WHOIS names the account
        irc_until(irc, r":chatroom\.local 330 ivy ivy ivy :is logged in as")
    finally:
        irc.close()


def test_irc_register_and_registered_nick_after_connection(start_server, clients):
    server = start_server("--irc-port", 0)
    irc = irc_client(server)
    try:
        irc.send("NICK jay")
        irc.send("USER jay 0 * :Jay")
        irc_until(irc, r":chatroom\.local (376|422) jay .*")
        irc.send("REGISTER * * jay's password")
        assert irc.recv_line() == ":chatroom.local REGISTER SUCCESS jay :Account created\r"
        assert irc.recv_line() == (":chatroom.local 900 jay jay!~jay@127.0.0.1 jay "
                                   ":You are now logged in as jay\r")
        irc.send("REGISTER * * again")
        assert irc.recv_line() == (":chatroom.local FAIL REGISTER ALREADY_AUTHENTICATED jay "
                                   ":You are already logged in\r")
        native = clients(server)
        native.send("NICK jay")
        assert native.sync() == ["ERR nick-registered nickname 'jay' is registered; "
                                 "LOGIN jay <password> to use it"]
        native.send("NICK kim")
        native.send("REGISTER kim's password")
        assert native.sync() == [f"NICK {native.id} kim", "ACCOUNT kim"]
        native.send("NICK kimmy")  # a registered account may go by another name
        native.sync()
        irc.send("NICK kim")
        assert irc.recv_line() == (":chatroom.local 433 jay kim :Nickname is registered; "
                                   "log in with SASL to use it\r")
    finally:
        irc.close()


def test_irc_register_before_the_connection_is_registered(start_server):
    server = start_server("--irc-port", 0)
    irc = irc_client(server)
    try:
        irc.send("CAP LS 302")
        irc_until(irc, r":chatroom\.local CAP \* LS :.*draft/account-registration=before-connect.*")
        irc.send("REGISTER * * lee's password")  # no NICK yet: the account name is the nickname
        assert irc.recv_line() == (":chatroom.local FAIL REGISTER NEED_NICK * "
                                   ":Send NICK first: the account name is your nickname\r")
        irc.send("NICK lee")
        irc.send("REGISTER * * lee's password")
        assert irc.recv_line() == ":chatroom.local REGISTER SUCCESS lee :Account created\r"
        assert irc.recv_line() == (":chatroom.local 900 * *!*@127.0.0.1 lee "
                                   ":You are now logged in as lee\r")
        irc.send("USER lee 0 * :Lee")
        irc.send("CAP END")
        assert irc_until(irc, r":chatroom\.local 001 lee .*")  # the registered nick is its own
    finally:
        irc.close()
    off = start_server("--irc-port", 0, "--register-before-connect", "off")
    irc = irc_client(off)
    try:
        irc.send("CAP LS 302")
        caps = irc_until(irc, r":chatroom\.local CAP \* LS :.*")
        assert "draft/account-registration" in caps.split()  # offered, without before-connect
        irc.send("NICK max")
        irc.send("REGISTER * * max's password")
        assert irc.recv_line() == (":chatroom.local FAIL REGISTER COMPLETE_CONNECTION_REQUIRED * "
                                   ":Register your connection first\r")
    finally:
        irc.close()


def chat_client_as(server, nick, password, keys=b"CONNECT\nWHO\nQUIT\n"):
    """Run bin/chat-client as ``nick`` (the password on its first input line, then ``keys``);
    returns (exit code, what it printed)."""
    import subprocess
    import sys

    from conftest import BIN, ROOT, WAIT

    result = subprocess.run(
        [sys.executable, str(BIN / "chat-client"), "--port", str(server.port), "--nick", nick,
         "--password"], input=password.encode() + b"\n" + keys, capture_output=True,
        cwd=ROOT, timeout=WAIT)
    return result.returncode, result.stdout.decode()


def test_chat_client_logs_in_after_connect(server, clients):
    import subprocess
    import sys

    from conftest import BIN, ROOT, WAIT

    a = clients(server)
    register(a, "lee", "lee's password")
    a.close()
    code, out = chat_client_as(server, "lee", "lee's password")
    assert code == 0, out
    assert "* Logged in as lee\n* People in lobby: lee\n" in out
    assert "lee's password" not in out
    result = subprocess.run(
        [sys.executable, str(BIN / "chat-client"), "--port", str(server.port), "--password"],
        input=b"", capture_output=True, cwd=ROOT, timeout=WAIT)
    assert result.returncode == 2 and "--password needs --nick" in result.stderr.decode()


def test_account_add_makes_an_operator_account_before_the_server_starts(start_server, clients,
                                                                       tmp_path):
    import subprocess
    import sys

    from conftest import BIN, ROOT

    def add(name, password):
        return subprocess.run([sys.executable, str(BIN / "chat-server"), "account", "add", name,
                               "--data-dir", str(tmp_path)], input=password + "\n", text=True,
                              capture_output=True, cwd=ROOT, timeout=60)

    made = add("Boss", "the boss's password")
    assert made.returncode == 0 and made.stdout == f"Account Boss created in {tmp_path}\n"
    assert "password" not in made.stdout + made.stderr.replace("a password is", "")
    again = add("boss", "another password")
    assert again.returncode == 1 and again.stderr == "chat-server account: 'boss' is already registered\n"
    short = add("kim", "ab")
    assert short.returncode == 1 and "a password is 3 to" in short.stderr
    bad = add("127-0-0-1-4000", "a fine password")  # a guest's name is nobody's account
    assert bad.returncode == 1 and "cannot be an account name" in bad.stderr

    server = start_server("--data-dir", tmp_path, "--oper", "boss")
    c = clients(server)
    c.send("NICK Boss")  # registered: taken only by logging in
    assert c.expect("ERR ").startswith("ERR nick-registered ")
    c.send("LOGIN boss the boss's password")
    assert c.sync() == [f"NICK {c.id} Boss", "ACCOUNT Boss"]
    c.send("BAN nobody-here")  # and it is the --oper account: bans are for server operators
    assert c.sync() == ["BANNED nick nobody-here"]

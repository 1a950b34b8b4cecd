"""Accounts on the native protocol: REGISTER, LOGIN, LOGOUT, registered nicknames, failed-login
limits, and the SQLite store under --data-dir (WAL, versioned schema, hashes only).

Real bin/chat-server processes and raw sockets; waits on lines, never sleeps.
"""

import sqlite3
import time

import pytest

from chatroom.accounts.store import MIGRATIONS


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
    a.send("REGISTER abc")
    assert a.sync() == [f"NICK {a.id} bob", "ERR bad-password a password is 5 to 256 characters"]
    a.send("REGISTER " + "x" * 257)
    assert a.sync() == ["ERR bad-password a password is 5 to 256 characters"]
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
    # Both are a full scrypt check (tens of ms); neither answers in the time of a dict lookup.
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
    assert stored.startswith("scrypt$") and "persistent" not in stored
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
    from chatroom.accounts.passwords import hash_password

    db.execute("INSERT INTO accounts VALUES ('hal', 'Hal', ?, 0)", (hash_password("old password"),))
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

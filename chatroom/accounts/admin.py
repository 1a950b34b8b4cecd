"""``chat-server account add NAME``: create an account from the shell, before the server starts.

An operator's first account (the one ``--oper NAME`` names) should not have to be registered over
the network, racing anyone who connects first. This writes it straight into the accounts database
of ``--data-dir``, hashed like every other (Argon2id), under the same rules as ``REGISTER``. The
password is read without echo on a terminal (twice), else as the first line of standard input,
and is never shown or logged.

A running server reads the accounts when it starts: add accounts before starting it (or register
them with ``REGISTER`` while it runs).
"""

import argparse
import getpass
import sqlite3
import sys

from ..codec.irc import GUEST_NICK_RE
from ..codec.native import ProtocolError
from ..codec.text import NAME_RE
from ..settings import add_data_dir_argument
from .passwords import hash_password, normalize
from .store import SqliteStore


def add_account(data_dir, name, password):
    """Create account ``name`` in ``data_dir``; ProtocolError if the name or password is refused."""
    if not NAME_RE.match(name) or GUEST_NICK_RE.match(name):
        raise ProtocolError("nick-invalid", f"'{name[:64]}' cannot be an account name "
                            "(the rules of a nickname, docs/protocol.md)")
    password = normalize(password)
    store = SqliteStore(data_dir)
    try:
        if not store.create(name.casefold(), name, hash_password(password)):
            raise ProtocolError("account-exists", f"'{name}' is already registered")
    finally:
        store.close()


def _read_password():
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ProtocolError("bad-password", "the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="chat-server account",
        description="Manage accounts in the server's --data-dir while it is stopped.")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create an account; the password is read from the terminal "
                                     "(without echo) or the first line of standard input")
    add.add_argument("name", help="the account name (the nickname it reserves)")
    add_data_dir_argument(add)
    args = parser.parse_args(argv)
    try:
        add_account(args.data_dir, args.name, _read_password())
    except ProtocolError as err:
        print(f"chat-server account: {err.text}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as err:
        print(f"chat-server account: cannot write {args.data_dir}: {err}", file=sys.stderr)
        return 1
    print(f"Account {args.name} created in {args.data_dir}")
    return 0

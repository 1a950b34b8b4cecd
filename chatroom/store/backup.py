"""``chat-server backup DEST``: a consistent copy of the data directory while the server runs.

Each database of ``--data-dir`` (accounts and bans, room history) is copied with SQLite's online
backup API, which reads one consistent snapshot while the server goes on writing, then checked
with ``PRAGMA integrity_check``. Restore by stopping the server and pointing ``--data-dir`` at the
copy (or moving its files into place). docs/operations.md says more.
"""

import argparse
import os
import sqlite3
import sys

from ..accounts.store import DB_NAME as ACCOUNTS_DB
from ..settings import add_data_dir_argument
from .history import DB_NAME as HISTORY_DB

DATABASES = (ACCOUNTS_DB, HISTORY_DB)


def backup(data_dir, dest):
    """Copy every database of ``data_dir`` into the directory ``dest``; returns the names copied.

    Refuses to overwrite: a database already in ``dest`` raises FileExistsError.
    """
    os.makedirs(dest, exist_ok=True)
    copied = []
    for name in DATABASES:
        source = os.path.join(data_dir, name)
        if not os.path.exists(source):
            continue
        target = os.path.join(dest, name)
        if os.path.exists(target):
            raise FileExistsError(f"{target} exists already")
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=1024)  # in steps: the server's writers are never held up long
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
            src.close()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"{target}: integrity check says {verdict}")
        copied.append(name)
    return copied


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="chat-server backup",
        description="Copy the server's databases (accounts, bans, history) while it runs.")
    parser.add_argument("dest", help="directory to write the copies into (created if missing)")
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    try:
        copied = backup(args.data_dir, args.dest)
    except (OSError, sqlite3.Error) as err:
        print(f"chat-server backup: {err}", file=sys.stderr)
        return 1
    if not copied:
        print(f"chat-server backup: no database in {args.data_dir}", file=sys.stderr)
        return 1
    for name in copied:
        print(f"Backed up {os.path.join(args.data_dir, name)} to {os.path.join(args.dest, name)}")
    return 0

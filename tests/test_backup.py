"""``chat-server backup``: a copy taken while people chat opens clean and restores everything."""

import subprocess
import sys
import threading

from conftest import BIN, ROOT, WAIT
from test_history import connect, history_server, say


def test_a_backup_taken_while_chatting_restores(start_server, clients, tmp_path):
    data, copy = tmp_path / "data", tmp_path / "copy"
    server = history_server(start_server, data, "--flood-rate", 0)
    ann, _ = connect(server, clients)
    ann.send("NICK ann")
    ann.send("REGISTER ann's password")
    assert ann.sync() == [f"NICK {ann.id} ann", "ACCOUNT ann"]
    say(ann, *(f"before {i}" for i in range(50)))
    talker, _ = connect(server, clients)
    stop = threading.Event()
    said = []

    def chat():  # keeps the history store writing while the backup reads
        while not stop.is_set() and len(said) < 2000:
            talker.send(f"SEND during {len(said)}")
            said.append(len(said))
            talker.sync()

    chatting = threading.Thread(target=chat, daemon=True)
    chatting.start()
    done = subprocess.run([sys.executable, str(BIN / "chat-server"), "backup", "--data-dir", str(data),
                           str(copy)], capture_output=True, text=True, cwd=ROOT, timeout=WAIT * 3)
    stop.set()
    chatting.join(WAIT)
    assert done.returncode == 0, done.stderr
    assert f"Backed up {data / 'chatroom.sqlite3'} to {copy / 'chatroom.sqlite3'}" in done.stdout
    assert f"Backed up {data / 'history.sqlite3'} to {copy / 'history.sqlite3'}" in done.stdout
    assert said  # the chat really went on during the backup
    server.stop()

    restored = history_server(start_server, copy)
    c, seen = connect(restored, clients)
    texts = [text for _, _, _, _, text in seen]
    assert texts[:1] and all(t.startswith(("before ", "during ")) for t in texts)
    assert "before 49" in texts or any(t.startswith("during ") for t in texts)
    c.send("LOGIN ann ann's password")  # the account came along
    assert c.sync() == [f"NICK {c.id} ann", "ACCOUNT ann"]


def test_backup_refuses_to_overwrite_and_says_when_there_is_nothing(tmp_path):
    empty = subprocess.run([sys.executable, str(BIN / "chat-server"), "backup", "--data-dir",
                            str(tmp_path / "none"), str(tmp_path / "copy")],
                           capture_output=True, text=True, cwd=ROOT, timeout=WAIT * 3)
    assert empty.returncode == 1
    assert empty.stderr == f"chat-server backup: no database in {tmp_path / 'none'}\n"

"""--password-file: native clients give PASS as their first line, IRC clients PASS before registering."""

import re

from conftest import LineClient


def test_native_clients_need_the_server_password(start_server, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("ｌｅｔ me in\nignored second line\n")  # NFKC: "let me in"
    server = start_server("--password-file", secret)
    inside = LineClient(server.port, hello=False)
    wrong = LineClient(server.port, hello=False)
    silent = LineClient(server.port, hello=False)
    try:
        for c in (inside, wrong, silent):
            assert c.recv_line().startswith("HELLO ")
        inside.send("PASS let me in")
        assert inside.expect("JOIN ", skip=()).startswith("JOIN lobby 127.0.0.1:")
        wrong.send("PASS let me out")
        assert wrong.expect_closed() == ["BYE wrong-password"]
        silent.send("SEND hello")  # not a PASS: never reaches the room
        assert silent.expect_closed() == ["BYE password-required"]
        inside.send("PASS let me in")  # later, harmless
        inside.send("WHO")
        assert inside.recv_line() == f"WHO lobby 127.0.0.1:{inside.sock.getsockname()[1]}"
        server.wait_for(r"^127\.0\.0\.1:\d+ gave a wrong server password$")
        assert not any("let me" in line for line in server.lines)
    finally:
        for c in (inside, wrong, silent):
            c.close()


def test_irc_clients_need_the_server_password(start_server, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("sesame\n")
    server = start_server("--password-file", secret, "--irc-port", 0)
    port = int(server.wait_for(r"^IRC listening on \S+:(\d+)$").group(1))
    good = LineClient(port, hello=False)
    bad = LineClient(port, hello=False)
    try:
        good.send("PASS sesame")
        good.send("NICK good")
        good.send("USER good 0 * :Good")
        assert re.fullmatch(r":chatroom\.local 001 good :Welcome .*\r", good.recv_line())
        bad.send("NICK bad")
        bad.send("USER bad 0 * :Bad")
        assert bad.expect_closed() == [":chatroom.local 464 * :Password incorrect\r",
                                       "ERROR :Closing link: 127.0.0.1 (wrong-password)\r"]
    finally:
        good.close()
        bad.close()


def test_an_unreadable_password_file_stops_the_server(tmp_path):
    import subprocess
    import sys

    from conftest import BIN, ROOT, WAIT

    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, text in ((tmp_path / "missing", "cannot read the password file"),
                       (empty, "has an empty first line")):
        result = subprocess.run([sys.executable, str(BIN / "chat-server"), "--port", "0",
                                 "--password-file", str(path)],
                                capture_output=True, text=True, cwd=ROOT, timeout=WAIT)
        assert result.returncode == 1 and text in result.stdout

"""``--config FILE``: a TOML file with one key per server flag, below flags and CHATROOM_* variables.

Precedence (highest first): command-line flag, ``CHATROOM_*`` environment variable, the file, the
embedded default. Every way a file can be wrong stops the start with the file, the key and why;
``--check-config`` says the same and exits 0 or 1.
"""

import subprocess
import sys

import pytest

from chatroom import settings
from conftest import BIN, ROOT, WAIT


def write(tmp_path, text, name="chatroom.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parse(argv=(), environ=None):
    return settings.parse_args(list(argv), environ or {})


# -- precedence -----------------------------------------------------------------------------------

def test_defaults_without_a_file():
    args = parse()
    assert args.max_clients == settings.default("max-clients") and args.config is None


def test_file_sets_every_kind_of_value(tmp_path):
    path = write(tmp_path, 'max-clients = 100\nflood-rate = 2.5\noutbox-soft-seconds = 3\n'
                           'host = "0.0.0.0"\nreuse-port = true\nlog-level = "WARNING"\n'
                           'irc-port = 6667\nredis = "redis://127.0.0.1:6379/0"\nnode = "a-1"\n')
    args = parse(["--config", path])
    assert (args.max_clients, args.flood_rate, args.outbox_soft_seconds) == (100, 2.5, 3.0)
    assert (args.host, args.reuse_port, args.log_level, args.irc_port) == ("0.0.0.0", True, "WARNING", 6667)
    assert (args.redis, args.node) == ("redis://127.0.0.1:6379/0", "a-1")
    assert args.max_line == settings.default("max-line")  # keys not in the file keep the default


def test_environment_wins_over_the_file_and_flags_over_both(tmp_path):
    path = write(tmp_path, "max-clients = 100\nmax-line = 1000\nflood-burst = 7\n")
    env = {"CHATROOM_MAX_CLIENTS": "200", "CHATROOM_MAX_LINE": "2000"}
    args = parse(["--config", path, "--max-clients", "300"], env)
    assert args.max_clients == 300  # flag > environment > file
    assert args.max_line == 2000  # environment > file
    assert args.flood_burst == 7  # file > default


def test_a_switch_on_in_the_file_is_turned_off_by_the_environment(tmp_path):
    path = write(tmp_path, "reuse-port = true\n")
    assert parse(["--config", path]).reuse_port is True
    assert parse(["--config", path], {"CHATROOM_REUSE_PORT": "0"}).reuse_port is False


def test_chatroom_config_names_the_file_and_the_flag_wins(tmp_path):
    first = write(tmp_path, "max-clients = 100\n", "a.toml")
    second = write(tmp_path, "max-clients = 200\n", "b.toml")
    assert parse([], {"CHATROOM_CONFIG": first}).max_clients == 100
    assert parse(["--config", second], {"CHATROOM_CONFIG": first}).max_clients == 200


# -- every bad file -------------------------------------------------------------------------------

BAD = [
    ("max-clientz = 5\n", "max-clientz: unknown setting"),
    ("max_clients = 5\n", "max_clients: unknown setting (did you mean 'max-clients'?)"),
    ("config = 'other.toml'\n", "config: unknown setting"),
    ("check-config = true\n", "check-config: unknown setting"),
    ('max-clients = "many"\n', "max-clients: expected an integer, got 'many'"),
    ("max-clients = 1.5\n", "max-clients: expected an integer, got 1.5"),
    ("max-clients = true\n", "max-clients: expected an integer, got True"),
    ('flood-rate = "fast"\n', "flood-rate: expected a number, got 'fast'"),
    ("host = 1\n", "host: expected a string, got 1"),
    ('reuse-port = "yes"\n', "reuse-port: expected true or false"),
    ("port = 70000\n", "port: must be from 0 to 65535"),
    ("irc-port = -1\n", "irc-port: must be from 0 to 65535"),
    ("max-line = 8\n", "max-line: must be from 16 to"),
    ('log-level = "LOUD"\n', "log-level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
    ('redis = "http://x"\n', "redis: expected redis://HOST:PORT/DB"),
    ('node = "a b"\n', "node: node names are"),
    ("[limits]\nmax-clients = 5\n", "limits: unknown setting"),
    ("max-clients = [1, 2]\n", "max-clients: expected an integer, not a list"),
    ("max-clients = = 5\n", "not valid TOML"),
]


@pytest.mark.parametrize("text,reason", BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_a_bad_file_is_refused_with_file_key_and_reason(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(settings.ConfigError) as err:
        parse(["--config", path])
    assert str(err.value).startswith(f"{path}: ")
    assert reason in str(err.value)


def test_a_missing_file_is_refused(tmp_path):
    path = str(tmp_path / "nowhere.toml")
    with pytest.raises(settings.ConfigError, match=r"nowhere.toml: cannot read"):
        parse(["--config", path])


def test_every_setting_is_accepted_in_the_file_with_its_default():
    """Each setting's default, written as TOML, reads back as itself (no flag the file cannot set)."""
    for s in settings.SETTINGS:
        if s.default is None:
            continue
        assert settings._file_value(s, s.default) == s.default, s.name


# -- the program ----------------------------------------------------------------------------------

def server(*args, env=None):
    return subprocess.run([sys.executable, str(BIN / "chat-server"), *args], capture_output=True,
                          text=True, timeout=WAIT * 3, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def test_check_config_exits_0_when_good_and_1_when_not(tmp_path):
    good = write(tmp_path, "max-clients = 100\n", "good.toml")
    done = server("--config", good, "--check-config")
    assert done.returncode == 0 and "settings are good" in done.stdout
    bad = write(tmp_path, "max-clients = -\n", "bad.toml")
    done = server("--config", bad, "--check-config")
    assert done.returncode == 1 and "bad.toml: not valid TOML" in done.stderr
    unknown = write(tmp_path, "colour = 'blue'\n", "unknown.toml")
    done = server("--config", unknown, "--check-config")
    assert done.returncode == 1 and "unknown.toml: colour: unknown setting" in done.stderr
    done = server("--check-config", "--max-clients", "many")
    assert done.returncode == 1 and "invalid int value" in done.stderr
    done = server("--check-config", "--motd", str(tmp_path / "missing.txt"))
    assert done.returncode == 1 and "missing.txt" in done.stderr


def test_server_refuses_to_start_on_a_bad_file(tmp_path):
    bad = write(tmp_path, "max-clients = 'x'\n")
    done = server("--config", bad, "--port", "0")
    assert done.returncode == 2 and f"{bad}: max-clients: expected an integer" in done.stderr


def test_server_runs_with_the_file_settings(tmp_path, start_server, clients):
    path = write(tmp_path, "max-clients = 1\nflood-rate = 0\n")
    srv = start_server("--config", path)
    srv.wait_for(r"max 1 clients")
    first = clients(srv)
    second = clients(srv, hello=False)
    assert second.expect_closed() == ["BYE server-full"]
    first.close()

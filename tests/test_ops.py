"""What running the server in production relies on: JSON logs, the public per-IP default, SIGHUP,
and the systemd unit in contrib/."""

import json
import shutil
import signal
import subprocess

import pytest

from chatroom import settings
from conftest import ROOT, WAIT


# -- --log-format json ----------------------------------------------------------------------------

def test_json_log_lines_parse(start_server, clients):
    server = start_server("--log-format", "json")
    c = clients(server)
    c.send("QUIT bye")
    c.expect_closed()
    server.wait_for(r"Connection closed with")
    assert server.stop() == 0
    assert len(server.lines) >= 4
    records = [json.loads(line) for line in server.lines]  # every line is one JSON object
    for r in records:
        assert set(r) == {"time", "level", "event", "fields"}
        assert r["time"].endswith("Z") and r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR")
    listening = next(r for r in records if r["event"].startswith("Listening on "))
    assert listening["fields"]["template"].startswith("Listening on %s")
    assert listening["fields"]["args"][0] == f"127.0.0.1:{server.port}"
    assert any(r["event"] == f"Connection has been established with {c.id}" for r in records)
    assert records[-1]["event"] == "Server stopped"


def test_text_log_is_the_default(server):
    assert server.lines[0].startswith("Listening on 127.0.0.1:")


# -- public defaults: a per-IP limit unless on loopback -------------------------------------------

@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("chat.example.org", False)])
def test_loopback_hosts(host, loopback):
    assert settings.is_loopback(host) is loopback
    args = settings.parse_args(["--host", host], {})
    assert settings.max_per_ip(args) == (0 if loopback else settings.PUBLIC_MAX_PER_IP)
    args = settings.parse_args(["--host", host, "--max-per-ip", "3"], {})
    assert settings.max_per_ip(args) == 3


def test_a_public_address_limits_connections_per_ip(start_server, clients):
    server = start_server("--host", "0.0.0.0", "--flood-rate", 0)
    server.wait_for(rf"at most {settings.PUBLIC_MAX_PER_IP} connections per IP address")
    for _ in range(settings.PUBLIC_MAX_PER_IP):
        clients(server)
    extra = clients(server, hello=False)
    assert extra.expect_closed() == ["BYE too-many-connections"]


def test_a_public_address_with_max_per_ip_0_has_no_limit(start_server, clients):
    server = start_server("--host", "0.0.0.0", "--max-per-ip", 0)
    for _ in range(settings.PUBLIC_MAX_PER_IP + 2):
        clients(server)
    assert server.count("per IP address") == 0


def test_loopback_has_no_per_ip_limit_by_default(server, clients):
    for _ in range(settings.PUBLIC_MAX_PER_IP + 2):
        clients(server)


# -- SIGHUP ---------------------------------------------------------------------------------------

def test_sighup_rereads_the_motd_and_keeps_serving(start_server, clients, tmp_path):
    motd = tmp_path / "motd.txt"
    motd.write_text("one\n")
    server = start_server("--motd", motd)
    a = clients(server)
    motd.write_text("one\ntwo\nthree\n")
    server.signal(signal.SIGHUP)
    server.wait_for(r"Reloaded: MOTD .*motd.txt \(3 lines\)")
    motd.unlink()
    server.signal(signal.SIGHUP)
    server.wait_for(r"ERROR: Reload: cannot read MOTD")
    b = clients(server)
    a.send("SEND still here")
    assert b.expect("MSG ") == f"MSG lobby {a.id} still here"


def test_sighup_without_files_is_harmless(server, clients):
    server.signal(signal.SIGHUP)
    server.wait_for(r"Reloaded: nothing to re-read")
    clients(server).sync()


# -- contrib/: the systemd unit and the example settings ------------------------------------------

UNIT = ROOT / "contrib" / "chatroom.service"
EXAMPLE = ROOT / "contrib" / "chatroom.toml"


def unit_settings():
    """``{key: [values]}`` of the unit's [Service] section."""
    section, found = None, {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_sandboxes_reloads_and_stops_as_the_server_expects():
    unit = unit_settings()
    for key, value in [("DynamicUser", "yes"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("StateDirectory", "chatroom"), ("KillSignal", "SIGTERM"),
                       ("ExecReload", "/bin/kill -HUP $MAINPID")]:
        assert unit[key] == [value], key
    assert "--check-config" in unit["ExecStartPre"][0]


def test_unit_open_files_fit_the_example_max_clients():
    from chatroom.transport.server import REJECT_SLOTS
    from chatroom.transport.sockets import RESERVED_FDS

    config = settings.load_config(EXAMPLE)
    max_clients = config.get("max-clients", settings.default("max-clients"))
    assert int(unit_settings()["LimitNOFILE"][0]) >= max_clients + RESERVED_FDS + REJECT_SLOTS


def test_example_settings_pass_check_config():
    done = subprocess.run([str(ROOT / "bin" / "chat-server"), "--config", str(EXAMPLE), "--check-config"],
                          capture_output=True, text=True, timeout=WAIT * 3, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify checks that ExecStart's program exists: point it at the checkout's bin/chat-server.
    unit = tmp_path / "chatroom.service"
    unit.write_text(UNIT.read_text().replace("/opt/chatroom/bin/chat-server", str(ROOT / "bin" / "chat-server")))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "chatroom.service" in line]
    assert done.returncode == 0 and not ours, "\n".join(ours) or done.stderr

"""benchmarks/driver.c end to end: built with cc, a tiny native run against a real bin/chat-server.

No timing assertions: this proves the C driver connects, joins, paces, counts and reports
correctly; how fast things go is for ``make bench``.
"""

import json
import shutil
import subprocess

import pytest

from conftest import ROOT, ServerProcess

#: Seconds the compile and the run may each take before the test fails.
BUILD_TIMEOUT = 120
RUN_TIMEOUT = 60

CC = shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler (cc): benchmarks/driver.c cannot be built")
    out = tmp_path_factory.mktemp("driver") / "driver"
    subprocess.run([CC, "-O2", "-Wall", "-Werror", "-o", str(out), str(ROOT / "benchmarks" / "driver.c")],
                   check=True, timeout=BUILD_TIMEOUT, capture_output=True)
    return out


def run_driver(driver, *args):
    done = subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    return done


def test_native_three_receivers_one_sender_nothing_lost(driver):
    server = ServerProcess("--flood-rate", "0", "--max-per-ip", "0")
    try:
        done = run_driver(driver, "--proto", "native", "--port", server.port, "--receivers", 3,
                          "--senders", 1, "--messages", 200, "--window", 16, "--duration-cap", 20,
                          "--server-pid", server.pid)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["sent"] == 200
    assert r["expected"] == 600  # 3 receivers x 200; a lone sender hears nobody
    assert r["received"] == 600
    assert (r["lost"], r["duplicates"], r["out_of_order"], r["disconnected"]) == (0, 0, 0, 0)
    assert r["latency_ms"]["samples"] == 600
    assert r["capped"] is False
    assert r["driver"] == "benchmarks/driver.c"


def test_warmup_lines_are_checked_but_not_timed(driver):
    """--warmup 1 at 20 lines/s: about the first 20 of 40 lines stay out of the latency figures,
    which say so; every line is still counted, and the figures with them are kept beside."""
    server = ServerProcess("--flood-rate", "0", "--max-per-ip", "0")
    try:
        done = run_driver(driver, "--proto", "native", "--port", server.port, "--receivers", 3,
                          "--senders", 1, "--messages", 40, "--rate", 20, "--warmup", 1,
                          "--duration-cap", 20)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["received"] == 120 and r["lost"] == 0 and r["warmup_seconds"] == 1
    assert r["latency_with_warmup_ms"]["samples"] == 120
    # Lines 20..39 are sent after the first second; a stalled turn moves a few across the line,
    # so the bound is loose. A line counts for all three receivers or for none.
    timed = r["latency_ms"]["samples"]
    assert 3 * 5 <= timed <= 3 * 35 and timed % 3 == 0


def test_senders_hear_each_other_on_native(driver):
    """Two senders: each also receives the other's lines, and the expectation says so."""
    server = ServerProcess("--flood-rate", "0", "--max-per-ip", "0")
    try:
        done = run_driver(driver, "--proto", "native", "--port", server.port, "--receivers", 2,
                          "--senders", 2, "--messages", 50, "--duration-cap", 20)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["expected"] == 2 * 100 + 2 * 50
    assert r["received"] == r["expected"] and r["lost"] == 0


def test_setup_failure_exits_non_zero_with_a_message(driver):
    server = ServerProcess("--flood-rate", "0")
    port = server.port
    server.stop()  # nothing listens there any more
    done = run_driver(driver, "--proto", "native", "--port", port, "--receivers", 1, "--messages", 1,
                      "--connect-timeout", 5)
    assert done.returncode == 3
    assert "driver: " in done.stderr and done.stdout == ""

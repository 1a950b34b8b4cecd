"""The project installs as a package: ``pip install .`` into a fresh virtualenv gives working
``chat-server``, ``chat-client`` and ``chat-load`` commands, ``python -m chatroom``, the package
data under ``chatroom/web/``, and the version written once in ``chatroom/__init__.py``.

The install is real (a new venv, pip building the wheel with setuptools from the registry or the
local wheel cache) and takes some seconds, so it is one test that checks everything at once.
"""

import re
import shutil
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

import chatroom
from conftest import ROOT

#: Folders of the checkout that are not part of what is installed.
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", "build", "dist",
                                    "*.egg-info", ".pytest_cache", ".hypothesis", "results")


def run(*cmd, timeout=240, **kw):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_python_m_chatroom_is_the_server():
    out = run(sys.executable, "-m", "chatroom", "--help", cwd=ROOT, timeout=30)
    assert out.startswith("usage: chat-server")


def test_pyproject_declares_the_runtime_requirements():
    """Every runtime pin of requirements.txt is a dependency of the package (by name)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=;! ]", d)[0].lower().replace("_", "-") for d in project["dependencies"]}
    text = (ROOT / "requirements.txt").read_text()
    runtime = text.split("# Tests")[0]
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in runtime.splitlines()
              if "==" in line and not line.startswith("#")}
    assert pinned and pinned <= declared


@pytest.mark.timeout(300)
def test_pip_install_gives_the_commands_and_package_data(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_COPIED)
    static = src / "chatroom" / "web" / "static"
    static.mkdir(parents=True, exist_ok=True)
    (static / "probe.css").write_text("body {}\n")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", src)
    for program in ("chat-server", "chat-client", "chat-load"):
        out = run(venv / "bin" / program, "--help", cwd=tmp_path, timeout=30)
        assert out.startswith(f"usage: {program}"), out
    assert run(py, "-m", "chatroom", "--help", cwd=tmp_path, timeout=30).startswith("usage: chat-server")
    probe = ("import chatroom, importlib.metadata, pathlib; "
             "print(chatroom.__file__); print(importlib.metadata.version('chatroom'), chatroom.__version__)")
    where, versions = run(py, "-c", probe, cwd=tmp_path, timeout=30).splitlines()
    assert str(venv) in where  # the installed copy, not the checkout
    assert versions.split() == [chatroom.__version__] * 2
    installed = __import__("pathlib").Path(where).parent
    assert (installed / "web" / "static" / "probe.css").read_text() == "body {}\n"
    assert (installed / "web" / "static" / "index.html").is_file()  # the web client ships


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                                          if p.name != "irctest_controller.py"))
def test_every_benchmark_script_starts(script):
    """``make bench`` runs these one after the other: each must at least load and parse its flags
    (the modules it imports from the package included) before a long run finds out it cannot."""
    import importlib.util

    if script == "websockets_server.py" and importlib.util.find_spec("websockets") is None:
        pytest.skip("needs websockets, from benchmarks/requirements.txt (make bench installs it)")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout

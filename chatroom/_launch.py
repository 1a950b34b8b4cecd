"""Lets ``bin/*`` run from a checkout: re-executes under the project's .venv when gevent is missing."""

import os
import sys


def ensure_venv():
    try:
        import gevent  # noqa: F401
    except ImportError:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        venv = os.path.join(root, ".venv")
        python = os.path.join(venv, "bin", "python")
        if os.path.exists(python) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
            os.execv(python, [python] + sys.argv)
        sys.exit("chatroom needs gevent: run 'make run' (it builds .venv), or pip install -r requirements.txt")

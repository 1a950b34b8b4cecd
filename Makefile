# chatroom: `make run` starts the server, `make test` runs every test. Both build the virtualenv
# (.venv, from requirements.txt) on first use, so a fresh machine needs only python3 and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
CLUSTER_ARGS ?=
WS_ARGS ?=
PEERS_ARGS ?=

.PHONY: run test soak bench bench-peers venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

run: venv
	$(PY) bin/chat-server $(ARGS)

test: venv
	$(PY) -m pytest -m "not soak" $(ARGS)

soak: venv
	$(PY) -m pytest -m soak $(ARGS)

bench: venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	$(PY) benchmarks/run.py $(ARGS)
	$(PY) benchmarks/ws_bench.py $(WS_ARGS)
	$(PY) benchmarks/history_bench.py $(HISTORY_ARGS)
	$(PY) benchmarks/accounts_tls_bench.py
	$(PY) benchmarks/idle_memory.py
	@if command -v redis-server >/dev/null; then $(PY) benchmarks/cluster_bench.py $(CLUSTER_ARGS); \
	else echo "redis-server not installed: cluster benchmark skipped (see docs/cluster.md)"; fi
	$(PY) benchmarks/peers.py $(PEERS_ARGS)

# this server beside Redis pub/sub and ngIRCd under the C driver (benchmarks/driver.c) only
bench-peers: venv
	$(PY) benchmarks/peers.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

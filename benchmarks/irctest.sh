#!/usr/bin/env bash
# The IRC conformance figure: runs the selection of irctest (shared/irctest, see its CHATROOM.md)
# that chatroom's IRC listener must match, against our server or against ngIRCd (the reference),
# and prints pass/skip/fail/xfail counts per file, the total, and the failing tests.
#
#   benchmarks/irctest.sh chatroom|ngircd [PYTEST ARGS...]     e.g. -k testNames, or -p no:xdist -s
#
# Environment:
#   CHATROOM_DIR    checkout whose bin/chat-server runs (default: this repository's root)
#   CHATROOM_PYTHON interpreter for it (default: CHATROOM_DIR/.venv/bin/python, built if missing)
#   IRCTEST_SRC     the suite (default: ../shared/irctest beside the checkout, else /work/shared/irctest)
#   IRCTEST_VENV    the suite's own virtualenv, created when missing (default: /tmp/irctest-venv)
#   IRCTEST_JOBS    pytest-xdist workers (default 2; 0 runs in one process)
#   IRCTEST_XML     keep the JUnit XML report at this path (default: a temporary file)
#   IRCTEST_OUTPUT  keep pytest's full output (every failure's traffic) at this path
#   IRCTEST_FILES, IRCTEST_MARKERS  another selection (below)
#   CHATROOM_SERVER_NAME  default My.Little.Server, the name the suite expects
#
# Exit status: 0 when the suite ran (whatever it counted), else the suite's own error status.
# The suite is copied to a private temporary directory per run, so the shared copy stays untouched
# (it is read-only) and concurrent runs never collide.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"

MARKERS='not Ergo and not deprecated and not strict and not implementation-specific'
FILES=(connection_registration join part messages names who whois pingpong quit topic list kick cap
       message_tags echo_message isupport lusers away labeled_responses sasl account_registration
       chathistory)
# IRCTEST_FILES (space-separated) and IRCTEST_MARKERS replace the selection, e.g. the IRC issue's:
#   IRCTEST_FILES="connection_registration ... away" IRCTEST_MARKERS="... and not services ..."
[ -n "${IRCTEST_FILES:-}" ] && read -r -a FILES <<<"$IRCTEST_FILES"
MARKERS="${IRCTEST_MARKERS:-$MARKERS}"

usage() { echo "usage: $0 chatroom|ngircd [PYTEST ARGS...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
target="$1"; shift
# chatroom runs under our controller (benchmarks/irctest_controller.py: the shared one, plus the
# built-in accounts for the suite's `services` tests and an operator account for OPER). ngIRCd has
# no services: its `services` tests are left out.
case "$target" in
    chatroom) controller=irctest.controllers.chatroom_full ;;
    ngircd)   controller=irctest.controllers.ngircd
              MARKERS="$MARKERS and not services"
              export PATH="$PATH:/usr/sbin:/sbin"  # Debian's ngircd lives in /usr/sbin
              command -v ngircd >/dev/null 2>&1 || { echo "ngircd is not installed (apt-get install ngircd)" >&2; exit 2; } ;;
    *) usage ;;
esac

if [ -z "${IRCTEST_SRC:-}" ]; then
    for candidate in "$ROOT/../shared/irctest" /work/shared/irctest; do
        if [ -f "$candidate/CHATROOM.md" ]; then IRCTEST_SRC="$candidate"; break; fi
    done
fi
[ -n "${IRCTEST_SRC:-}" ] && [ -d "$IRCTEST_SRC/irctest" ] || { echo "irctest not found; set IRCTEST_SRC" >&2; exit 2; }
IRCTEST_SRC="$(cd "$IRCTEST_SRC" && pwd)"

# The suite's venv, as CHATROOM.md describes; its marker file is written last, so a build that was
# interrupted is redone. A lock keeps two runs from building it at once.
VENV="${IRCTEST_VENV:-/tmp/irctest-venv}"
if [ ! -f "$VENV/.irctest-ready" ]; then
    exec 9>"$VENV.lock"
    flock 9
    if [ ! -f "$VENV/.irctest-ready" ]; then
        echo "creating $VENV" >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
                'pytest!=9.0.0' ecdsa filelock websockets pytest-xdist >"$VENV.pip.log" 2>&1; then
            cat "$VENV.pip.log" >&2
            exit 1
        fi
        touch "$VENV/.irctest-ready"
    fi
    flock -u 9
    exec 9>&-
fi

export CHATROOM_DIR="$(cd "${CHATROOM_DIR:-$ROOT}" && pwd)"
# The suite hard-codes the server's name as My.Little.Server (PONG, 004, WHO, WHOIS): the chatroom
# controller passes no --server-name, so the server takes it from its CHATROOM_* environment.
export CHATROOM_SERVER_NAME="${CHATROOM_SERVER_NAME:-My.Little.Server}"
if [ "$target" = chatroom ] && [ -z "${CHATROOM_PYTHON:-}" ] && [ ! -x "$CHATROOM_DIR/.venv/bin/python" ]; then
    make -C "$CHATROOM_DIR" venv >&2
fi

work="$(mktemp -d /tmp/irctest-run.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp -r "$IRCTEST_SRC" "$work/irctest"
chmod -R u+w "$work/irctest"
cp "$ROOT/benchmarks/irctest_controller.py" "$work/irctest/irctest/controllers/chatroom_full.py"
xml="${IRCTEST_XML:-$work/report.xml}"

paths=()
for f in "${FILES[@]}"; do paths+=("irctest/server_tests/$f.py"); done
jobs=(-n "${IRCTEST_JOBS:-2}")
[ "${IRCTEST_JOBS:-2}" = 0 ] && jobs=(-p no:xdist)

cmd=(env PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m pytest -p no:cacheprovider
     --controller "$controller" "${jobs[@]}" -q -m "$MARKERS" --junitxml="$xml" "$@" "${paths[@]}")
echo "+ cd $work/irctest && CHATROOM_DIR=$CHATROOM_DIR CHATROOM_SERVER_NAME=$CHATROOM_SERVER_NAME $(printf '%q ' "${cmd[@]}")" >&2
status=0
(cd "$work/irctest" && "${cmd[@]}" >"$work/output.txt" 2>&1) || status=$?
if [ "$status" -gt 1 ] || [ ! -s "$xml" ]; then
    [ -n "${IRCTEST_OUTPUT:-}" ] && cp "$work/output.txt" "$IRCTEST_OUTPUT"
    tail -50 "$work/output.txt" >&2
    echo "irctest did not run (pytest exit status $status)" >&2
    exit $((status > 1 ? status : 1))
fi
[ -n "${IRCTEST_OUTPUT:-}" ] && cp "$work/output.txt" "$IRCTEST_OUTPUT"
tail -1 "$work/output.txt"

"$VENV/bin/python" - "$xml" "$target" "${FILES[@]}" <<'EOF'
"""Counts per file from pytest's JUnit XML (xfail is reported there as a skip of type pytest.xfail)."""
import collections
import sys
import xml.etree.ElementTree as ET

xml, target, files = sys.argv[1], sys.argv[2], sys.argv[3:]
kinds = ("passed", "skipped", "failed", "error", "xfailed")
counts = collections.defaultdict(collections.Counter)
failing = []
reasons = collections.Counter()
for case in ET.parse(xml).iter("testcase"):
    parts = case.get("classname", "").split(".")
    module = parts[2] if len(parts) > 3 and parts[1] == "server_tests" else ".".join(parts[:-1])
    outcome = "passed"
    for child in case:
        if child.tag == "failure":
            outcome = "failed"
        elif child.tag == "error":
            outcome = "error"
        elif child.tag == "skipped":
            outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            reasons[outcome, (child.get("message") or "").splitlines()[0][:100]] += 1
    counts[module][outcome] += 1
    if outcome in ("failed", "error"):
        failing.append(f"{module}.py::{parts[-1]}::{case.get('name')}" + (" (error)" if outcome == "error" else ""))

width = max(len(f) for f in files + ["total"])
print(f"\nirctest against {target}")
print(f"{'file':<{width}} " + " ".join(f"{k:>7}" for k in kinds))
total = collections.Counter()
for f in files + sorted(set(counts) - set(files)):
    total.update(counts[f])
    print(f"{f:<{width}} " + " ".join(f"{counts[f][k]:>7}" for k in kinds))
print(f"{'total':<{width}} " + " ".join(f"{total[k]:>7}" for k in kinds))
print(f"\nfailing ({len(failing)}):")
for name in sorted(failing):
    print("  " + name)
print("\nskipped and xfailed, by reason:")
for (kind, reason), n in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
    print(f"  {n:>4} {kind}: {reason}")
EOF

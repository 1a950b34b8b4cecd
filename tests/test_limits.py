"""The documentation keeps up with the code: every server flag and every ERR/BYE code is documented.

The README's limits table must list each ``--flag`` of the settings table
(``chatroom.settings.SETTINGS``, which the server's parser is built from) with its default, and docs/protocol.md must list every ``ERR`` code and disconnect reason the server source
can produce. A flag or code added without its documentation fails here.
"""

import ast
import re

import pytest

from chatroom import settings
from conftest import ROOT

README = ROOT / "README.md"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
SOURCES = [ROOT / "chatroom" / name for name in (
    "server.py", "core/registry.py", "codec/native.py")] + sorted((ROOT / "chatroom" / "transport").glob("*.py")) \
    + sorted((ROOT / "chatroom" / "accounts").glob("*.py"))

#: Words the source passes around as reasons that never reach a client: ``_flood_check`` answers
#: "dropped" for "this line was dropped, go on".
INTERNAL_WORDS = {"dropped"}


def flag_defaults():
    """``{"--flag": default}`` for every option of the server's parser (``-h`` aside)."""
    parser = settings.build_parser(environ={})
    return {
        action.option_strings[-1]: action.default
        for action in parser._actions
        if action.option_strings and action.dest != "help"
    }


def readme_flag_table():
    """``{"--flag": "default"}`` from the README rows shaped ``| `--flag` | `default` | ... |``."""
    rows = re.findall(r"^\|\s*`(--[a-z-]+)`\s*\|\s*`([^`]*)`\s*\|", README.read_text(), re.M)
    return dict(rows)


def test_parser_has_flags():
    assert len(flag_defaults()) >= 10  # the check below is not vacuous


@pytest.mark.parametrize("flag", sorted(flag_defaults()))
def test_every_flag_is_in_the_readme_table_with_its_default(flag):
    table = readme_flag_table()
    assert flag in table, f"{flag} is missing from README.md's limits table"
    default = flag_defaults()[flag]
    shown = "none" if default is None else "off" if default is False else str(default)
    assert table[flag] == shown, f"README.md gives {flag} the wrong default"


def test_readme_table_lists_no_flag_the_server_lacks():
    assert set(readme_flag_table()) <= set(flag_defaults())


# -- codes in the source --------------------------------------------------------------------------

def _strings(node, assigned):
    """String constants ``node`` can evaluate to; local names are followed through ``assigned``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body, assigned) | _strings(node.orelse, assigned)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "quit: " + text
        return {s.split(":")[0] for s in _strings(node.left, assigned)}
    if isinstance(node, ast.Name):
        found = set()
        for value in assigned.get(node.id, ()):
            found |= _strings(value, {})
        return found
    return set()


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _assignments(func):
    assigned = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    return assigned


def _call_name(call):
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)


def source_codes():
    """``(err_codes, reasons)`` as found in the server's source.

    ERR codes: the first argument of ``ProtocolError(...)`` and ``format_err(...)``. Disconnect
    reasons: the argument of ``format_bye(...)``, the reason of ``evict(...)`` and ``_close(...)``,
    and what the functions documented as returning a disconnect reason return.
    """
    errs, reasons = set(), set()
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for func in _functions(tree):
            assigned = _assignments(func)
            doc = ast.get_docstring(func) or ""
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and node.args:
                    name, args = _call_name(node), node.args
                    if name == "spawn":  # gevent.spawn(self._close, client, reason)
                        name, args = _call_name(ast.Call(args[0], [], [])), args[1:]
                    if not args:
                        continue
                    if name in ("ProtocolError", "format_err"):
                        errs |= _strings(args[0], assigned)
                    elif name == "format_bye":
                        reasons |= _strings(args[0], assigned)
                    elif name in ("evict", "_close", "refusal") and len(args) >= 2:
                        reasons |= _strings(args[1], assigned)
                elif isinstance(node, ast.Return) and node.value is not None and (
                        "reason" in doc or "disconnect" in doc):
                    reasons |= _strings(node.value, assigned)
    return errs, reasons - INTERNAL_WORDS


def doc_section(heading):
    """The text of docs/protocol.md from the heading starting with ``heading`` to the next heading."""
    text = PROTOCOL_DOC.read_text()
    m = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#)", text + "\n#", re.M | re.S)
    assert m, f"docs/protocol.md has no section {heading!r}"
    return m.group(1)


def table_codes(section):
    return set(re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", section, re.M))


def test_source_scan_finds_codes():
    errs, reasons = source_codes()
    # Known members, so a broken scan cannot pass by finding nothing.
    assert {"unknown-command", "invalid-utf8", "rate-limited", "no-line-end"} <= errs
    assert {"server-full", "slow-consumer", "send-timeout", "ping-timeout", "flood"} <= reasons


@pytest.mark.parametrize("code", sorted(source_codes()[0]))
def test_every_err_code_is_documented(code):
    assert code in table_codes(doc_section("Error codes")), (
        f"ERR {code} is in the source but not in docs/protocol.md's error code table")


@pytest.mark.parametrize("reason", sorted(source_codes()[1]))
def test_every_disconnect_reason_is_documented(reason):
    section = doc_section("Disconnect reasons")
    # In the table, or (like "disconnected") in the text of the section.
    assert re.search(rf"(?<![\w-]){re.escape(reason)}(?![\w-])", section), (
        f"disconnect reason {reason!r} is in the source but not in docs/protocol.md's reason table")


def test_documented_codes_exist_in_the_source():
    errs, reasons = source_codes()
    assert table_codes(doc_section("Error codes")) <= errs
    assert table_codes(doc_section("Disconnect reasons")) <= reasons

"""Rules for text that is relayed to other people's screens, shared by every wire protocol."""

import re

#: Nicknames and room names: ASCII letters, digits, ``_`` and ``-`` (no look-alike names),
#: not starting with ``-``, at most 32 characters.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,31}\Z")

#: Characters never allowed in relayed text: C0 controls (escape sequences start with ESC),
#: DEL, C1 controls, and the bidi embedding/override/isolate characters that reorder a line.
BAD_TEXT_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def check_printable(text):
    """``text`` with anything unsafe to echo back replaced by ``?``."""
    return BAD_TEXT_RE.sub("?", text)

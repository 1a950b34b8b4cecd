"""IRCv3 ``labeled-response``: what a command sent with a ``label`` tag answers carries the label.

The command runs as any other; what it queues to the client meanwhile is held back (the outbox's
``hold``, as for scrollback) and then rewritten in place: nothing becomes an ``ACK``, one line gets
the ``label`` tag, several go in a ``labeled-response`` batch (with ``batch`` negotiated; without
it only the first line is labeled, as the specification allows). Only the labeled command's
client pays for this, and only for that command: everybody else's bytes stay shared.

A command that waits (a login, a history read) lets the loop run; lines others cause for this
client in that time end up in its response too. A client whose socket is full (a writer greenlet
is sending) gets its answer unlabeled rather than out of order.
"""

import itertools

from ...codec import irc

CAP = "labeled-response"
#: Longest label taken (the specification's limit); a longer one is ignored.
LABEL_MAX = 64

_refs = itertools.count(1)


def run_labeled(client, server, label, run, to_self=False):
    """``run()`` (a command of ``client``), its response labeled ``label``; returns what it returns.

    ``to_self``: the command is a message to the client's own nick. What it receives then is not
    a response but a side effect, except for the ``echo-message`` copy: that one (the last line)
    alone carries the label, and no batch is made.
    """
    if client.writer is not None or len(label) > LABEL_MAX:
        return run()
    outbox = client.outbox
    mark = len(outbox)
    client.hold += 1
    try:
        return run()
    finally:
        client.hold -= 1
        if not client.closing and len(outbox) >= mark:
            _rewrite(client, server, label, mark, to_self)


def _rewrite(client, server, label, mark, to_self):
    registry = server.registry
    outbox = client.outbox
    taken = outbox[mark:]
    old = sum(len(item) for item in taken)
    lines = b"".join(taken).split(b"\r\n")
    if lines and not lines[-1]:
        lines.pop()
    value = irc.escape_tag_value(label).encode("utf-8")
    if not lines:
        new = [irc.format_message("ACK", source=server.server_name, tags={"label": label})]
    elif to_self and len(lines) > 1:
        new = lines[:-1] + [_tag(lines[-1], b"label=" + value)]
        new = [line + b"\r\n" for line in new]
    elif len(lines) == 1 or "batch" not in client.caps:
        new = [_tag(lines[0], b"label=" + value)] + lines[1:]
        new = [line + b"\r\n" for line in new]
    else:
        ref = f"l{next(_refs)}"
        tag = b"batch=" + ref.encode()
        new = [irc.format_message("BATCH", "+" + ref, "labeled-response",
                                  source=server.server_name, tags={"label": label})]
        # A line already in a batch of its own (chathistory) keeps it; the nested batch's
        # BATCH lines are the ones in ours.
        new += [(line if _in_batch(line) else _tag(line, tag)) + b"\r\n" for line in lines]
        new.append(irc.format_message("BATCH", "-" + ref, source=server.server_name))
    data = b"".join(new)
    del outbox[mark:]
    outbox.append(data)
    client.queued += len(data) - old
    registry.ready.append(client)
    registry.on_ready()


def _tag(line, tag):
    """``line`` with one more tag (``key=value`` bytes)."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def _in_batch(line):
    """Whether ``line`` carries a ``batch`` tag already."""
    if not line.startswith(b"@"):
        return False
    return any(t.startswith(b"batch=") for t in line[1:].partition(b" ")[0].split(b";"))

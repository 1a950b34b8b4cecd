"""Private messages to an offline registered account: kept in the accounts store and handed over
at the account's next login (docs/protocol.md, "Messages to an offline account"; docs/irc.md).

Both calls wait for the store in the calling client's greenlet (its reader), like the other
account commands; nobody else waits.
"""

import logging

from ..accounts.service import MAILBOX_MAX
from ..accounts.store import Kept
from ..codec.native import ProtocolError

log = logging.getLogger("chatroom.server")


def keep(server, sender, who, text, notice=False):
    """Keep ``text`` from ``sender`` for the account ``who``, once :meth:`Registry.tell` found
    nobody called ``who``. False when ``who`` is no account (or this server cannot tell that it
    is offline everywhere: a cluster node cut off from the others): the caller answers as before.

    Raises ProtocolError ``mailbox-full`` or ``accounts-unavailable``.
    """
    accounts = server.accounts
    if accounts is None or not accounts.is_registered(who) or not server.registry.sees_everyone:
        return False
    stamp = server.registry.stamp()
    accounts.keep(who, Kept(*stamp, sender.name, sender.prefix, text, notice, sender.plain))
    log.info("%s left a message for %s (offline)", sender.name, who)
    if sender.encoder.echo and not sender.closing:  # IRC echo-message: the message was accepted
        data = sender.encoder.tell(sender, Absent(who), text, stamp, notice, None)
        if data is not None:
            server.registry.send(sender, data)
    return True


class Absent:
    """The offline recipient of a kept message, for the encoders (an echo names it)."""

    __slots__ = ("name", "ircnick")

    def __init__(self, name):
        self.name = self.ircnick = name


def deliver(server, client):
    """Queue to ``client``, just logged in, the messages kept for its account, as its protocol's
    lines (``client.kept_lines``); returns how many. A store that fails leaves them for the next
    login (logged)."""
    account = client.account
    if server.ban_reason(client):  # about to be closed: they wait for a login that is not banned
        return 0
    try:
        messages = server.accounts.take(account)
    except ProtocolError:
        log.warning("Messages kept for %s not read now; they wait for its next login", account)
        return 0
    if not messages:
        return 0
    if client.closing or client.account != account:  # gone while the store answered: keep them
        try:
            for message in messages:
                server.accounts.keep(account, message, MAILBOX_MAX + len(messages))
        except ProtocolError:
            log.warning("%d messages kept for %s were lost (the store failed)", len(messages), account)
        return 0
    data = client.kept_lines(server, messages)
    if data:
        server.registry.reply(client, data)
    log.info("%s got %d message(s) kept while offline", account, len(messages))
    return len(messages)

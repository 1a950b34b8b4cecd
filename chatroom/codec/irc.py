"""Placeholder until the IRC codec lands: the native-id <-> IRC-nickname mapping only."""
import re

GUEST_NICK_RE = re.compile(r"(?:\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}|[0-9A-Fa-f_]*_[0-9A-Fa-f_]*)-\d{1,5}\Z")


def id_to_nick(member_id):
    addr, _, port = member_id.rpartition(":")
    addr = addr.strip("[]")
    return (addr.replace(":", "_") if ":" in addr else addr.replace(".", "-")) + "-" + port


def nick_to_id(nick):
    if not GUEST_NICK_RE.match(nick):
        return None
    addr, _, port = nick.rpartition("-")
    if "_" in addr:
        return f"[{addr.replace('_', ':')}]:{port}"
    return f"{addr.replace('-', '.')}:{port}"


def plain_text(text):
    return text

"""What the IRC listener announces about itself: its limits and its ISUPPORT (005) tokens."""

from ... import __version__

VERSION = "chatroom-" + __version__

#: Capabilities offered (``CAP LS``).
CAPS = ("away-notify", "echo-message", "message-tags", "multi-prefix", "server-time",
        "userhost-in-names", "cap-notify")
#: Commands allowed before registration completes.
PRE_REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT",
                              "AUTHENTICATE", "REGISTER"})
NICKLEN = 32
CHANNELLEN = 33  # '#' and a room name
TOPICLEN = 390
AWAYLEN = 390
KICKLEN = 390
#: Targets one PRIVMSG/NOTICE may name.
MAX_TARGETS = 4
USERLEN = 16
#: Channels one IRC client may be in at once (each costs the server a little of its memory).
CHANLIMIT = 100
#: Replies to one WHO with a mask at most: a mask matching a whole big server is cut there.
WHO_LIMIT = 500
#: Bytes of a client's tag section, its '@' included (IRCv3 message-tags: 4094 of tag data).
CLIENT_TAGS_LIMIT = 4095


def isupport_tokens(server):
    return [
        f"AWAYLEN={AWAYLEN}", "CASEMAPPING=ascii", f"CHANLIMIT=#:{CHANLIMIT}", "CHANMODES=,,,mnst",
        f"CHANNELLEN={CHANNELLEN}", "CHANTYPES=#", "ELIST=", f"KICKLEN={KICKLEN}", "MODES=4",
        "NETWORK=chatroom", f"NICKLEN={NICKLEN}", "PREFIX=(ov)@+", "SAFELIST",
        f"TARGMAX=PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,KICK:1,NAMES:1,WHOIS:1",
        f"TOPICLEN={TOPICLEN}", f"USERLEN={USERLEN}", "UTF8ONLY", "WHOX",
    ]

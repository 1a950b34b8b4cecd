"""What one load run does: its :class:`Config`, the defaults and the limits the modules share."""

import dataclasses
import os

#: The checkout: bin/ and the package are found from here.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Seconds for every client of a process to connect, join its room and pass the barrier.
SETUP_TIMEOUT = 120.0
#: Bytes asked of the kernel per recv: big reads frame many lines per wake-up. Below glibc's
#: mmap threshold, so a read does not cost an mmap/munmap pair.
RECV_SIZE = 65536
#: After the senders stop, receivers wait for lines in flight while they keep arriving: until
#: none has come for DRAIN_SECONDS, and never longer than DRAIN_LIMIT in all (a slow server may
#: still be relaying a backlog; what has not arrived by then counts as lost).
DRAIN_SECONDS = 5.0
DRAIN_LIMIT = 30.0
#: Default lines one sender may have in flight beyond its slowest checked receiver. With 10
#: senders of 64-byte lines that is some 120 KiB queued per reader, half the server's soft
#: slow-consumer limit (256 KiB).
DEFAULT_WINDOW = 128
#: Default checked (fully verified, timed) clients per process. Senders pace on them, and a
#: checked client costs the generator some 0.7 us a line against 0.06 us for a counting one, so
#: each one more holds the whole room back: at 100/10, 16 of them cap a run at half of what 2
#: let the server reach. Two still time and check every line of every sender.
DEFAULT_CHECK = 2
#: Default message text size in bytes (the text after ``SEND``).
DEFAULT_SIZE = 64
#: Default seconds the senders may send (a hard cap on every run).
DEFAULT_DURATION = 30.0
#: File descriptors a process keeps free beyond its sockets (pipes, logs, the listener check).
FD_RESERVE = 64


class SetupError(Exception):
    """The clients could not all connect, join and pass the barrier."""


@dataclasses.dataclass
class Config:
    """What one run does; a worker process gets it as JSON with its ``index``."""

    host: str = "127.0.0.1"
    port: int = 7777
    room: str = "load"
    receivers: int = 10
    senders: int = 1
    idle: int = 0
    stalled: int = 0
    messages: int = 1000
    duration: float = DEFAULT_DURATION
    rate: float = 0.0
    size: int = DEFAULT_SIZE
    window: int = DEFAULT_WINDOW
    check: int = DEFAULT_CHECK  # < 0: every receiver checks
    source_addrs: int = 1
    protocol: str = "native"  # or "irc"
    irc_oper: str = ""  # "NAME:PASSWORD": IRC senders become operators with user mode +F
    tls: bool = False  #: speak TLS (the server's --tls-port); the certificate is not checked
    transport: str = "tcp"  #: or "ws": the native protocol over WebSocket (the server's --web-port)
    procs: int = 1
    index: int = 0

    def share(self, total):
        """This process's (count, first global index) of ``total`` clients of one kind."""
        base, extra = divmod(total, self.procs)
        i = self.index
        return base + (1 if i < extra else 0), i * base + min(i, extra)

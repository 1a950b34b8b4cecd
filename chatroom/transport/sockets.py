"""Socket set-up shared by the listeners and the tools: options, the open-files limit, SO_REUSEPORT."""

import resource
import socket

#: Listen backlog: room for a burst of connects while the accept loop catches up.
BACKLOG = 1024
#: File descriptors kept free for the listeners, logs and the like when sizing --max-clients.
RESERVED_FDS = 32


def tune_socket(sock):
    """TCP keepalive so half-open peers are found even when idle; no Nagle delay on chat lines."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    except OSError:
        pass


def raise_nofile_limit():
    """Raise the open-files soft limit to the hard limit where allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def reuse_port_socket(address, listen=None):
    """A TCP socket bound to ``address`` with SO_REUSEPORT (listening if ``listen`` is a backlog).

    Every process that binds the same port this way gets its own accept queue, and the kernel
    spreads new connections over the listening ones.
    """
    from gevent import socket as gsocket  # a cooperative socket, whoever imports this module

    host = address[0]
    sock = gsocket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen is not None:
            sock.listen(listen)
    except OSError:
        sock.close()
        raise
    return sock

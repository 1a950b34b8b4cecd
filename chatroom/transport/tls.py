"""TLS for the listeners: the server's context, the handshake under a deadline, and reloading.

The handshake runs in the accepting connection's own greenlet (the listener's pool slot), bounded
by ``--tls-handshake-timeout`` as a whole, so a client that never finishes it (or trickles one byte
at a time) costs one slot for that long and holds up nobody else. A peer that is not speaking TLS
fails the handshake on its first bytes and is closed at once.

gevent's ``StreamServer`` could wrap accepted sockets itself (``ssl_context=``), but it handshakes
with no deadline of its own; the transport's reads are non-blocking reads from a read watcher, so
the listener wraps the socket here instead and hands the finished TLS socket to the server.
"""

import logging
import ssl

import gevent
import gevent.ssl

log = logging.getLogger("chatroom.server")

#: Errors of a TLS read that mean "no whole record yet", as BlockingIOError does for plain TCP.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class HandshakeTimeout(Exception):
    pass


def make_context(certfile, keyfile):
    """A server context for ``certfile`` and ``keyfile`` (PEM): TLS 1.2 or newer, no renegotiation.

    Raises OSError or ssl.SSLError when the files cannot be read or do not match.
    """
    # What ssl.create_default_context(Purpose.CLIENT_AUTH) builds, but gevent's class: the stdlib
    # function (gevent.ssl re-exports it unchanged) makes a stdlib context, whose sockets block
    # the whole process in a handshake.
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.load_cert_chain(certfile, keyfile)
    return context


def handshake(context, sock, client_id, timeout):
    """Wrap the accepted ``sock`` and finish the server side of the handshake within ``timeout`` s.

    Returns the TLS socket, or None (logged, and the socket closed) when the peer failed or
    timed out.
    """
    tls = None
    try:
        with gevent.Timeout(timeout, HandshakeTimeout):
            tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
        return tls
    except HandshakeTimeout:
        log.info("TLS handshake with %s timed out after %gs", client_id, timeout)
    except (OSError, ValueError) as err:
        log.info("TLS handshake with %s failed: %s", client_id, getattr(err, "reason", None) or err)
    if tls is not None:
        tls.close()
    else:
        sock.close()
    return None

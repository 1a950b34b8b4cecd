"""``--metrics-port``: the server's counters as Prometheus text at ``http://HOST:PORT/metrics``.

Nothing is counted for the metrics' sake on the hot path: :class:`~chatroom.transport.server.ChatServer`
keeps plain integer counters bumped once per read, per send or per connection event (never per
recipient of a message), and :class:`ServerCollector` turns them, and what can be counted only
at scrape time (open connections, queued bytes, rooms), into metric families when Prometheus
asks. The HTTP server is gevent's WSGI server in the same loop, so a scrape sees one consistent
moment and no thread touches the server's state.
"""

import logging
from collections import Counter

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("chatroom.server")


def listener_name(client_class):
    """The ``listener`` label of a client class: ``native``, ``irc``."""
    name = getattr(client_class, "protocol_name", None) or client_class.__name__.replace("Client", "")
    return name.lower() or "native"


class ServerCollector:
    """The metric families of one :class:`ChatServer`, built at each scrape."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        s = self.server
        open_by_class = Counter(map(type, s.clients))
        classes = {listener.client_class for listener in s.listeners} | set(s.connects)
        names = {cls: listener_name(cls) for cls in classes}

        g = GaugeMetricFamily("chatroom_connections", "Open client connections, by listener",
                              labels=["listener"])
        for cls in classes:
            g.add_metric([names[cls]], open_by_class.get(cls, 0))
        yield g
        c = CounterMetricFamily("chatroom_connects", "Connections accepted, by listener",
                                labels=["listener"])
        for cls in classes:
            c.add_metric([names[cls]], s.connects.get(cls, 0))
        yield c
        yield _by_reason("chatroom_disconnects", "Connections closed, by reason (docs/protocol.md)",
                         s.disconnects)
        yield _by_reason("chatroom_evictions", "Clients dropped for being too far behind, by reason",
                         s.evictions)
        yield _by_reason("chatroom_refusals", "Connections refused at accept, by reason",
                         s.refusals)
        yield CounterMetricFamily("chatroom_lines_received", "Lines read from clients",
                                  value=s.lines_in)
        yield CounterMetricFamily("chatroom_messages_delivered",
                                  "Frames (messages, events, replies) handed to clients' sockets",
                                  value=s.frames_out)
        yield CounterMetricFamily("chatroom_received_bytes", "Bytes read from clients",
                                  value=s.bytes_in)
        yield CounterMetricFamily("chatroom_sent_bytes", "Bytes sent to clients", value=s.bytes_out)
        yield GaugeMetricFamily("chatroom_outbox_bytes", "Bytes queued to clients, not yet sent",
                                value=sum(c.queued for c in s.clients))
        yield GaugeMetricFamily("chatroom_writers", "Clients whose socket is full (a writer waits)",
                                value=sum(1 for c in s.clients if c.writer is not None))
        registry = s.registry
        yield GaugeMetricFamily("chatroom_rooms", "Rooms on this server", value=len(registry.rooms))
        yield GaugeMetricFamily("chatroom_members", "Members in the chat on this server",
                                value=len(registry))
        link = getattr(registry, "link", None)
        if link is not None:
            yield GaugeMetricFamily("chatroom_cluster_up",
                                    "1 while this node's link to Redis is up, else 0",
                                    value=1 if link.up else 0)


def _by_reason(name, doc, counts):
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, count in sorted(counts.items()):
        family.add_metric([reason], count)
    return family


def serve(server, host, port):
    """Start serving ``server``'s metrics on ``host:port`` (0: a free port); returns the WSGI server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    ProcessCollector(registry=registry)  # memory, CPU, open files of this process
    app = make_wsgi_app(registry)

    def metrics_only(environ, start_response):
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"see /metrics\n"]
        return app(environ, start_response)

    http = WSGIServer((host, port), metrics_only, log=None, error_log=log)
    http.start()
    return http

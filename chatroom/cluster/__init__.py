"""Scale-out over Redis: several chat-server processes share rooms, nicknames and messages as one chat.

A node (one ``bin/chat-server --redis URL`` process) keeps its own clients in a
:class:`ClusterRegistry`, which is the in-process :class:`~chatroom.registry.Registry` plus a
:class:`Link` to Redis:

- Delivery to local members is the registry's own ``_fanout``, as without Redis. Every event the
  other nodes need (``MSG``, presence, a ``TELL`` to a remote member) is put ONCE, as the bytes the
  clients will read, into a bounded queue; one publisher greenlet drains it over one connection
  and packs everything queued into as few ``PUBLISH`` payloads as it can. One connection and one
  greenlet keep one sender's lines in the order sent; nothing that talks to a client waits on it.
- Every node holds ONE subscription (one connection, the channel :data:`CHANNEL`), skips its own
  payloads by node name, and fans the others' out to its local members.
- Cluster-wide state lives in keys that expire :data:`DEFAULT_TTL` seconds after the node that
  wrote them stops refreshing them, so a node that dies leaves no ghosts: nicknames
  (``nick:<casefolded>`` = ``"<node> <id> <serial>"``, claimed atomically by a script), each
  node's members (``node:<node>:ids``, ``node:<node>:room:<room>``, ``node:<node>:rooms``) and
  the sorted set of live nodes (``nodes``, scored by expiry time on Redis's own clock).
- Each heartbeat also reaps nodes past their time: the one node whose script takes a dead node out
  of ``nodes`` reads its members (their keys outlive it by :data:`REAP_GRACE_TTLS`), erases its
  keys and nicknames, and announces ``PART <room> <who> disconnected`` for each, to everyone.
- ``NICK``, ``TELL`` to someone not local, ``WHO`` and ``ROOMS`` make one Redis round trip in the
  reader greenlet of the client that asked (only that client waits; bounded by
  :data:`REDIS_TIMEOUT`).
- When Redis goes away the node carries on alone: local chat works, cross-node events are not
  queued, clients get ``NOTICE cluster-down``. The subscriber reconnects with bounded back-off;
  then the node rewrites its whole state in Redis (nicknames re-claimed; one taken meanwhile by
  another node is lost with ``NOTICE nick-lost``) and clients get ``NOTICE cluster-up``.

``redis`` must be imported only after ``gevent.monkey.patch_all()`` (its sockets must be gevent's),
so only :class:`Link` imports it, when one is made; ``chatroom.server.main`` patches first.

The modules: :mod:`.scripts` (key names and the Lua scripts), :mod:`.link` (class :class:`Link`:
the connections to Redis, publisher, subscriber, heartbeat and recovery), :mod:`.registry`
(:class:`ClusterRegistry`) and :mod:`.workers` (:func:`run_workers`, the supervisor of
``--workers``, which starts several server processes sharing one port). See docs/cluster.md.
"""

from .link import Link
from .registry import (DEFAULT_TTL, LEAVE_TIMEOUT, ClusterRegistry, default_node_name,
                       format_notice)
from .workers import run_workers

__all__ = ["ClusterRegistry", "DEFAULT_TTL", "LEAVE_TIMEOUT", "Link", "default_node_name",
           "format_notice", "run_workers"]

"""An in-process, deterministic transport for tests: nothing moves until you say so.

Every directed link (client → server, server → client) is a FIFO queue, like a ZeroMQ
connection. Frames move to the receiver when the test calls :meth:`MemoryNetwork.step` (or the
finer ``deliver_*`` methods), so a test decides every interleaving:

- ``delay``: frames become deliverable ``delay`` steps after they were sent.
- ``reorder``: when several clients' frames are ready in one step, the server receives the
  clients' queues in a shuffled order (each client's own frames keep their order).
- ``loss``: the probability that a frame sent with ``reliable=False`` is dropped.

All randomness comes from one seeded :class:`random.Random`.

A client may be given a network address (``connect(peer, address="10.0.0.1")``), which the
server side reports for it (:meth:`MemoryServerTransport.address_of`) at any time, so tests
can exercise the per-address session limit; without one it reports None (not counted).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

__all__ = ["MemoryClientTransport", "MemoryNetwork", "MemoryServerTransport"]


class MemoryClientTransport:
    """One client's end of a :class:`MemoryNetwork` (a :class:`ClientTransport`)."""

    def __init__(self, network: MemoryNetwork, peer: bytes,
                 address: str | None = None) -> None:
        self.network = network
        self.peer = peer
        self.address = address
        """The network address the server sees this client's connection come from."""
        self.inbox: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes, reliable: bool = True) -> None:
        if self.closed:
            return
        net = self.network
        if not reliable and net.loss and net.rng.random() < net.loss:
            return
        net.uplinks.setdefault(self.peer, deque()).append((net.now + net.delay, bytes(frame)))

    def receive(self) -> list[bytes]:
        frames, self.inbox = self.inbox, []
        return frames

    def close(self) -> None:
        """Stop sending and receiving; frames already sent still reach the server."""
        self.closed = True
        self.network.downlinks.pop(self.peer, None)


class MemoryServerTransport:
    """The server's end of a :class:`MemoryNetwork` (a :class:`ServerTransport`)."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.inbox: list[tuple[bytes, bytes]] = []

    def send(self, peer: bytes, frame: bytes, reliable: bool = True) -> bool:
        net = self.network
        client = net.clients.get(peer)
        if client is None or client.closed:
            return False
        if not reliable and net.loss and net.rng.random() < net.loss:
            return True
        net.downlinks.setdefault(peer, deque()).append((net.now + net.delay, bytes(frame)))
        return True

    def broadcast(self, peers: Iterable[bytes], frame: bytes) -> list[bytes]:
        return [peer for peer in peers if not self.send(peer, frame)]

    def receive(self) -> list[tuple[bytes, bytes]]:
        frames, self.inbox = self.inbox, []
        return frames

    def address_of(self, peer: bytes) -> str | None:
        """The ``address`` ``peer`` was connected with (None: none given, or no such
        client)."""
        client = self.network.clients.get(peer)
        return None if client is None else client.address

    def close(self) -> None:
        self.inbox.clear()


class MemoryNetwork:
    """A server and any number of clients in one process, moved by explicit steps."""

    def __init__(self, *, delay: int = 0, reorder: bool = False, loss: float = 0.0,
                 seed: int = 0) -> None:
        self.delay = delay
        self.reorder = reorder
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0
        self.server = MemoryServerTransport(self)
        self.clients: dict[bytes, MemoryClientTransport] = {}
        self.uplinks: dict[bytes, deque[tuple[int, bytes]]] = {}
        self.downlinks: dict[bytes, deque[tuple[int, bytes]]] = {}

    def connect(self, peer: bytes | str, *, address: str | None = None
                ) -> MemoryClientTransport:
        """A new client connection named ``peer`` (its routing id on the server side), from
        the network ``address`` (None: the server is told none)."""
        name = peer.encode() if isinstance(peer, str) else peer
        if name in self.clients and not self.clients[name].closed:
            raise ValueError(f"a client named {name!r} is already connected")
        client = self.clients[name] = MemoryClientTransport(self, name, address)
        return client

    def deliver_from(self, peer: bytes | str, count: int | None = None) -> int:
        """Move up to ``count`` ready frames (all if None) from ``peer`` to the server."""
        name = peer.encode() if isinstance(peer, str) else peer
        return self._move(self.uplinks.get(name), count,
                          lambda f: self.server.inbox.append((name, f)))

    def deliver_to(self, peer: bytes | str, count: int | None = None) -> int:
        """Move up to ``count`` ready frames (all if None) from the server to ``peer``."""
        name = peer.encode() if isinstance(peer, str) else peer
        client = self.clients.get(name)
        if client is None or client.closed:
            return 0
        return self._move(self.downlinks.get(name), count, client.inbox.append)

    def _move(self, link: deque[tuple[int, bytes]] | None, count: int | None,
              put: object) -> int:
        moved = 0
        while link and (count is None or moved < count) and link[0][0] <= self.now:
            put(link.popleft()[1])  # type: ignore[operator]
            moved += 1
        return moved

    def step(self) -> int:
        """Advance one step and deliver every ready frame both ways; return how many moved."""
        moved = 0
        senders = list(self.uplinks)
        if self.reorder:
            self.rng.shuffle(senders)
        for peer in senders:
            moved += self.deliver_from(peer)
        for peer in list(self.downlinks):
            moved += self.deliver_to(peer)
        self.now += 1
        return moved

    @property
    def in_flight(self) -> int:
        """Frames sent and not yet delivered, both directions."""
        return (sum(len(q) for q in self.uplinks.values())
                + sum(len(q) for q in self.downlinks.values()))

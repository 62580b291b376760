"""The narrow byte-mailbox boundary between rtecs and the network.

Replication logic never touches sockets: a client hands frames to a
:class:`ClientTransport` and drains what arrived; a server does the same with a
:class:`ServerTransport`, whose frames are addressed by an opaque peer id (a ZeroMQ
routing id, or a name in the memory transport). Implementations: :mod:`rtecs.transport.memory`
(deterministic, for tests) and the ZeroMQ one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["ClientTransport", "ServerTransport"]


class ClientTransport(Protocol):
    """A client's connection to its server."""

    def send(self, frame: bytes, reliable: bool = True) -> None:
        """Queue one frame for the server. Never blocks the caller. ``reliable=False`` marks a
        frame that may be lost (pings); ZeroMQ delivers everything anyway."""
        ...

    def receive(self) -> list[bytes]:
        """Every frame that arrived since the last call, in arrival order. Never blocks."""
        ...

    def close(self) -> None:
        """Release the connection. Frames still queued may be dropped."""
        ...


class ServerTransport(Protocol):
    """A server's side of every client connection."""

    def send(self, peer: bytes, frame: bytes, reliable: bool = True) -> bool:
        """Queue one frame for ``peer``. Return False if the peer is unknown or cannot take
        more (its queue is full); the frame is then not sent."""
        ...

    def broadcast(self, peers: Iterable[bytes], frame: bytes) -> list[bytes]:
        """Queue the same ``frame`` for every peer (a relayed batch); return the peers that
        could not take it."""
        ...

    def receive(self) -> list[tuple[bytes, bytes]]:
        """Every ``(peer, frame)`` that arrived since the last call, in arrival order."""
        ...

    def close(self) -> None:
        ...

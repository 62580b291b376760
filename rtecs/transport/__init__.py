"""The narrow byte-mailbox boundary between rtecs and the network.

Replication logic never touches sockets: a client hands frames to a
:class:`ClientTransport` and drains what arrived; a server does the same with a
:class:`ServerTransport`, whose frames are addressed by an opaque peer id (a ZeroMQ
routing id, or a name in the memory transport). Implementations: :mod:`rtecs.transport.memory`
(deterministic, for tests) and the ZeroMQ one.

A server transport also tells the host the network address a ``HELLO`` came from
(:meth:`ServerTransport.address_of`), so the server can bound the sessions one address holds
(DESIGN §8). Only hellos need it, so a transport may learn it for hellos only, and keep it
only until its next :meth:`~ServerTransport.receive`: the host asks while it handles the
batch that carried the hello.
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

    def address_of(self, peer: bytes) -> str | None:
        """The network address (an IP address, as text) that ``peer``'s connection comes
        from, or None if the transport cannot tell (an in-process connection, a peer it
        knows nothing of). Asked by the host for a peer whose ``HELLO`` is in the batch the
        last :meth:`receive` returned; a transport need not answer for other peers, nor
        after its next :meth:`receive` (the ZeroMQ one reads the address from the hello's
        frame and forgets it then). A transport without this method gives no addresses:
        the per-address session limit then does not apply."""
        ...

    def close(self) -> None:
        ...

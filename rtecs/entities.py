"""Replicated esper entities: the :class:`Entity` record, spawn and destroy, and the
bookkeeping that keeps each client's esper world in step with its datastore.

A replicated entity is an esper entity whose replicated components are realtime models. On
the wire it is a small dynamic model of the built-in type :class:`Entity` (it carries the
entity's owner and lifetime flags) with each component created under it, so owning the entity
covers its components and destroying it destroys them. Every client that sees the entity
creates an esper entity in *its own* world with the same component models; non-replicated
components may sit beside them and stay local.

esper keeps its worlds in module globals (``switch_world``); every call here switches to the
client's world and back, so two clients in one process, each bound to its own world, work,
and nothing relies on the current world being right when a network message arrives.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import esper
from reactivex import Observable
from reactivex.subject import Subject

from rtecs.datastore import OpaqueModel
from rtecs.model import RealtimeModel, store_of
from rtecs.protocol import (
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    PREVENT_OWNERSHIP_TAKEOVER,
)

if TYPE_CHECKING:
    from rtecs.datastore import Datastore

__all__ = ["Entities", "Entity", "EntityEvent", "in_world"]

log = logging.getLogger(__name__)


class Entity(RealtimeModel, type_name="rtecs.Entity"):
    """The network record of a replicated entity: owner and lifetime flags; its components
    are created under it. You rarely touch it: use :meth:`Realtime.entity_model`."""


class EntityEvent(NamedTuple):
    """A replicated entity appeared (``spawned``) or went, here (``remote`` False) or
    because of another client or the server (``remote`` True)."""

    entity: int                            # the esper entity id in this client's world
    components: tuple[RealtimeModel, ...]  # its replicated component models
    spawned: bool                          # True: it appeared; False: it went
    remote: bool                           # True: another client or the server did it


@contextlib.contextmanager
def in_world(name: str) -> Iterator[None]:
    """Run the block with esper switched to world ``name``, then switch back."""
    previous = esper.current_world
    if previous == name:
        yield
        return
    esper.switch_world(name)
    try:
        yield
    finally:
        esper.switch_world(previous)


class Entities:
    """The replicated entities of one client, kept in the client's esper world."""

    def __init__(self, datastore: Datastore, world: str) -> None:
        self.datastore = datastore
        self.world = world
        self._entity_of: dict[Entity, int] = {}
        self._record_of: dict[int, Entity] = {}
        self._events: Subject[EntityEvent] = Subject()
        datastore.register_type(Entity)
        datastore.lifecycle_listeners.append(self._on_lifecycle)

    @property
    def events(self) -> Observable[EntityEvent]:
        return self._events

    def __len__(self) -> int:
        return len(self._record_of)

    def __contains__(self, entity: object) -> bool:
        return entity in self._record_of

    def spawn(self, *components: RealtimeModel, owned: bool = True,
              prevent_ownership_takeover: bool = False, destroy_when_owner_leaves: bool = True,
              destroy_when_last_client_leaves: bool = True) -> int:
        if not components:
            raise ValueError("spawn() needs at least one component model")
        types = [type(c) for c in components]
        if len(set(types)) != len(types):
            raise ValueError("an entity holds at most one component of each model type")
        for c in components:
            if store_of(c) is not None:
                raise ValueError(f"{c!r} already belongs to a datastore")
        ds = self.datastore
        for t in types:
            ds.register_type(t)  # new to the room: its schema goes out before the spawn
        flags = ((PREVENT_OWNERSHIP_TAKEOVER if prevent_ownership_takeover else 0)
                 | (DESTROY_WHEN_OWNER_LEAVES if destroy_when_owner_leaves else 0)
                 | (DESTROY_WHEN_LAST_CLIENT_LEAVES if destroy_when_last_client_leaves else 0))
        record = Entity()
        ds.create(record, flags, owned)
        for c in components:
            ds.create(c, 0, False, parent=record)
        with in_world(self.world):
            entity = esper.create_entity(*components)
        self._entity_of[record] = entity
        self._record_of[entity] = record
        self._events.on_next(EntityEvent(entity, components, True, False))
        return entity

    def destroy(self, entity: int) -> None:
        record = self._record_of.get(entity)
        if record is None:
            raise KeyError(f"entity {entity} is not a replicated entity of this client")
        components = tuple(self.datastore.kids(record))
        self.datastore.destroy(record)  # raises OwnershipError if not allowed
        self._forget(record, entity)
        self._events.on_next(EntityEvent(entity, components, False, False))

    def record(self, entity: int) -> Entity | None:
        return self._record_of.get(entity)

    def entity_of(self, model: RealtimeModel) -> int | None:
        """The esper entity a replicated component (or entity record) belongs to."""
        record = model if isinstance(model, Entity) else model.parent
        if isinstance(record, Entity):
            return self._entity_of.get(record)
        return None

    def _forget(self, record: Entity, entity: int) -> None:
        del self._entity_of[record]
        del self._record_of[entity]
        with in_world(self.world):
            if esper.entity_exists(entity):
                esper.delete_entity(entity, immediate=True)

    def _on_lifecycle(self, model: RealtimeModel, alive: bool) -> None:
        if isinstance(model, Entity):
            if alive:
                with in_world(self.world):
                    entity = esper.create_entity()
                self._entity_of[model] = entity
                self._record_of[entity] = model
            else:
                found = self._entity_of.get(model)
                if found is not None:
                    components = tuple(c for c in self._components(found))
                    self._forget(model, found)
                    self._events.on_next(EntityEvent(found, components, False, True))
            return
        parent = model.parent
        if not isinstance(parent, Entity):
            return
        owner_entity = self._entity_of.get(parent)
        if owner_entity is None:
            return
        with in_world(self.world):
            if not alive:
                if esper.entity_exists(owner_entity):
                    esper.try_remove_component(owner_entity, type(model))
                return
            esper.add_component(owner_entity, model)
        components = tuple(self._components(owner_entity))
        shown = [kid for kid in self.datastore.kids(parent)
                 if not isinstance(kid, OpaqueModel)]  # a type with no class here: not shown
        if len(components) == len(shown):
            self._events.on_next(EntityEvent(owner_entity, components, True, True))

    def _components(self, entity: int) -> list[RealtimeModel]:
        with in_world(self.world):
            if not esper.entity_exists(entity):
                return []
            found: tuple[Any, ...] = esper.components_for_entity(entity)
            return [c for c in found if isinstance(c, RealtimeModel)]



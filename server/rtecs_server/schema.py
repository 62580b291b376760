"""A room's schema: the union of its joiners' model types, precomputed for the hot path.

The hello's schema maps type name → {property id → (name, tag, reliable)} (see
:mod:`rtecs.protocol`). The room keeps the union of all joiners' schemas. A joiner
contradicts the room — and is refused with a :class:`~rtecs.errors.SchemaError` naming the
difference — when one type's property id has another name, tag or reliability, when its root
type differs, when a tag is unknown, when a ``model:<Type>`` tag names a type nobody declared,
or when declared children form a cycle (a model would contain itself). A property or type
only one side has is fine: it joins the union.

A schema is hostile input: a tiny hello can declare a chain of child types thousands deep,
or types that each declare two children of the next (17 such types make one instance 131,071
models). So a merge is bounded before anything changes (:class:`SchemaBounds`): names,
types and properties are counted, the union's size is estimated in bytes, and the declared
children are walked (without recursion) for how deep one instance nests and how many models
it makes. Over any bound is a :class:`SchemaError` naming it, and nothing is merged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from rtecs.errors import ProtocolError, SchemaError
from rtecs.protocol import check_tag

__all__ = ["DEFAULT_SCHEMA_BOUNDS", "ModelType", "Prop", "RoomSchema", "SchemaBounds"]

SchemaSpec = Mapping[str, Mapping[int, tuple[str, str, bool]]]
#: A store's last word on a merge (see :meth:`RoomSchema.merge`).
Admit = Callable[[Mapping[str, list[int]], Mapping[str, int]], None]


@dataclass(frozen=True, slots=True)
class SchemaBounds:
    """What one room's union schema may hold. ``max_depth`` is the protocol's nesting limit
    (:attr:`rtecs.protocol.Limits.max_depth`): a model and its declared children, counted in
    levels."""

    max_types: int = 1024            # model types in the union
    max_props: int = 1024            # properties of one type
    max_name: int = 128              # characters of a type or property name
    max_bytes: int = 256 * 1024      # the union's estimated size (see RoomSchema.size)
    max_depth: int = 64              # levels of one instance with its declared children
    max_declared_models: int = 4096  # models one instance makes with its declared children


DEFAULT_SCHEMA_BOUNDS = SchemaBounds()

#: Estimated bytes of a type and of a property besides their names and tags.
TYPE_OVERHEAD = 64
PROP_OVERHEAD = 32


class Prop:
    """One property of a model type. ``child`` is the type name of a declared child model
    (tag ``model:<Type>``), else None."""

    __slots__ = ("child", "f32", "name", "reliable", "tag")

    def __init__(self, name: str, tag: str, reliable: bool) -> None:
        self.name = name
        self.tag = tag
        self.reliable = reliable
        self.child = tag[6:] if tag.startswith("model:") else None
        #: Values go out as float32 (:class:`rtecs.protocol.F32`).
        self.f32 = tag.startswith("f32")

    def describe(self) -> str:
        return f"{self.name!r} {self.tag}{'' if self.reliable else ' unreliable'}"


class ModelType:
    """A model type: ``props`` by id, its declared ``children`` as (property id, type) in id
    order, ``subtree_models``, how many models one instance creates (itself included), and
    ``subtree_depth``, how many levels they span (1: no declared children)."""

    __slots__ = ("children", "name", "props", "subtree_depth", "subtree_models")

    def __init__(self, name: str) -> None:
        self.name = name
        self.props: dict[int, Prop] = {}
        self.children: list[tuple[int, ModelType]] = []
        self.subtree_models = 1
        self.subtree_depth = 1


class RoomSchema:
    """The union schema of one room. Shared :class:`ModelType` objects are updated in place
    when a later joiner adds properties, so existing models see them."""

    def __init__(self, bounds: SchemaBounds = DEFAULT_SCHEMA_BOUNDS) -> None:
        self.types: dict[str, ModelType] = {}
        self.root_type: str | None = None
        self.bounds = bounds
        #: The union's estimated size in bytes: names, tags and a fixed overhead each.
        self.size = 0

    def as_dict(self) -> dict[str, dict[int, tuple[str, str, bool]]]:
        return {name: {pid: (p.name, p.tag, p.reliable) for pid, p in t.props.items()}
                for name, t in self.types.items()}

    def merge(self, schema: SchemaSpec, root_type: str, admit: Admit | None = None,
              ) -> dict[str, list[int]]:
        """Add a joiner's schema to the union, all or nothing; raise :class:`SchemaError` on a
        contradiction or a bound. Returns, for types the room already had, the child-model
        property ids just added (existing models of those types need the new children).

        ``admit``, if given, is called once everything is checked and before anything
        changes, with those additions and every type's new ``subtree_models``: it may raise
        :class:`SchemaError` to refuse the merge (the store counts the models the merge would
        make against the datastore limit)."""
        if self.root_type is not None and root_type != self.root_type:
            raise SchemaError(f"the room's model is a {self.root_type!r}, you sent "
                              f"{root_type!r}")
        bounds = self.bounds
        additions: dict[str, dict[int, Prop]] = {}
        size = self.size
        unknown = 0
        for tname, props in schema.items():
            known = self.types.get(tname)
            if known is None:
                _check_name(tname, "a type name", bounds)
                size += TYPE_OVERHEAD + len(tname)
                unknown += 1   # the bounds fail fast: a 1 MB schema is refused early
                if len(self.types) + unknown > bounds.max_types:
                    raise SchemaError(f"a room's schema holds at most {bounds.max_types} "
                                      f"model types")
            if len(props) > bounds.max_props or (
                    known is not None and len({*known.props, *props}) > bounds.max_props):
                raise SchemaError(f"type {_short(tname)} would have more than "
                                  f"{bounds.max_props} properties")
            new = additions.setdefault(tname, {})
            for pid, (name, tag, reliable) in props.items():
                if known is None or pid not in known.props:
                    _check_name(name, f"type {_short(tname)}, property {pid}: a name", bounds)
                    size += PROP_OVERHEAD + len(name) + len(tag)
                    if size > bounds.max_bytes:
                        raise SchemaError(f"the room's schema would be over the limit of "
                                          f"{bounds.max_bytes} bytes")
                try:
                    check_tag(tag)
                except ProtocolError as exc:
                    raise SchemaError(f"type {tname!r}, property {pid} ({name!r}): {exc}"
                                      ) from None
                prop = Prop(name, tag, reliable)
                old = known.props.get(pid) if known is not None else None
                if old is None:
                    new[pid] = prop
                elif (old.name, old.tag, old.reliable) != (name, tag, reliable):
                    raise SchemaError(f"schema conflict in type {tname!r}, property {pid}: "
                                      f"the room has {old.describe()}, you sent "
                                      f"{prop.describe()}")
        if root_type not in self.types and root_type not in additions:
            raise SchemaError(f"the root type {_short(root_type)} is not in the schema")
        if len({*self.types, *additions}) > bounds.max_types:
            raise SchemaError(f"a room's schema holds at most {bounds.max_types} model types")
        if size > bounds.max_bytes:
            raise SchemaError(f"the room's schema would be about {size} bytes, over the limit "
                              f"of {bounds.max_bytes}")
        edges = self._check_children(additions)
        counts, depths = self._check_expansion(edges)
        grown = {tname: [pid for pid, p in new.items() if p.child]
                 for tname, new in additions.items()
                 if tname in self.types and any(p.child for p in new.values())}
        if admit is not None:
            admit(grown, counts)
        self.size = size
        for tname, new in additions.items():
            mtype = self.types.get(tname)
            if mtype is None:
                mtype = self.types[tname] = ModelType(tname)
            mtype.props.update(new)
        for tname in additions:
            mtype = self.types[tname]
            mtype.children = [(pid, self.types[p.child])
                              for pid, p in sorted(mtype.props.items()) if p.child]
        for t in self.types.values():
            t.subtree_models = counts[t.name]
            t.subtree_depth = depths[t.name]
        if self.root_type is None:
            self.root_type = root_type
        return grown

    def _check_children(self, additions: dict[str, dict[int, Prop]]
                        ) -> dict[str, list[str]]:
        """Every child type must be declared, and no type may contain itself. Returns the
        declared-children edges of the merged union (type name → child type names)."""
        edges: dict[str, list[str]] = {}
        for tname in {*self.types, *additions}:
            props = dict(self.types[tname].props) if tname in self.types else {}
            props.update(additions.get(tname, {}))
            edges[tname] = []
            for pid, p in props.items():
                if p.child is None:
                    continue
                if p.child not in self.types and p.child not in additions:
                    raise SchemaError(f"type {tname!r}, property {pid} ({p.name!r}) is a "
                                      f"{p.tag} but no type {p.child!r} is declared")
                edges[tname].append(p.child)
        self._check_acyclic(edges)
        return edges

    def _check_expansion(self, edges: dict[str, list[str]]
                         ) -> tuple[dict[str, int], dict[str, int]]:
        """Raise :class:`SchemaError` if one instance of any type of the merged union would
        nest deeper than ``max_depth`` levels or make more than ``max_declared_models``
        models with its declared children. ``edges`` form no cycle (checked before); the
        walk is iterative and visits each type once. Returns each type's model count and
        levels (its ``subtree_models`` and ``subtree_depth``)."""
        bounds = self.bounds
        depth: dict[str, int] = {}
        count: dict[str, int] = {}
        for top in edges:
            todo: list[tuple[str, bool]] = [(top, False)]
            while todo:
                name, ready = todo.pop()
                if name in count:
                    continue
                kids = edges[name]
                if not ready:
                    todo.append((name, True))
                    todo.extend((k, False) for k in kids if k not in count)
                    continue
                depth[name] = 1 + max((depth[k] for k in kids), default=0)
                count[name] = 1 + sum(count[k] for k in kids)
                if depth[name] > bounds.max_depth:
                    raise SchemaError(f"type {_short(name)} nests {depth[name]} levels of "
                                      f"declared child models, over the limit of "
                                      f"{bounds.max_depth}")
                if count[name] > bounds.max_declared_models:
                    raise SchemaError(f"one {_short(name)} would make {count[name]} models "
                                      f"with its declared children, over the limit of "
                                      f"{bounds.max_declared_models}")
        return count, depth

    @staticmethod
    def _check_acyclic(edges: dict[str, list[str]]) -> None:
        """Raise :class:`SchemaError` naming a cycle of ``edges`` if there is one. A depth-first
        walk with an explicit stack: a chain of declared children is as deep as a hello
        makes it."""
        done: set[str] = set()
        for start in edges:
            if start in done:
                continue
            path: list[str] = [start]
            on_path = {start}
            todo: list[Iterator[str]] = [iter(edges[start])]
            while todo:
                child = next(todo[-1], None)
                if child is None:
                    todo.pop()
                    name = path.pop()
                    on_path.discard(name)
                    done.add(name)
                    continue
                if child in done:
                    continue
                if child in on_path:
                    cycle = " → ".join([*path[path.index(child):], child])
                    raise SchemaError(f"declared child models form a cycle: {cycle}")
                path.append(child)
                on_path.add(child)
                todo.append(iter(edges[child]))



def _short(name: str) -> str:
    """A name as it goes into an error message or a log line: quoted, at most 64 characters."""
    return repr(name) if len(name) <= 64 else repr(name[:60]) + "…"


def _check_name(name: str, what: str, bounds: SchemaBounds) -> None:
    if not 0 < len(name) <= bounds.max_name or not name.isprintable():
        raise SchemaError(f"{what} must have 1 to {bounds.max_name} printable characters, "
                          f"got {_short(name)}")

"""A room's schema: the union of its joiners' model types, precomputed for the hot path.

The hello's schema maps type name → {property id → (name, tag, reliable)} (see
:mod:`rtecs.protocol`). The room keeps the union of all joiners' schemas. A joiner
contradicts the room — and is refused with a :class:`~rtecs.errors.SchemaError` naming the
difference — when one type's property id has another name, tag or reliability, when its root
type differs, when a tag is unknown, when a ``model:<Type>`` tag names a type nobody declared,
or when declared children form a cycle (a model would contain itself). A property or type
only one side has is fine: it joins the union.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from rtecs.errors import ProtocolError, SchemaError
from rtecs.protocol import check_tag

__all__ = ["ModelType", "Prop", "RoomSchema"]

SchemaSpec = Mapping[str, Mapping[int, tuple[str, str, bool]]]


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
    order, and ``subtree_models``, how many models one instance creates (itself included)."""

    __slots__ = ("children", "name", "props", "subtree_models")

    def __init__(self, name: str) -> None:
        self.name = name
        self.props: dict[int, Prop] = {}
        self.children: list[tuple[int, ModelType]] = []
        self.subtree_models = 1


class RoomSchema:
    """The union schema of one room. Shared :class:`ModelType` objects are updated in place
    when a later joiner adds properties, so existing models see them."""

    def __init__(self) -> None:
        self.types: dict[str, ModelType] = {}
        self.root_type: str | None = None

    def as_dict(self) -> dict[str, dict[int, tuple[str, str, bool]]]:
        return {name: {pid: (p.name, p.tag, p.reliable) for pid, p in t.props.items()}
                for name, t in self.types.items()}

    def merge(self, schema: SchemaSpec, root_type: str) -> dict[str, list[int]]:
        """Add a joiner's schema to the union, all or nothing; raise :class:`SchemaError` on a
        contradiction. Returns, for types the room already had, the child-model property ids
        just added (existing models of those types need the new children)."""
        if self.root_type is not None and root_type != self.root_type:
            raise SchemaError(f"the room's model is a {self.root_type!r}, you sent "
                              f"{root_type!r}")
        additions: dict[str, dict[int, Prop]] = {}
        for tname, props in schema.items():
            known = self.types.get(tname)
            new = additions.setdefault(tname, {})
            for pid, (name, tag, reliable) in props.items():
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
            raise SchemaError(f"the root type {root_type!r} is not in the schema")
        self._check_children(additions)
        grown: dict[str, list[int]] = {}
        for tname, new in additions.items():
            mtype = self.types.get(tname)
            if mtype is None:
                mtype = self.types[tname] = ModelType(tname)
            elif any(p.child for p in new.values()):
                grown[tname] = [pid for pid, p in new.items() if p.child]
            mtype.props.update(new)
        for tname in additions:
            mtype = self.types[tname]
            mtype.children = [(pid, self.types[p.child])
                              for pid, p in sorted(mtype.props.items()) if p.child]
        self._count_subtrees()
        if self.root_type is None:
            self.root_type = root_type
        return grown

    def _check_children(self, additions: dict[str, dict[int, Prop]]) -> None:
        """Every child type must be declared, and no type may contain itself."""
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

    def _count_subtrees(self) -> None:
        """Each type's ``subtree_models``, children counted before their parents (the
        children form no cycle: checked before)."""
        counted: dict[str, int] = {}
        for top in self.types.values():
            todo: list[tuple[ModelType, bool]] = [(top, False)]
            while todo:
                t, ready = todo.pop()
                if t.name in counted:
                    continue
                if ready:
                    counted[t.name] = 1 + sum(counted[c.name] for _, c in t.children)
                    continue
                todo.append((t, True))
                todo.extend((c, False) for _, c in t.children if c.name not in counted)
        for t in self.types.values():
            t.subtree_models = counted[t.name]

"""The client's layers import in one direction (DESIGN §1, issue 10).

:data:`CLIENT_LAYERS` is the client from top to bottom. Every module under ``rtecs/`` belongs
to the layer of its top-level name (``rtecs.model._prop`` is in ``model``'s,
``rtecs.transport.zmq`` in ``transport``'s); the face ``rtecs/__init__.py`` re-exports the
public names and is exempt. A module may import its own layer and the layers below it, never
one above (nor the face); a new module fails the test until it is given a layer here. And
there is no import circle among the client's modules, submodules of one package included.

Imports are read with :mod:`ast` (see :mod:`test_layering`): every ``import``/``from``
statement anywhere in a module, also under ``TYPE_CHECKING`` and inside functions — an
upward import that only a type checker or a lazy import follows is still one in the design.
"""

from __future__ import annotations

import pytest
from test_layering import _find_cycle, _graph, _modules

pytestmark = pytest.mark.timeout(60)

#: The client, top to bottom: a module imports only its own layer and those below it.
CLIENT_LAYERS: tuple[tuple[str, ...], ...] = (
    ("ecs",),                       # SyncSystem, spawn/destroy in an esper world
    ("realtime",),                  # the public facade
    ("sync", "entities"),           # the tick's phases; replicated entities
    ("connection", "link", "session", "stream", "timing"),  # the session state machine
    ("datastore",),                 # model tree, dirty tracking, deltas, snapshots
    ("collections", "model"),       # RealtimeModel, prop(), collections, change streams
    ("cache",),                     # the in-flight cache (a pure leaf)
    ("protocol",),                  # messages, codec, limits
    ("transport",),                 # the byte mailbox: memory and ZeroMQ
    ("auth", "clock", "conditioner", "errors", "gcpause"),  # tokens, clocks, a bad link, …
)
FACE = "rtecs"


def _rank() -> dict[str, int]:
    """Each layer name's depth (0: the top)."""
    return {name: depth for depth, layer in enumerate(CLIENT_LAYERS) for name in layer}


def _layer(module: str) -> str:
    """The layer name of a client module: its top-level name under ``rtecs``."""
    return module.split(".")[1]


def _upward(graph: dict[str, set[str]], rank: dict[str, int]) -> list[str]:
    """Every import of ``graph`` that goes up the layers (or to the face), as text. Modules
    without a layer are :func:`test_every_client_module_has_a_layer`'s to report."""
    bad = []
    for source in sorted(graph):
        if source == FACE or _layer(source) not in rank:
            continue
        here = rank[_layer(source)]
        for target in sorted(graph[source]):
            if target == FACE or rank.get(_layer(target), here) < here:
                where = "the face" if target == FACE else f"layer {_layer(target)!r}"
                bad.append(f"{source} (layer {_layer(source)!r}) imports {target} ({where})")
    return bad


def test_every_client_module_has_a_layer() -> None:
    rank = _rank()
    missing = sorted(m for m in _modules("rtecs") if m != FACE and _layer(m) not in rank)
    assert not missing, f"modules without a layer: {missing}: add them to CLIENT_LAYERS"


def test_every_layer_name_is_a_client_module() -> None:
    names = [name for layer in CLIENT_LAYERS for name in layer]
    assert len(names) == len(set(names)), "a name is in two layers"
    present = {_layer(m) for m in _modules("rtecs") if m != FACE}
    stale = sorted(set(names) - present)
    assert not stale, f"CLIENT_LAYERS names what is not under rtecs/: {stale}"


def test_client_imports_go_down_the_layers() -> None:
    bad = _upward(_graph("rtecs"), _rank())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_layer_check_reports_an_upward_import() -> None:
    rank = {"top": 0, "mid": 1, "low": 2}
    graph = {"rtecs": {"rtecs.top"}, "rtecs.top": {"rtecs.mid", "rtecs.low._x"},
             "rtecs.mid": {"rtecs.mid._y", "rtecs.low"}, "rtecs.mid._y": {"rtecs.top"},
             "rtecs.low": {"rtecs"}, "rtecs.low._x": set()}
    assert _upward(graph, rank) == [
        "rtecs.low (layer 'low') imports rtecs (the face)",
        "rtecs.mid._y (layer 'mid') imports rtecs.top (layer 'top')"]


def test_the_client_has_no_import_circle() -> None:
    cycle = _find_cycle(_graph("rtecs"))
    assert cycle is None, "import circle in the client: " + " → ".join(cycle or ())

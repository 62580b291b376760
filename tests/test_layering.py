"""The layers import in one direction (DESIGN §1, issue 10): no import circles in the server,
a room core that imports nothing of storage, hosting, sockets or the CLI, and
``import rtecs_server.room`` loading neither zmq nor a storage backend's library. The
client's layers and circles are :mod:`test_layering_client`'s (with the helpers here).

Imports are read with :mod:`ast`, every ``import``/``from`` statement anywhere in a module
(also under ``TYPE_CHECKING`` and inside functions): a circle that only type checkers or a
lazy import follow is still a circle in the design."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"rtecs": ROOT / "rtecs", "rtecs_server": ROOT / "server" / "rtecs_server"}

#: The pure room core (DESIGN §1): members, sequencer, authoritative store, schema, plugins,
#: records, and the modules they are built from (the store's model table, its writes, undo
#: log and lifecycle rules, the hooks plugins implement).
CORE = ("room", "store", "schema", "plugins", "records", "tree", "restore", "errors", "undo",
        "table", "writes", "lifecycle", "hooks")
#: What the core must never reach, directly or through other server modules: storage,
#: hosting (rooms hosted in sessions, fan-out), sockets and the CLI.
NOT_IN_CORE = ("storage", "storage_base", "codec", "_sqlite_storage", "_redis_storage",
               "persistence", "directory", "host", "hosted", "sessions", "fanout", "server",
               "zmq_transport", "cli", "cli_flags", "cli_commands", "ratelimit", "__main__")
#: Libraries of I/O and clocks the core must not import itself.
NOT_IN_CORE_LIBS = ("zmq", "socket", "sqlite3", "redis", "threading", "time", "asyncio")


def _modules(package: str) -> dict[str, Path]:
    base = PACKAGES[package]
    found: dict[str, Path] = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules ``name`` imports: every module of ``known`` it names, and the top-level
    name of every other import."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[:len(here) - node.level + 1]
                source = ".".join([*here, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" for alias in node.names]
            if not any(t in known for t in targets):  # names from a module, not submodules
                targets.append(source)
        else:
            continue
        for target in targets:
            if target in known:
                out.add(target)
            elif target.split(".")[0] not in PACKAGES:
                out.add(target.split(".")[0])
            else:  # a name inside a module of ours: the deepest module that holds it
                parts = target.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts:
                    out.add(".".join(parts))
    out.discard(name)
    return out


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = {m for p in PACKAGES for m in _modules(p)}
    return {name: {t for t in _imports(name, path, known) if t in modules}
            for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path that ends where it starts, or None.
    A package importing its own submodules (its face) is not a circle by itself: an edge
    from a module to its own package (``rtecs.x`` → ``rtecs``) is."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in done:
            return None
        if node in path:
            return [*path[path.index(node):], node]
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def test_the_server_has_no_import_circle() -> None:
    cycle = _find_cycle(_graph("rtecs_server"))
    assert cycle is None, "import circle in the server: " + " → ".join(cycle or ())


def test_the_cycle_finder_reports_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_room_core_imports_no_storage_hosting_sockets_or_cli() -> None:
    modules = _modules("rtecs_server")
    known = {m for p in PACKAGES for m in _modules(p)}
    graph = _graph("rtecs_server")
    forbidden = {f"rtecs_server.{m}" for m in NOT_IN_CORE}
    for core in CORE:
        name = f"rtecs_server.{core}"
        assert name in modules, f"{name} is missing: update CORE"
        direct = _imports(name, modules[name], known)
        libs = sorted(direct & set(NOT_IN_CORE_LIBS))
        assert not libs, f"{name} imports {libs}"
        reached: set[str] = set()
        todo = [name]
        while todo:  # everything of the server it loads, through any chain of imports
            for nxt in graph[todo.pop()]:
                if nxt not in reached:
                    reached.add(nxt)
                    todo.append(nxt)
        bad = sorted(reached & forbidden)
        assert not bad, f"{name} reaches {bad}"


def test_importing_the_room_core_loads_no_sockets_or_storage() -> None:
    probe = ("import sys, rtecs_server.room\n"
             "print(' '.join(m for m in ('zmq', 'redis', 'sqlite3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import rtecs_server.room loaded {out}"


def test_the_server_face_still_offers_every_public_name() -> None:
    probe = ("import rtecs_server\n"
             "print(' '.join(n for n in rtecs_server.__all__"
             " if getattr(rtecs_server, n, None) is None))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_only_the_gc_helper_pauses_the_garbage_collector() -> None:
    """Issue 10: library code pauses the process-wide cyclic GC in one helper,
    :func:`rtecs.gcpause.paused_gc`, which always restores it; nowhere else calls
    ``gc.disable``/``gc.enable``/``gc.freeze``."""
    offenders = []
    for package in PACKAGES:
        for name, path in _modules(package).items():
            if name == "rtecs.gcpause":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "gc"
                        and node.attr in ("disable", "enable", "freeze", "unfreeze")):
                    offenders.append(f"{name}:{node.lineno} gc.{node.attr}")
    assert not offenders, offenders

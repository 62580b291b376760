"""The API reference is generated from the docstrings and must be current; every public name
of rtecs and rtecs_server is in it with a docstring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import rtecs
import rtecs_server

ROOT = Path(__file__).resolve().parent.parent


def load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current() -> None:
    generated = load_generator().render()  # type: ignore[attr-defined]
    on_disk = (ROOT / "docs" / "api.md").read_text()
    assert generated == on_disk, "docs/api.md is stale: run python docs/gen_api.py"


def test_every_public_name_is_documented() -> None:
    for module in (rtecs, rtecs_server):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                assert (obj.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"


def test_member_entries_carry_whole_docstrings() -> None:
    import inspect

    generated = load_generator().render()  # type: ignore[attr-defined]
    for module in (rtecs, rtecs_server):
        for name in module.__all__:
            cls = getattr(module, name)
            if not inspect.isclass(cls):
                continue
            for member_name, member in vars(cls).items():
                if member_name.startswith("_"):
                    continue
                if isinstance(member, classmethod | staticmethod):
                    member = member.__func__
                if isinstance(member, property) or inspect.isfunction(member):
                    doc = inspect.cleandoc(inspect.getdoc(member) or "")
                    assert doc in generated, f"{name}.{member_name}: docstring cut"
    room_time = inspect.cleandoc(rtecs.Realtime.room_time.__doc__ or "")
    assert "\n" in room_time or len(room_time) > 60
    assert room_time in generated


def test_instance_attributes_and_enum_members_are_listed() -> None:
    generated = load_generator().render()  # type: ignore[attr-defined]
    for attribute in ("ping", "disconnect_reason", "last_error", "bytes_sent", "world"):
        assert f"#### `Realtime.{attribute}" in generated, attribute
    for enum in (rtecs.ConnectionState, rtecs.DisconnectReason, rtecs.ChangeSource,
                 rtecs.UpdateStatus, rtecs_server.UpdateStatus):
        for member in enum:
            assert f"- `{member.name}` = `{member.value!r}`" in generated, member
    # a member's trailing comment is its description
    assert "- `CONNECTED` = `'connected'`: in the room" in generated


def test_undocumented_names_are_marked_and_listed() -> None:
    generator = load_generator()
    missing = generator.missing()  # type: ignore[attr-defined]
    generated = generator.render()  # type: ignore[attr-defined]
    marker = generator.MISSING  # type: ignore[attr-defined]
    assert generated.count(marker) == len(missing) + 1  # + the legend at the top
    for entry in missing:
        assert entry.split()[0].count(".") >= 1


def test_the_module_map_lists_every_module_with_its_role_and_imports() -> None:
    """``docs/module_map.py`` (the module map of issue 10's note): a row per module of both
    packages, each with a role taken from its docstring."""
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "docs" / "module_map.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {name: (lines, role, imports) for name, lines, role, imports in module.rows()}
    files = [*(ROOT / "rtecs").rglob("*.py"), *(ROOT / "server" / "rtecs_server").rglob("*.py")]
    assert len(rows) == len(files)
    assert all(role for _, role, _ in rows.values()), [n for n, r in rows.items() if not r[1]]
    assert "rtecs.cache" in rows["rtecs.datastore._delta"][2]
    assert rows["rtecs.cache"][2] == []   # the pure leaf imports nothing of the project

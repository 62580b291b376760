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

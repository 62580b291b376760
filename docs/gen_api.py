"""Write docs/api.md: every public name of rtecs and rtecs_server with its signature and
docstring. Run ``python docs/gen_api.py`` after changing the public API; a test checks the
page is current."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(undocumented)")


def _signature(obj: object) -> str:
    try:
        text = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # default values' reprs: no addresses


def _members(cls: type) -> list[str]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            out.append(f"- `{name}` (property): {_doc(member).splitlines()[0]}")
        elif inspect.isfunction(member) or isinstance(member, classmethod | staticmethod):
            func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
            first = (inspect.getdoc(func) or "").splitlines()
            out.append(f"- `{name}{_signature(func)}`" + (f": {first[0]}" if first else ""))
    return out


def section(module: ModuleType) -> list[str]:
    lines = [f"## `{module.__name__}`", "", _doc(module), ""]
    for name in sorted(module.__all__, key=str.lower):
        obj = getattr(module, name)
        if inspect.isclass(obj):
            lines += [f"### class `{name}{_signature(obj)}`", "", _doc(obj), ""]
            members = _members(obj)
            if members:
                lines += [*members, ""]
        elif callable(obj):
            lines += [f"### `{name}{_signature(obj)}`", "", _doc(obj), ""]
        else:
            lines += [f"### `{name}` = `{obj!r}`", ""]
    return lines


def render() -> str:
    import rtecs
    import rtecs_server

    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py`; do not edit.", ""]
    for module in (rtecs, rtecs_server):
        lines += section(module)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.path[:0] = [str(HERE.parent), str(HERE.parent / "server")]
    (HERE / "api.md").write_text(render())
    print(f"wrote {HERE / 'api.md'}")

"""Print the module map of the library and the server as a Markdown table: each module, its
lines, its role (the first line of its docstring) and the project modules it imports.

    .venv/bin/python docs/module_map.py [--sort lines]

Imports are read with :mod:`ast` (every ``import`` and ``from`` anywhere in the module,
under ``TYPE_CHECKING`` and inside functions too), as ``tests/test_layering.py`` reads them.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"rtecs": ROOT / "rtecs", "rtecs_server": ROOT / "server" / "rtecs_server"}


def module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.Module, name: str, is_package: bool) -> list[str]:
    """The project modules ``name`` imports (relative imports resolved)."""
    found: set[str] = set()
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[:len(base) - node.level + 1]
                                  + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
    return sorted(m for m in found if m.split(".")[0] in PACKAGES and m != name)


def rows() -> list[tuple[str, int, str, list[str]]]:
    out = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            text = path.read_text()
            tree = ast.parse(text)
            name = module_name(package, path)
            doc = (ast.get_docstring(tree) or "").strip().splitlines()
            role = doc[0] if doc else ""
            out.append((name, len(text.splitlines()), role,
                        imports_of(tree, name, path.name == "__init__.py")))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sort", choices=("name", "lines"), default="name")
    args = parser.parse_args(argv)
    table = rows()
    if args.sort == "lines":
        table.sort(key=lambda r: -r[1])
    print("| module | lines | role | imports |")
    print("|---|---|---|---|")
    for name, lines, role, imported in table:
        short = ", ".join(m.removeprefix("rtecs_server.").removeprefix("rtecs.")
                          for m in imported)
        print(f"| `{name}` | {lines} | {role.replace('|', '/')} | {short} |")


if __name__ == "__main__":
    main()

"""The built wheel holds every package: each directory with an ``__init__.py`` under
``rtecs/`` and ``server/rtecs_server/`` (a hand-kept package list once left
``rtecs.collections`` out, and a non-editable install could not import)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)  # a cold build on a loaded machine; usually ~2 s

_TOP_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "LICENSE")


def _setuptools_is_recent() -> bool:
    """True if the installed setuptools can build the wheel without build isolation (70.1+
    has bdist_wheel built in); else pip builds in an isolated environment."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    return tuple(parts) >= (70, 1)


def _expected_packages() -> set[str]:
    """Every directory with an ``__init__.py`` under rtecs/ and server/rtecs_server/."""
    found = set()
    for base, top in ((ROOT, "rtecs"), (ROOT / "server", "rtecs_server")):
        for init in (base / top).rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" not in rel.parts:
                found.add(".".join(rel.parts))
    return found


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources (the shared work tree gets no build/)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in _TOP_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "rtecs", src / "rtecs", ignore=ignore)
    shutil.copytree(ROOT / "server", src / "server", ignore=ignore)
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)]
    if _setuptools_is_recent():
        cmd.insert(4, "--no-build-isolation")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = out.glob("rtecs-*.whl")
    return wheel


def test_wheel_holds_every_package_and_the_typing_marker(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n[: -len("/__init__.py")].replace("/", ".")
                for n in names if n.endswith("/__init__.py")}
    expected = _expected_packages()
    assert {"rtecs", "rtecs.collections", "rtecs_server"} <= expected
    missing = expected - in_wheel
    assert not missing, f"packages missing from {wheel.name}: {sorted(missing)}"
    assert {"rtecs/py.typed", "rtecs_server/py.typed"} <= names
    assert not any(n.startswith(("tests/", "bench/", "examples/", "server/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "rtecs-server = rtecs_server.cli:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()

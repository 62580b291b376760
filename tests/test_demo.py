"""The pygame demo: headless with bots against its embedded server, and two demo processes
against one rtecs-server, driven by scripted input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

import rtecs
from examples.pygame_demo.players import Participant

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)


def test_headless_demo_draws_every_avatar(tmp_path: Path) -> None:
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ["SDL_AUDIODRIVER"] = "dummy"
    import pygame

    from examples.pygame_demo.game import Options, run

    shot = tmp_path / "demo.png"
    report = run(Options(name="tester", bots=2, headless=True, frames=90, fps=120,
                         screenshot=str(shot), data_dir=str(tmp_path / "data")))
    assert set(report["avatars"]) == {"tester", "bot1", "bot2"}
    image = pygame.image.load(str(shot))
    assert image.get_size() == (812, 368)
    assert set(report["drawn"]) == {"tester", "bot1", "bot2"}
    assert (tmp_path / "data" / "rooms.sqlite3").exists()  # the embedded server persists
    for name, (x, y, color) in report["drawn"].items():
        expected = ((color >> 16) & 255, (color >> 8) & 255, color & 255)
        assert tuple(image.get_at((x, y)))[:3] == expected, f"{name} is not drawn at {x},{y}"


def free_endpoint(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    for _ in range(50):
        line = server.stdout.readline()
        found = re.search(r"listening on (tcp://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError("rtecs-server did not report its endpoint")


def test_two_demo_processes_converge_on_positions_and_team_name(tmp_path: Path) -> None:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    server = subprocess.Popen(
        [sys.executable, "-m", "rtecs_server", "--bind", "tcp://127.0.0.1:0",
         "--plugin", "examples.pygame_demo.models:referee", "--data-dir", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        endpoint = free_endpoint(server)

        go = tmp_path / "go"

        def demo(name: str, script: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "examples.pygame_demo", "--headless", "--connect",
                 endpoint, "--name", name, "--fps", "100", "--frames", "100000",
                 "--report-when", str(go), "--report", str(tmp_path / f"{name}.json"),
                 "--script", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)

        ann = demo("ann", "wait 20; move 1 0 40; move 0 1 20; type Blue Team")
        bob = demo("bob", "wait 30; move -1 0 30")
        for proc in (ann, bob):  # each says so once its script is done and answered
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "settled":
                    break
            else:
                raise AssertionError(f"a demo ended before it settled: {proc.wait()}")
        go.touch()   # from now on each rewrites its report whenever its view changes

        def views() -> tuple[dict[str, Any], dict[str, Any]] | None:
            try:
                return (json.loads((tmp_path / "ann.json").read_text()),
                        json.loads((tmp_path / "bob.json").read_text()))
            except FileNotFoundError:
                return None

        def agreed(seen: tuple[dict[str, Any], dict[str, Any]] | None) -> bool:
            if seen is None:
                return False
            a, b = seen
            return (a["team_name"] == b["team_name"] == "Blue Team"
                    and set(a["avatars"]) == set(b["avatars"]) == {"ann", "bob"}
                    and all(a["avatars"][n] == pytest.approx(b["avatars"][n], abs=1e-6)
                            for n in ("ann", "bob")))

        # Converged is the views agreeing; a machine this busy may take a while to get
        # there, and a bug never does (then the deadline says what each saw).
        deadline = time.monotonic() + 30
        while not agreed(seen := views()) and time.monotonic() < deadline:
            time.sleep(0.05)   # polling files another process writes: nothing to await
        go.unlink()
        outs = {}
        for name, proc in (("ann", ann), ("bob", bob)):
            outs[name], _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, outs[name]
        final = views()
        if not (agreed(seen) and agreed(final)):   # say what each process saw and logged
            server.terminate()
            log, _ = server.communicate(timeout=10)
            raise AssertionError(f"the demos did not converge within 30 s: {seen}; at exit: "
                                 f"{final}\nann's output:\n{outs['ann']}\nbob's output:\n"
                                 f"{outs['bob']}\nserver:\n{log}")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_readme_quickstart_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", quickstart, re.S)
    assert len(commands) == 2, "the quickstart has exactly two commands"
    demo, tests = commands
    assert "examples.pygame_demo" in demo and "pip install" in demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.strip() in ci, ".ci/run must run the README's test command verbatim"


def test_readme_example_runs_against_a_real_server() -> None:
    from rtecs_server import RoomServer

    readme = (ROOT / "README.md").read_text()
    [example] = re.findall(r"```python\n(.+?)\n```", readme, re.S)
    with RoomServer(bind="tcp://127.0.0.1:0") as server:
        code = example.replace("tcp://127.0.0.1:7777", server.endpoint)
        code = code.replace("while True:", "for _frame in range(5):")
        code = code.replace('world="client"', 'world="readme-example"').replace(
            'switch_world("client")', 'switch_world("readme-example")')
        module = types.ModuleType("readme_example")  # annotations resolve in a real module
        sys.modules["readme_example"] = module
        namespace = module.__dict__
        exec(compile(code, "README.md", "exec"), namespace)
        rt = namespace["rt"]
        try:
            assert rt.connected and rt.client_id >= 1  # type: ignore[attr-defined]
            assert namespace["game"].team_name == "Blue Team"  # type: ignore[attr-defined]
        finally:
            rt.close()  # type: ignore[attr-defined]
            import esper

            esper.switch_world("default")


class _Welcomed(Participant):
    """The demo's participant, made to wait for events a frame count cannot promise on a
    loaded machine: the welcome before the script's first step (a write made earlier would
    be dropped, or overwritten by the snapshot), and at the end the server's answers to its
    writes before the embedded server stops and saves the room."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rt.wait_connected(timeout=60)

    def close(self) -> None:
        self.rt.flush()
        settle_answers(self.rt)
        super().close()


def settle_answers(rt: rtecs.Realtime, timeout: float = 60.0) -> None:
    """Tick until every update ``rt`` sent is answered (an event; bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while rt.updates_in_flight or rt.has_unsent_changes:
        assert time.monotonic() < deadline, "the server never answered the demo's writes"
        rt.flush()
        rt.receive()
        rt.connection.wait(0.01)


def test_the_demo_room_persists_between_runs(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    from examples.pygame_demo import game
    from examples.pygame_demo.game import Options, run

    monkeypatch.setattr(game, "Participant", _Welcomed)
    data = str(tmp_path / "data")
    first = run(Options(name="ann", headless=True, frames=40, fps=200, data_dir=data,
                        script="wait 5; type Blue Team; counter 7"))
    assert (first["team_name"], first["counter"]) == ("Blue Team", 7)
    second = run(Options(name="bob", headless=True, frames=20, fps=200, data_dir=data))
    assert (second["team_name"], second["counter"]) == ("Blue Team", 7)

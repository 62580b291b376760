"""The ``rtecs-server`` command: help, startup line, usage errors, signals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from zmq_helpers import SERVER_SCRIPT, RawClient, ServerProcess, raw_clients, run_server

from rtecs_server.cli import load_plugin, main
from rtecs_server.cli_flags import build_parser

__all__ = ["raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

FLAGS = ["--bind", "--heartbeat-timeout", "--session-grace", "--empty-room-timeout",
         "--max-clients-per-room",
         "--plugin", "--tick-ms", "--rate-limit", "--log-level", "--help",
         "--storage", "--data-dir", "--checkpoint-interval", "--advertise", "--lease-ttl",
         "--history-bytes", "--auth-secret-file", "--curve-secret-key-file", "--supervise",
         "--update-budget", "--max-update-bytes", "--max-changes-per-update",
         "--max-datastore-bytes", "--max-depth", "--max-sessions-per-address",
         "--address-budgets", "--schema-budget", "--max-rooms",
         "--max-empty-rooms-per-address"]


def test_help_documents_every_flag_with_its_default() -> None:
    out = subprocess.run([str(SERVER_SCRIPT), "--help"], capture_output=True, text=True,
                         timeout=20, check=True).stdout
    lines = out.splitlines()
    options = [a.option_strings[-1] for a in build_parser()._actions]
    assert sorted(options) == sorted(FLAGS)           # every flag the parser has is listed
    for flag in FLAGS:
        i = next(i for i, line in enumerate(lines) if re.match(rf"\s+(-\w, )?{flag}\b", line))
        text = " ".join(lines[i:i + 6])
        assert len(re.sub(rf"^.*?{flag}\S*( [A-Z:\[\]{{}},a-z_]+)?", "", text).strip()) > 20, (
            f"{flag} has no description")
    for default in ["tcp://127.0.0.1:7777", "5.0", "30.0", "200:400", "info", "no limit",
                    "./rtecs-data", "1.0", "10.0", "1048576", "524288:40000", "4096",
                    "10485760", "128000", "(default: 64)", "(default: 10000)",
                    "(default: 8)", "1 MiB)"]:
        assert default in out
    assert "examples:" in out and "rtecs-server --bind tcp://0.0.0.0:7777" in out


def test_python_dash_m_is_the_same_command() -> None:
    out = subprocess.run([sys.executable, "-m", "rtecs_server", "--help"], capture_output=True,
                         text=True, timeout=20, check=True).stdout
    assert "--heartbeat-timeout" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--plugin", "no_such_module_xyz:thing"], "cannot import module 'no_such_module_xyz'"),
    (["--plugin", "server_plugins:missing"], "has no attribute 'missing'"),
    (["--plugin", "server_plugins:NOT_CALLABLE"], "not callable"),
    (["--plugin", "server_plugins"], "expected MODULE:OBJECT"),
    (["--heartbeat-timeout", "0"], "must be > 0"),
    (["--rate-limit", "fast"], "RATE or RATE:BURST"),
    (["--bind", "nonsense://x"], "cannot bind"),
])
def test_usage_errors_exit_2_with_a_clear_message(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_load_plugin_instantiates_classes() -> None:
    plugin = load_plugin("server_plugins:Doubler")
    assert callable(plugin) and not isinstance(plugin, type)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_promptly_and_cleanly(
        sig: signal.Signals, raw_clients: Callable[..., RawClient]) -> None:
    server = ServerProcess("--heartbeat-timeout", "60")
    try:
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", server.endpoint)
        assert not server.endpoint.endswith(":0")
        client = raw_clients(server.endpoint)
        client.join()
        started = time.monotonic()
        server.signal(sig)
        assert server.wait(5) == 0
        assert time.monotonic() - started < 2.0
        err = client.expect_error("shutdown", timeout=2)
        assert err.fatal
        assert "stopped" in server.stderr
        assert "Traceback" not in server.stderr
    finally:
        server.kill()


@pytest.mark.timeout(30)
def test_the_limit_flags_reach_the_welcome_and_the_budget_the_room(
        raw_clients: Callable[..., RawClient]) -> None:
    with run_server("--max-changes-per-update", "50", "--max-depth", "3",
                    "--max-update-bytes", "4000", "--max-datastore-bytes", "900000",
                    "--update-budget", "1000000:60", "--rate-limit", "500") as server:
        a = raw_clients(server.endpoint)
        welcome = a.join("limits")
        assert welcome.limits == {"update_bytes": 4000, "datastore_bytes": 900000,
                                  "changes_per_update": 50, "depth": 3}
        a.update([0, *([2, 1] * 40)])             # 40 of the 120 saved up
        a.update([0, *([2, 2] * 40)])             # 80
        a.update([0, *([2, 3] * 41)])             # 121: over the budget, refused
        err = a.expect_error("rate_limit")
        assert "60 changes/s" in err.message and not err.fatal
        a.update([0, *([2, 4] * 51)])             # over the per-update limit
        a.expect_error("over_limit")

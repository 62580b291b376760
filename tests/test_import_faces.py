"""The package faces import lazily (DESIGN §1, issue 10 item 5): the pure layers can be used
without the heavy dependencies of the layers above them. Each check runs in a fresh
interpreter, so what an earlier import loaded cannot hide a regression."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

FACES = [
    ("rtecs.cache", ("zmq", "esper", "reactivex")),
    ("rtecs.protocol", ("zmq", "esper", "reactivex")),
    ("rtecs.clock", ("zmq", "esper", "reactivex", "msgpack")),
    ("rtecs.datastore", ("zmq", "esper")),
    ("rtecs", ("zmq", "esper", "reactivex")),
]


@pytest.mark.parametrize(("module", "absent"), FACES)
def test_importing_a_face_loads_nothing_from_above_it(module: str,
                                                      absent: tuple[str, ...]) -> None:
    probe = (f"import sys, {module}\n"
             f"print(' '.join(m for m in {absent!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_the_lazy_face_still_offers_every_public_name() -> None:
    probe = ("import rtecs\n"
             "missing = [n for n in rtecs.__all__ if getattr(rtecs, n, None) is None]\n"
             "print(' '.join(missing), rtecs.ecs.SyncSystem.__name__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "SyncSystem"


def test_paused_gc_restores_what_it_found() -> None:
    import gc

    from rtecs.gcpause import paused_gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("the block failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled(), "it turned on a collector the application had turned off"
    finally:
        gc.enable()

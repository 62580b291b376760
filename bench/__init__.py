"""Benchmarks (not timed tests): each prints its ratio to a floor measured in the same run.

Every benchmark is ``python -m bench.NAME`` with ``--help``, and ``--quick`` for a smoke run of
a few seconds (``tests/test_bench_smoke.py``); each prints ``ratio to floor …`` lines
(:func:`bench._harness.ratio_line`).

- :mod:`bench._harness` — server / relay processes pinned to a core before exec, CPU time
  from ``/proc``, per-core busy time, percentiles, tables, the ratio line;
- :mod:`bench._load` — the load generator: N raw protocol clients on DEALER sockets;
- :mod:`bench._relay_floor` — the bare pyzmq + msgpack relay, the network benchmarks' floor;
- :mod:`bench.room_fanout` — N clients in one room on ``rtecs-server`` vs the relay;
- :mod:`bench.server_tick` — the server's ``--tick-ms``: latency against CPU, vs the relay;
- :mod:`bench.wire_layout` — one real batch re-encoded in smaller layouts, vs the minimal one;
- :mod:`bench.client_tick` — a client frame (writes, collect, encode) vs dict writes + packb;
- :mod:`bench.sync_system` — a SyncSystem frame over 10,000 entities vs dict writes + packb;
- :mod:`bench.storage` — saving and loading a big room vs writing / reading one blob.
"""

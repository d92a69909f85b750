"""Check that the load generator is not the bottleneck: compare it with gearbench.

    python bench/validate.py --gearbench PATH/TO/gearbench [--rounds 3] [--rows ...]

gearbench is the shared C load generator on libgearman (the common ruler the
project's performance goals are stated in). Both harnesses drive the same
server (gearmand by default) with the same row shapes, alternating, each
against a fresh server; the table shows the median of each figure and the
ratio loadgen/gearbench. Ratios near 1.0 (within the noise of the machine)
on the throughput rows mean that this harness saturates the server at least as
well as the C one; the "harness CPU" lines show what each harness costs the
machine, which on a 2-core box is CPU the server does not get.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from typing import Any

import loadgen
import procstat
import run
import servers
from loadgen import Load

HARNESS_CPU = run.Metric("harness_cpu_s", "harness CPU s", run.LO)


def gearbench_argv(binary: str, load: Load, port: int, pid: int, timeout: float) -> list[str]:
    mode = {"bg": "bg", "fg": "fg", "big": "big", "qmem": "queue-mem"}[load.mode]
    argv = [binary, mode, "-p", str(port), "-P", str(pid), "-t", str(int(timeout))]
    if load.mode == "big":
        return [*argv, "-s", str(load.size), "-r", str(load.reps)]
    argv += ["-c", str(load.clients), "-n", str(load.jobs), "-s", str(load.size)]
    if load.mode == "bg":
        argv += ["-w", str(load.workers), "-b", str(load.batch)] + (["-L"] if load.late else [])
    elif load.mode == "fg":
        argv += ["-w", str(load.workers), "-d", str(load.depth)]
    else:
        argv += ["-b", str(load.batch)]
    return argv


def run_gearbench(binary: str, load: Load, srv: servers.Server, timeout: float) -> dict[str, Any]:
    argv = gearbench_argv(binary, load, srv.port, srv.pid, timeout)
    busy0 = procstat.machine_busy()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30).stdout
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "gearbench timed out"}
    busy = procstat.machine_busy() - busy0
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": "no output from gearbench"}
    res: dict[str, Any] = json.loads(lines[-1])
    if load.mode == "big" and res.get("hwm_kb"):
        res["hwm_per_payload"] = res["hwm_kb"] * 1024 / load.size
    res["foreign_cpu_s"] = busy - res.get("server_cpu_s", 0) - res.get("harness_cpu_s", 0)
    res["wall_s"] = res.get("submit_s", res.get("elapsed_s", 0)) + max(0, res.get("drain_s", 0))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gearbench", required=True, help="path of the built gearbench binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", default="", help="comma list, default all: " + ",".join(run.ROWS))
    ap.add_argument("--server", default="", help="server command, default gearmand's")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--json", default="")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    opts = ap.parse_args(argv)
    spec = servers.ServerSpec("server", opts.server) if opts.server else servers.default_specs()[0]
    rows = [run.ROWS[n] for n in opts.rows.split(",")] if opts.rows else list(run.MATRIX)
    log_path = "/dev/null"
    results = []
    harnesses = ["gearbench", "loadgen"]
    for rnd in range(opts.rounds):
        run.log(f"round {rnd + 1}/{opts.rounds}")
        for row in rows:
            for harness in harnesses:
                run.settle(opts.settle)
                load = copy.deepcopy(row.load)
                load.timeout = opts.timeout
                with servers.running(spec, log_path, load.size) as srv:
                    if harness == "gearbench":
                        res = run_gearbench(opts.gearbench, load, srv, opts.timeout)
                    else:
                        res = loadgen.run(load, srv.port, srv.pid)
                res.update(row=row.name, server=harness, round=rnd, noisy=run.noisy(res))
                run.log(f"  {row.name:8} {harness:9} {'ok' if res.get('ok') else res.get('error')}")
                results.append(res)
    extra = [HARNESS_CPU]
    rows = [run.Row(r.name, r.load, (*r.metrics, *extra), r.what) for r in rows]
    table = run.summarize(results, rows, harnesses, goals=set())  # goals are for servers
    print(f"\nserver: {spec.command}; {opts.rounds} rounds alternating gearbench, loadgen")
    run.print_table(table, harnesses, markdown=opts.markdown)
    print(run.noise_report([r for r in results if r["server"] == "loadgen"]))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"results": results, "summary": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

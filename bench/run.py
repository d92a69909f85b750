"""geartrain vs gearmand: the same load against both, alternating, in one run.

    python bench/run.py                 # full matrix, 3 rounds (about 5 minutes)
    python bench/run.py --quick         # smoke run: small counts, 1 round (<1 minute)
    python bench/run.py --rows fg1,big --rounds 5 --json out.json
    python bench/run.py --rows bg,bg-late,qmem --queues sqlite,postgres,gearmand-sqlite

For every round, for every row, every server is started afresh on a free port
of 127.0.0.1 and driven by the load generator (loadgen.py), reference first,
so the runs alternate A B A B. The table shows the median over rounds of each
figure and of each per-round ratio candidate/reference, next to the goal.
See README.md in this directory for what each row measures. Persistent-queue
variants (--queues) run only on the rows of background jobs.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import loadgen
import procstat
import servers
import spy
from loadgen import Load

HI, LO = "+", "-"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # HI or LO
    goal: str = ""  # e.g. ">=1.0" on the ratio, or "abs<=3" on the candidate's own figure
    optional: bool = False  # a figure only some servers have: no table line when none has it


@dataclass(frozen=True)
class Row:
    name: str
    load: Load
    metrics: tuple[Metric, ...]
    what: str

    @property
    def background(self) -> bool:
        """Background jobs only: the rows a persistent queue has something to store in."""
        return self.load.mode in ("bg", "qmem")


CPU = Metric("server_cpu_us_per_job", "server CPU us/job", LO)
STORE_CPU = Metric("store_cpu_us_per_job", "database CPU us/job", LO, optional=True)
MATRIX = (
    Row(
        "bg",
        Load("bg", clients=4, workers=2, jobs=100_000, batch=1000),
        (
            Metric("submit_jobs_s", "submit jobs/s", HI, ">=1.0"),
            Metric("drain_jobs_s", "drain jobs/s, workers running", HI, ">=1.0"),
            CPU,
            STORE_CPU,
        ),
        "4 clients submit 100k background jobs in batches of 1000; 2 no-op workers drain"
        " concurrently",
    ),
    Row(
        "bg-late",
        Load("bg", clients=4, workers=2, jobs=100_000, batch=1000, late=True),
        (
            Metric("submit_jobs_s", "submit jobs/s, no workers", HI, ">=1.0"),
            Metric("drain_jobs_s", "drain jobs/s, queue pre-filled", HI, ">=1.0"),
            CPU,
            STORE_CPU,
        ),
        "as bg, but the 2 workers start only after the 100k jobs are queued",
    ),
    Row(
        "fg1",
        Load("fg", clients=8, workers=4, jobs=20_000, depth=1),
        (
            Metric("jobs_s", "jobs/s", HI, ">=1.0"),
            Metric("lat_p50_us", "p50 latency us", LO),
            Metric("lat_p99_us", "p99 latency us", LO, "<=1.5"),
            CPU,
        ),
        "8 clients, one foreground job in flight each (SUBMIT_JOB, wait WORK_COMPLETE);"
        " 4 echo workers",
    ),
    Row(
        "fgpipe",
        Load("fg", clients=8, workers=4, jobs=50_000, depth=16),
        (
            Metric("jobs_s", "jobs/s", HI, ">=1.0"),
            Metric("lat_p50_us", "p50 us per batch of 16", LO),
            CPU,
        ),
        "as fg1 with 16 foreground jobs in flight per client",
    ),
    Row(
        "fg64k",
        Load("fg", clients=4, workers=2, jobs=5_000, depth=1, size=64 * 1024),
        (
            Metric("mib_s", "payload MiB/s", HI, ">=1.0"),
            Metric("lat_p99_us", "p99 latency us", LO),
            CPU,
        ),
        "4 clients, 2 echo workers, 64 KiB payloads, depth 1",
    ),
    Row(
        "big",
        Load("big", size=256 << 20, reps=3),
        (
            Metric("big_mib_s", "MiB/s, 256 MiB round trip", HI, ">=0.8"),
            Metric("hwm_per_payload", "server peak RSS / payload", LO, "abs<=3"),
        ),
        "1 client, 1 echo worker, one 256 MiB job at a time, 3 round trips (median)",
    ),
    Row(
        "big1g",
        Load("big", size=1 << 30, reps=2),
        (
            Metric("big_mib_s", "MiB/s, 1 GiB round trip", HI, ">=0.8"),
            Metric("hwm_mib", "server peak RSS MiB", LO, "abs<=256"),
        ),
        "1 client, 1 echo worker, one 1 GiB job at a time, 2 round trips (median)",
    ),
    Row(
        "qmem",
        Load("qmem", clients=4, jobs=1_000_000, batch=1000),
        (
            Metric("submit_jobs_s", "submit jobs/s, nobody serves", HI),
            Metric("bytes_per_job", "server RSS bytes per queued job", LO, "<=1.0"),
            STORE_CPU,
        ),
        "4 clients queue 1M background jobs (100-byte payload) for a function without workers",
    ),
)
ROWS = {r.name: r for r in MATRIX}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quick(load: Load) -> Load:
    """The smoke-run version of a row: a tenth of the jobs, a 32 MiB big payload."""
    if load.mode == "big":
        return replace(load, size=32 << 20, reps=1)
    return replace(load, jobs=max(load.clients * load.depth, load.jobs // 10))


def load_for(row: Row, spec: servers.ServerSpec, opts: argparse.Namespace) -> Load:
    """The row's load as this server runs it (a slow server may have a smaller count)."""
    load = copy.deepcopy(quick(row.load) if opts.quick else row.load)
    if spec.max_jobs and load.mode != "big":
        load.jobs = max(load.clients * load.depth, min(load.jobs, spec.max_jobs))
    load.timeout = opts.timeout
    return load


def charge_store(res: dict[str, Any], store: int | None, cpu0: float, jobs: int) -> None:
    """The database's CPU during a run is work done for the server, not other processes'."""
    if not store or not res.get("ok"):
        return
    cpu = max(0.0, procstat.sample(store).cpu_s - cpu0)
    res["store_cpu_s"] = cpu
    res["store_cpu_us_per_job"] = cpu / jobs * 1e6
    if "foreign_cpu_s" in res:  # it was measured over the timed region, a part of ours
        res["foreign_cpu_s"] -= cpu


def settle(max_wait: float) -> float:
    """Wait (bounded) for other processes to leave the CPUs; return cores they use."""
    deadline = time.monotonic() + max_wait
    busy = procstat.machine_busy_cores(0.3)
    while busy > 0.2 and time.monotonic() < deadline:
        time.sleep(0.5)
        busy = procstat.machine_busy_cores(0.3)
    return busy


def noisy(res: dict[str, Any]) -> bool:
    wall = res.get("wall_s", 0.0)
    return bool(res.get("ok")) and res.get("foreign_cpu_s", 0.0) > 0.15 * wall + 0.2


def measure(
    row: Row, spec: servers.ServerSpec, opts: argparse.Namespace, rnd: int
) -> dict[str, Any]:
    """One row against one fresh server; a disturbed run is repeated, the quietest kept."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + opts.retry_noisy):
        busy_before = settle(opts.settle)
        load = load_for(row, spec, opts)
        try:
            with servers.running(spec, opts.server_log, load.size) as srv:
                recorder = None
                if opts.profile and "geartrain" in spec.command:
                    path = os.path.join(opts.profile, f"{row.name}-{spec.name}-r{rnd}.txt")
                    recorder = spy.start(srv.pid, path)
                    time.sleep(0.5)  # py-spy attaches
                store = servers.store_pid(spec) if spec.queue_url else None
                store0 = procstat.sample(store).cpu_s
                res = loadgen.run(load, srv.port, srv.pid)
                charge_store(res, store, store0, load.jobs)
                if recorder is not None:
                    spy.stop(recorder)
                    res["profile"] = path
                    log("\n".join(spy.summarize(path, 8)))
                if srv.proc.poll() is not None:
                    res.update(ok=False, error=f"server exited with {srv.proc.returncode}")
        except RuntimeError as exc:
            res = {"ok": False, "error": str(exc)}
        res.update(row=row.name, server=spec.name, attempt=attempt + 1, busy_before=busy_before)
        if best is None or (
            res.get("ok")
            and (not best.get("ok") or res.get("foreign_cpu_s", 0) < best.get("foreign_cpu_s", 0))
        ):
            best = res
        if not noisy(res):
            break
    assert best is not None
    best["noisy"] = noisy(best)
    status = "ok" if best.get("ok") else "FAILED: " + str(best.get("error", ""))[:300]
    if best["noisy"]:
        status += f" (other processes used {best['foreign_cpu_s']:.1f} CPU-s during it)"
    log(f"  {row.name:8} {spec.name:17} {best.get('wall_s', 0):5.1f}s {status}")
    return best


# ------------------------------------------------------------------------ report


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_ratio(r: float) -> str:
    # two significant digits below 0.1: gearmand-sqlite against gearmand is ~0.003
    return f"{r:.2f}" if abs(r) >= 0.1 else f"{r:.2g}"


def values(results: list[dict[str, Any]], row: str, server: str, key: str) -> list[float]:
    return [
        r[key]
        for r in results
        if r["row"] == row and r["server"] == server and r.get("ok") and r.get(key) is not None
    ]


def per_round_ratios(
    results: list[dict[str, Any]], row: str, ref: str, cand: str, key: str
) -> list[float]:
    ratios = []
    for rnd in sorted({r["round"] for r in results}):
        a = [r.get(key) for r in results if (r["row"], r["server"], r["round"]) == (row, ref, rnd)]
        b = [r.get(key) for r in results if (r["row"], r["server"], r["round"]) == (row, cand, rnd)]
        ok_a = [r for r in results if (r["row"], r["server"], r["round"]) == (row, ref, rnd)]
        ok_b = [r for r in results if (r["row"], r["server"], r["round"]) == (row, cand, rnd)]
        if a and b and a[0] and b[0] is not None and ok_a[0].get("ok") and ok_b[0].get("ok"):
            ratios.append(b[0] / a[0])
    return ratios


def verdict(goal: str, ratio: float | None, own: float | None) -> str:
    if not goal:
        return ""
    if goal.startswith("abs"):
        value, goal = own, goal[3:]
    else:
        value = ratio
    if value is None:
        return f"{goal} ?"
    limit = float(goal[2:])
    met = value >= limit if goal.startswith(">=") else value <= limit
    return f"{goal} {'met' if met else 'MISSED'}"


def summarize(
    results: list[dict[str, Any]], rows: list[Row], names: list[str], goals: set[str] | None = None
) -> list[dict[str, Any]]:
    """Medians and ratios per metric; ``goals``: the servers the goals apply to (all)."""
    ref = names[0]
    table = []
    for row in rows:
        for m in row.metrics:
            if m.optional and not any(values(results, row.name, n, m.key) for n in names):
                continue
            line: dict[str, Any] = {
                "row": row.name,
                "metric": m.label,
                "key": m.key,
                "better": m.better,
            }
            for name in names:
                vals = values(results, row.name, name, m.key)
                line[name] = statistics.median(vals) if vals else None
            for cand in names[1:]:
                ratios = per_round_ratios(results, row.name, ref, cand, m.key)
                ratio = statistics.median(ratios) if ratios else None
                line[f"{cand}/{ref}"] = ratio
                line[f"{cand}/{ref} rounds"] = ratios
                wanted = goals is None or cand in goals
                line[f"{cand} goal"] = verdict(m.goal, ratio, line[cand]) if wanted else ""
            table.append(line)
    return table


def print_table(table: list[dict[str, Any]], names: list[str], markdown: bool) -> None:
    ref, cands = names[0], names[1:]
    with_goal = {c for c in cands if any(t[f"{c} goal"] for t in table)}
    head = ["row", "metric", *names]
    for c in cands:
        head += [f"{c}/{ref}", "per round"] + (["goal"] if c in with_goal else [])
    lines = []
    for t in table:
        cells = [t["row"], f"{t['metric']} ({t['better']})"] + [fmt(t[n]) for n in names]
        for c in cands:
            r = t[f"{c}/{ref}"]
            rounds = " ".join(fmt_ratio(x) for x in t[f"{c}/{ref} rounds"])
            cells += ["-" if r is None else fmt_ratio(r), rounds]
            cells += [t[f"{c} goal"]] if c in with_goal else []
        lines.append(cells)
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for cells in lines:
            print("| " + " | ".join(cells) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    for cells in [head, *lines]:
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def noise_report(results: list[dict[str, Any]]) -> str:
    ok = [r for r in results if r.get("ok") and "foreign_cpu_s" in r]
    if not ok:
        return ""
    foreign = sum(max(0.0, r["foreign_cpu_s"]) for r in ok)
    wall = sum(r["wall_s"] for r in ok)
    n_noisy = sum(1 for r in results if r.get("noisy"))
    harness = max(r.get("harness_cores", 0.0) for r in ok)
    return (
        f"noise: other processes used {foreign / wall:.2f} cores on average during the runs; "
        f"{n_noisy} of {len(results)} runs disturbed even after retries. "
        f"load generator: at most {harness:.2f} cores in any run."
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument(
        "--quick", action="store_true", help="small job counts and 1 round: a smoke run"
    )
    ap.add_argument("--rows", default="", help="comma list, default all: " + ",".join(ROWS))
    ap.add_argument(
        "--queues",
        default="",
        metavar="LIST",
        help="add persistent-queue variants, on the background rows only (comma list of "
        + ",".join(servers.QUEUES)
        + ")",
    )
    ap.add_argument("--sqlite", action="store_true", help="shorthand for --queues sqlite")
    ap.add_argument(
        "--queue-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="database of a --queues variant (postgres, mysql, redis); default: "
        + ", ".join(servers.QUEUE_URLS.values()),
    )
    ap.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=CMD",
        help="add or replace a server; CMD runs it in the foreground, with {port} (and "
        "optionally {tmp}) substituted. The first server is the reference.",
    )
    ap.add_argument("--only", default="", help="comma list of server names to run")
    ap.add_argument(
        "--order",
        choices=["ab", "abba"],
        default="ab",
        help="ab: reference first in every round (A B A B); abba: reversed in odd rounds, "
        "which cancels a first-or-second position effect",
    )
    ap.add_argument("--json", default="", help="write raw results and the summary here")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per row run")
    ap.add_argument("--settle", type=float, default=5.0, help="max s to wait for an idle machine")
    ap.add_argument("--retry-noisy", type=int, default=1, help="re-runs of a disturbed row run")
    ap.add_argument("--server-log", default="", help="server output (default: a temp file)")
    ap.add_argument(
        "--profile",
        default="",
        metavar="DIR",
        help="record geartrain servers with py-spy into DIR (adds its overhead to their figures)",
    )
    opts = ap.parse_args(argv)
    if opts.quick and "--rounds" not in " ".join(argv or sys.argv):
        opts.rounds = 1
    return opts


def queue_args(opts: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The --queues names (with --sqlite) and the --queue-url overrides."""
    queues = [q for q in opts.queues.split(",") if q]
    if opts.sqlite and "sqlite" not in queues:
        queues.insert(0, "sqlite")
    urls = {}
    for item in opts.queue_url:
        name, _, url = item.partition("=")
        if name not in servers.QUEUE_URLS or not url:
            sys.exit(f"--queue-url wants NAME=URL with NAME one of {list(servers.QUEUE_URLS)}")
        urls[name] = url
    return queues, urls


def pick_servers(opts: argparse.Namespace) -> list[servers.ServerSpec]:
    try:
        specs = servers.default_specs(*queue_args(opts))
    except ValueError as exc:
        sys.exit(str(exc))
    for item in opts.server:
        name, _, cmd = item.partition("=")
        if not cmd:
            sys.exit(f"--server wants NAME=CMD, got {item!r}")
        old = [s for s in specs if s.name == name]
        if old:
            old[0].command = cmd
            old[0].big_args = ""
        else:
            specs.append(servers.ServerSpec(name, cmd))
    if opts.only:
        keep = opts.only.split(",")
        specs = [s for s in specs if s.name in keep]
    if not specs:
        sys.exit("no server to measure")
    return specs


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    names_wanted = opts.rows.split(",") if opts.rows else list(ROWS)
    unknown = [n for n in names_wanted if n not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; have {list(ROWS)}")
    rows = [ROWS[n] for n in names_wanted]
    specs = pick_servers(opts)
    if opts.profile:
        if not spy.available():
            sys.exit("--profile needs py-spy: pip install py-spy")
        os.makedirs(opts.profile, exist_ok=True)
    if not opts.server_log:
        fd, opts.server_log = tempfile.mkstemp(prefix="geartrain-bench-", suffix=".log")
        os.close(fd)
    meta = describe(specs, opts)
    for s in specs:
        log(f"{s.name}: {meta['servers'][s.name]['version']}{limits(s)}: {s.command}")
    log(f"server output goes to {opts.server_log}")
    results = []
    t0 = time.monotonic()
    for rnd in range(opts.rounds):
        log(f"round {rnd + 1}/{opts.rounds}")
        for row in rows:
            order = specs[::-1] if opts.order == "abba" and rnd % 2 else specs
            for spec in order:
                if spec.background_only and not row.background:
                    continue  # nothing to persist: the table shows "-"
                res = measure(row, spec, opts, rnd)
                res["round"] = rnd
                results.append(res)
    return report(results, rows, specs, meta, opts, time.monotonic() - t0)


def describe(specs: list[servers.ServerSpec], opts: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "python": platform.python_version(),
        "servers": {
            s.name: {
                "command": s.command,
                "version": servers.version_of(s),
                "background_only": s.background_only,
                "max_jobs": s.max_jobs,
            }
            for s in specs
        },
        "rounds": opts.rounds,
        "quick": opts.quick,
    }


def limits(spec: servers.ServerSpec) -> str:
    notes = ["background rows only"] if spec.background_only else []
    notes += [f"at most {spec.max_jobs:,} jobs per row"] if spec.max_jobs else []
    return f" ({', '.join(notes)})" if notes else ""


def report(
    results: list[dict[str, Any]],
    rows: list[Row],
    specs: list[servers.ServerSpec],
    meta: dict[str, Any],
    opts: argparse.Namespace,
    elapsed: float,
) -> int:
    names = [s.name for s in specs]
    table = summarize(results, rows, names, {s.name for s in specs if s.goals})
    print(
        f"\n{meta['date']}, {meta['host']}, Python {meta['python']}; {opts.rounds} round(s) "
        f"alternating {' '.join(names)}, {elapsed:.0f} s"
        + (" (QUICK: reduced counts, not comparable to full runs)" if opts.quick else "")
    )
    for s in specs:
        print(f"  {s.name}: {meta['servers'][s.name]['version']}{limits(s)}")
    print_table(table, names, opts.markdown)
    note = noise_report(results)
    if note:
        print(note)
    failed = [r for r in results if not r.get("ok")]
    for r in failed:
        print(f"FAILED {r['row']} on {r['server']}: {str(r.get('error', ''))[:300]}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"meta": meta, "results": results, "summary": table}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

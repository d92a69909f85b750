"""A multi-process Gearman load generator in pure Python.

Theory of operation
-------------------
Every client and every worker connection is its own forked process with one
blocking socket, as in the shared gearbench ruler (C on libgearman), so the
server sees the same shape of load: the same number of connections, the same
packets, the same concurrency. What keeps Python from being the bottleneck:

* every request is encoded before the timed region (whole batches of
  SUBMIT_JOB_BG as one ``bytes``), so the timed loop is ``sendall`` + ``recv``;
* background submitters do not frame their replies at all, they count
  JOB_CREATED headers with ``bytes.count`` (:class:`wire.ReplyCounter`);
* workers answer a JOB_ASSIGN with WORK_COMPLETE and the next GRAB in a single
  ``send`` (libgearman writes them separately; the server reads the same packets);
* payloads of 16 KiB and more are received with ``recv_into`` into a reused
  buffer and echoed from a ``memoryview`` (no copies in Python).

Start-up (connecting, CAN_DO, one GET_STATUS round trip per client) happens
before a start barrier, a pipe that the parent closes; the clock starts then.
Workers publish a done-counter and the time of their last job in shared
memory; the parent polls it to time a drain. Every run has a deadline: children
carry an alarm that kills them, and the parent kills whatever is left.

The module is also a command (``python bench/loadgen.py fg -p PORT ...``) that
prints one JSON line, for running a single row by hand.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import mmap
import os
import pickle
import select
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import procstat
import wire
from wire import Reader, ServerError, request


@dataclass
class Load:
    """One measurement. ``mode`` is bg, fg, big or qmem (queued-job memory)."""

    mode: str
    clients: int = 4
    workers: int = 2
    jobs: int = 100_000
    size: int = 100
    depth: int = 1
    batch: int = 1000
    reps: int = 3
    late: bool = False
    grab: str = "all"
    verify: bool = False
    timeout: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------- children


class Child:
    """A forked process running ``func``; its pickled return value comes back on a pipe."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], keep: list[int]) -> None:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(rfd)
                for fd in keep:  # the parent's ends of shared pipes must not stay open here
                    with contextlib.suppress(OSError):
                        os.close(fd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                try:
                    result: Any = func(*args)
                except Exception as exc:  # reported to the parent, which fails the run
                    result = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
                    code = 1
                data = pickle.dumps(result)
                view = memoryview(data)
                while view:
                    view = view[os.write(wfd, view) :]
            finally:
                os._exit(code)
        os.close(wfd)
        self.pid = pid
        self.fd = rfd
        self.cpu0 = 0.0

    def result(self, deadline: float) -> Any:
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("a load process did not finish in time")
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        self.close()
        if not chunks:
            raise RuntimeError("a load process died without a result")
        return pickle.loads(b"".join(chunks))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close()


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def _arm(timeout: float) -> None:
    signal.alarm(int(timeout) + 5)  # default SIGALRM action ends the process


def _preconnect(port: int) -> tuple[Any, Reader]:
    """Connect and make one round trip (GET_STATUS of an unknown handle)."""
    sock = wire.connect(port)
    sock.sendall(request(wire.GET_STATUS, data=b"tb-preconnect"))
    reader = Reader(sock)
    ptype, _ = reader.next()
    if ptype != wire.STATUS_RES:
        raise ServerError(f"GET_STATUS answered with packet {ptype}")
    return sock, reader


def _wait_barrier(ready_w: int, barrier_r: int) -> None:
    os.write(ready_w, b"c")
    os.read(barrier_r, 1)  # returns b"" when the parent closes its end: go


def _worker(port: int, fname: bytes, grab: str, echo: bool, slot: int, shm: mmap.mmap, ready_w: int,
            timeout: float) -> dict[str, Any]:  # fmt: skip
    _arm(timeout)
    counts = memoryview(shm).cast("q")  # [slot] jobs done
    stamps = memoryview(shm).cast("d")  # [512 + slot] time of the last one
    assign_args = wire.ASSIGN_ARGS
    grab_pkt = request(wire.GRABS[grab])
    pre_sleep = request(wire.PRE_SLEEP)
    sock = wire.connect(port)
    sock.sendall(request(wire.CAN_DO, data=fname) + grab_pkt)
    reader = Reader(sock)
    read, sendall, monotonic = reader.next, sock.sendall, time.monotonic
    split, pack = wire.split_assign, wire._HEADER.pack
    complete = wire.WORK_COMPLETE
    ready = False
    done = 0
    while True:
        ptype, body = read()
        nargs = assign_args.get(ptype)
        if nargs:
            handle, data = split(body, nargs)
            if not echo:
                sendall(pack(wire.REQ, complete, len(handle) + 1) + handle + b"\0" + grab_pkt)
            elif isinstance(data, memoryview):
                head = pack(wire.REQ, complete, len(handle) + 1 + len(data)) + handle + b"\0"
                wire.send_parts(sock, [head, data, grab_pkt])
            else:
                size = len(handle) + 1 + len(data)
                sendall(pack(wire.REQ, complete, size) + handle + b"\0" + data + grab_pkt)
            done += 1
            counts[slot] = done
            stamps[512 + slot] = monotonic()
        elif ptype == wire.NO_JOB:
            sendall(pre_sleep)
        elif ptype == wire.NOOP:
            sendall(grab_pkt)
        else:
            raise ServerError(f"worker got packet {ptype}: {bytes(body[:200])!r}")
        if not ready:
            os.write(ready_w, b"w")  # any answer to GRAB means CAN_DO was processed
            ready = True


def _bg_client(port: int, fname: bytes, idx: int, jobs: int, batch: int, size: int,
               ready_w: int, barrier_r: int, timeout: float) -> dict[str, Any]:  # fmt: skip
    _arm(timeout)
    body = wire.payload(size)
    owner = os.getppid()
    batches = []
    for start in range(0, jobs, batch):
        n = min(batch, jobs - start)
        pkts = [
            request(wire.SUBMIT_JOB_BG, fname, wire.unique(owner, idx, j), data=body)
            for j in range(start, start + n)
        ]
        batches.append((b"".join(pkts), n))
    sock, _ = _preconnect(port)
    _wait_barrier(ready_w, barrier_r)
    cpu0 = _cpu_self()
    counter = wire.ReplyCounter()
    recv, feed, sendall = sock.recv, counter.feed, sock.sendall
    want = 0
    for data, n in batches:
        sendall(data)
        want += n
        while counter.created < want:
            chunk = recv(wire.READ_CHUNK)
            if not chunk:
                raise ConnectionError("server closed the connection")
            feed(chunk)
            if counter.errors:
                raise ServerError("server answered SUBMIT_JOB_BG with ERROR")
    end = time.monotonic()
    return {"end": end, "ok": counter.created, "cpu": _cpu_self() - cpu0}


def _fg_client(port: int, fname: bytes, idx: int, jobs: int, depth: int, size: int,
               verify: bool, ready_w: int, barrier_r: int,
               timeout: float) -> dict[str, Any]:  # fmt: skip
    _arm(timeout)
    body = wire.payload(size)
    owner = os.getppid()
    big = size >= wire.BIG_BODY
    reqs: list[Any] = []
    counts = []
    for start in range(0, jobs, depth):
        n = min(depth, jobs - start)
        uniques = [wire.unique(owner, idx, j) for j in range(start, start + n)]
        if big:  # header+arguments, then the payload sent from the one shared buffer
            reqs.append(
                [wire.request_header(wire.SUBMIT_JOB, fname, u, data_size=size) for u in uniques]
            )
        else:
            reqs.append(b"".join(request(wire.SUBMIT_JOB, fname, u, data=body) for u in uniques))
        counts.append(n)
    lat = array.array("d", bytes(8 * len(reqs)))
    sock, reader = _preconnect(port)
    _wait_barrier(ready_w, barrier_r)
    cpu0 = _cpu_self()
    read, sendall, clock = reader.next, sock.sendall, time.perf_counter
    ok = bad = 0
    lo, hi = size + 2, size + 64  # a WORK_COMPLETE body is handle NUL payload
    for i, req in enumerate(reqs):
        t = clock()
        if big:
            for head in req:
                wire.send_parts(sock, [head, body])
        else:
            sendall(req)
        left = counts[i]
        while left:
            ptype, reply = read()
            if ptype == wire.WORK_COMPLETE:
                left -= 1
                if lo <= len(reply) <= hi:
                    ok += 1
                else:
                    bad += 1
            elif ptype != wire.JOB_CREATED:
                raise ServerError(f"client got packet {ptype}: {bytes(reply[:200])!r}")
        lat[i] = clock() - t
        if verify and not _echo_ok(reply, body):  # the last echo of the batch, untimed
            ok, bad = ok - 1, bad + 1
    end = time.monotonic()
    return {"end": end, "ok": ok, "bad": bad, "cpu": _cpu_self() - cpu0, "lat": lat}


def _echo_ok(reply: bytes | memoryview, body: bytes) -> bool:
    return bytes(reply[len(reply) - len(body) :]) == body


# ----------------------------------------------------------------------- parent


class Run:
    """The parent side of one measurement: spawns, releases, times and reaps."""

    def __init__(self, load: Load, port: int, server_pid: int | None) -> None:
        self.load = load
        self.port = port
        self.server_pid = server_pid
        tag = {"bg": "noop", "fg": "echo", "big": "echo", "qmem": "idle"}[load.mode]
        self.fname = b"tb_%s_%d" % (tag.encode(), os.getpid())
        self.deadline = time.monotonic() + load.timeout
        self.shm = mmap.mmap(-1, 8192)  # MAP_SHARED|MAP_ANONYMOUS: seen by every child
        self.ready_r, self.ready_w = os.pipe()
        self.barrier_r, self.barrier_w = os.pipe()
        self.workers: list[Child] = []
        self.clients: list[Child] = []

    def _await_ready(self, what: str) -> None:
        left = min(10.0, self.deadline - time.monotonic())
        if not select.select([self.ready_r], [], [], max(0.0, left))[0]:
            raise TimeoutError(f"a {what} did not become ready in time")
        os.read(self.ready_r, 1)

    def spawn_workers(self) -> None:
        ld = self.load
        echo = ld.mode != "bg"
        for _ in range(ld.workers):
            slot = len(self.workers)
            args = (self.port, self.fname, ld.grab, echo, slot, self.shm, self.ready_w, ld.timeout)
            self.workers.append(Child(_worker, args, [self.barrier_w, self.ready_r]))
            self._await_ready("worker")  # one at a time, registered before the next connects

    def spawn_clients(self) -> None:
        ld = self.load
        n = ld.clients
        for idx in range(n):
            jobs = ld.jobs // n + (1 if idx < ld.jobs % n else 0)
            common = (self.ready_w, self.barrier_r, ld.timeout)
            if ld.mode in ("bg", "qmem"):
                args: tuple[Any, ...] = (
                    self.port,
                    self.fname,
                    idx,
                    jobs,
                    ld.batch,
                    ld.size,
                    *common,
                )
                self.clients.append(Child(_bg_client, args, [self.barrier_w, self.ready_r]))
            else:
                verify = ld.verify or ld.mode == "big"
                args = (self.port, self.fname, idx, jobs, ld.depth, ld.size, verify, *common)
                self.clients.append(Child(_fg_client, args, [self.barrier_w, self.ready_r]))
            self._await_ready("client")

    def worker_done(self) -> tuple[int, float]:
        counts = memoryview(self.shm).cast("q")
        stamps = memoryview(self.shm).cast("d")
        n = len(self.workers)
        return sum(counts[:n]), max(stamps[512 : 512 + n], default=0.0)

    def wait_drained(self, total: int) -> float:
        while time.monotonic() < self.deadline:
            done, last = self.worker_done()
            if done >= total:
                return last
            time.sleep(0.001)
        raise TimeoutError(f"workers executed only {self.worker_done()[0]} of {total} jobs")

    def kill_all(self) -> None:
        for child in self.workers + self.clients:
            child.kill()
        for fd in (self.ready_r, self.ready_w, self.barrier_r, self.barrier_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.shm.close()

    def execute(self) -> dict[str, Any]:
        ld = self.load
        res: dict[str, Any] = {"mode": ld.mode, **asdict(ld)}
        res.pop("extra")
        if not (ld.mode == "qmem" or (ld.mode == "bg" and ld.late)):
            self.spawn_workers()
        self.spawn_clients()
        time.sleep(0.02)
        before = procstat.sample(self.server_pid)
        wcpu0 = sum(procstat.cpu_seconds(w.pid) for w in self.workers)
        machine0 = procstat.machine_busy()
        t0 = time.monotonic()
        os.close(self.barrier_w)  # release every client at once
        outs = [c.result(self.deadline) for c in self.clients]
        for out in outs:
            if "error" in out:
                raise RuntimeError(out["error"] + "\n" + out.get("tb", ""))
        t_end = max(o["end"] for o in outs)
        after_submit = procstat.sample(self.server_pid)
        ok = sum(o["ok"] for o in outs)
        res["completed"] = ok
        res["errors"] = sum(o.get("bad", 0) for o in outs) + (ld.jobs - ok)
        elapsed = t_end - t0
        if ld.mode in ("bg", "qmem"):
            res["submit_s"] = elapsed
            res["submit_jobs_s"] = ok / elapsed
        if ld.mode == "bg":
            t_start = t0
            if ld.late:
                t_start = time.monotonic()
                self.spawn_workers()
            res["drain_s"] = self.wait_drained(ld.jobs) - t_start
            res["drain_jobs_s"] = ld.jobs / res["drain_s"]
        if ld.mode in ("fg", "big"):
            self._latency(res, outs, elapsed)
        after = procstat.sample(self.server_pid)
        wall = time.monotonic() - t0
        harness = sum(o["cpu"] for o in outs)
        harness += sum(procstat.cpu_seconds(w.pid) for w in self.workers) - wcpu0
        busy = procstat.machine_busy() - machine0
        res["wall_s"] = wall
        res["harness_cpu_s"] = harness
        res["harness_cores"] = harness / wall
        if self.server_pid:
            cpu = after.cpu_s - before.cpu_s
            res["server_cpu_s"] = cpu
            res["server_cores"] = cpu / wall
            res["server_cpu_us_per_job"] = cpu / ld.jobs * 1e6
            res["rss_before_kb"] = before.rss_kb
            res["rss_after_kb"] = after_submit.rss_kb
            res["hwm_kb"] = after.hwm_kb
            res["foreign_cpu_s"] = busy - cpu - harness
            if ld.mode == "qmem":
                res["bytes_per_job"] = (after_submit.rss_kb - before.rss_kb) * 1024 / ld.jobs
            if ld.mode == "big":
                res["hwm_per_payload"] = after.hwm_kb * 1024 / ld.size
                res["hwm_mib"] = after.hwm_kb / 1024
        res["ok"] = res["errors"] == 0
        return res

    def _latency(self, res: dict[str, Any], outs: list[dict[str, Any]], elapsed: float) -> None:
        ld = self.load
        lat: list[float] = sorted(x for o in outs for x in o["lat"])

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * (len(lat) - 1) + 0.5))] * 1e6

        res["elapsed_s"] = elapsed
        res["jobs_s"] = res["completed"] / elapsed
        res["mib_s"] = res["jobs_s"] * ld.size / 1048576
        res["lat_unit"] = "batch" if ld.depth > 1 else "job"
        res["lat_p50_us"] = pct(0.50)
        res["lat_p90_us"] = pct(0.90)
        res["lat_p99_us"] = pct(0.99)
        res["lat_max_us"] = lat[-1] * 1e6
        res["lat_mean_us"] = statistics.fmean(lat) * 1e6
        if ld.mode == "big":
            res["rt_best_s"] = lat[0]
            res["rt_median_s"] = statistics.median(lat)
            res["big_mib_s"] = ld.size / 1048576 / res["rt_median_s"]


def run(load: Load, port: int, server_pid: int | None = None) -> dict[str, Any]:
    """Run one measurement against 127.0.0.1:``port``; never raises for a failed run."""
    if load.mode == "big":
        load.clients, load.workers, load.jobs, load.depth = 1, 1, load.reps, 1
    if load.mode == "qmem":
        load.workers = 0
    runner = Run(load, port, server_pid)
    old = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        return runner.execute()
    except Exception as exc:
        return {"mode": load.mode, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        runner.kill_all()
        signal.signal(signal.SIGCHLD, old)


# -------------------------------------------------------------------------- CLI


def parse_size(text: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One load-generator run; prints one JSON line.")
    ap.add_argument("mode", choices=["bg", "fg", "big", "qmem"])
    ap.add_argument("-p", "--port", type=int, required=True, help="server port on 127.0.0.1")
    ap.add_argument("-P", "--pid", type=int, default=0, help="server PID, for CPU and RSS")
    ap.add_argument("-c", "--clients", type=int, default=4)
    ap.add_argument("-w", "--workers", type=int, default=2)
    ap.add_argument("-n", "--jobs", type=int, default=100_000)
    ap.add_argument("-s", "--size", type=parse_size, default=100, help="payload, e.g. 100, 64K")
    ap.add_argument("-d", "--depth", type=int, default=1, help="fg jobs in flight per client")
    ap.add_argument("-b", "--batch", type=int, default=1000, help="bg jobs per submit batch")
    ap.add_argument("-r", "--reps", type=int, default=3, help="big: round trips")
    ap.add_argument("-L", "--late", action="store_true", help="bg: start workers after submit")
    ap.add_argument("-G", "--grab", choices=sorted(wire.GRABS), default="all")
    ap.add_argument("-V", "--verify", action="store_true", help="compare echoed payloads")
    ap.add_argument("-t", "--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    load = Load(a.mode, a.clients, a.workers, a.jobs, a.size, a.depth, a.batch, a.reps, a.late,
                a.grab, a.verify, a.timeout)  # fmt: skip
    if a.mode == "big" and a.size == 100:
        load.size = 256 << 20
    res = run(load, a.port, a.pid or None)
    print(json.dumps(res))
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

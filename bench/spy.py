"""Sample a Python server with py-spy while a row runs, and say where its time went.

``python bench/run.py --profile DIR`` records one collapsed-stack file per row
run of every geartrain server (``DIR/<row>-<server>-r<round>.txt``) and prints
the functions with the most samples. The files load into speedscope or
flamegraph.pl as they are. Needs ``pip install py-spy`` (and the right to
ptrace the server, which a process started by the same user normally has).

py-spy samples only while the server is running Python or inside a C call made
from Python; time spent asleep in the event loop's poll is left out, so the
percentages are of busy time. A system call (a socket write, say) is charged to
the Python line that made it.

    python bench/profile.py DIR/fg1-geartrain-r0.txt      # summarize a recording
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys

_FRAME = re.compile(r"(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, path: str, rate: int = 250) -> subprocess.Popen[bytes]:
    argv = ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    return subprocess.Popen(
        [*argv, "-o", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop recording; py-spy writes its file on SIGINT."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def _short(frame: str, with_line: bool) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    line = f":{m['line']}" if with_line and m["line"] else ""
    return f"{m['func']} ({path}{line})"


def summarize(path: str, top: int = 12) -> list[str]:
    """Top functions by samples where they were the innermost frame ("self"),
    the same by source line, and by samples anywhere on the stack ("total")."""
    own: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    n = 0
    with open(path) as f:
        for raw in f:
            stack, _, count = raw.rstrip().rpartition(" ")
            if not stack or not count.isdigit():
                continue
            k = int(count)
            n += k
            frames = stack.split(";")
            own[_short(frames[-1], False)] += k
            lines[_short(frames[-1], True)] += k
            for name in {_short(fr, False) for fr in frames}:
                total[name] += k
    if not n:
        return [f"{path}: no samples"]
    out = [f"{path}: {n} samples"]
    total = collections.Counter({k: v for k, v in total.items() if v < n})  # drop the roots
    for title, counter in (("self", own), ("self, by line", lines), ("total", total)):
        out.append(f"  -- {title}")
        out += [f"  {100 * k / n:5.1f}%  {name}" for name, k in counter.most_common(top)]
    return out


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(summarize(p, 20)))

"""Process-tree accounting for the benchmarks (Linux /proc): peak RSS and CPU seconds of a
process and its workers, and a one-line machine description."""

from __future__ import annotations

import os


def _tree(pid: int) -> list[int]:
    """pid and all its live descendants (from /proc)."""
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p))
            except OSError:
                continue
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += kids.get(q, [])
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of pid and its live descendants."""
    total = 0
    for q in _tree(pid):
        try:
            with open(f"/proc/{q}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds of pid and its descendants: live ones from their own counters, finished
    (reaped) ones through their parents' cumulative child counters."""
    total = 0
    for q in _tree(pid):
        try:
            with open(f"/proc/{q}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"

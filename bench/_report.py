"""What every benchmark writes beside its figures: the machine, the CPU time it used, and its
section of bench/README.md between its own markers (so benchmarks update their sections
independently)."""
from __future__ import annotations

import os
import re
import resource
from pathlib import Path


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc={os.cpu_count()}, {cpu}"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets_table(title: str, targets: list[tuple[str, str, bool]]) -> list[str]:
    """A benchmark's goals as Markdown lines: each (goal, measured value, met?)."""
    rows = [title, "", "| target | value | verdict |", "| --- | --- | --- |"]
    rows += [f"| {label} | {value} | {verdict(ok)} |" for label, value, ok in targets]
    return [*rows, ""]


def write_readme(path: Path, section: str, start: str, end: str) -> None:
    """Replace the text between `start` and `end` in `path` (appending the block if absent)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{section.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)

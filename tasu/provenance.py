"""Where a result came from: the git commit of the tree that produced it and the CPU it ran on (recorded in every
benchmark and demo result file)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = REPO_ROOT) -> str:
    """HEAD's hash, with '+uncommitted-changes' when tracked files differ from it; 'uncommitted' outside git.
    Result files (benchmarks/results/) do not count: one benchmark run writes several of them in turn, and the
    later ones measure the same code.
    TASU_SOURCE_COMMIT, when set, names the commit instead (marked as such): for a tree copied to another host
    (a GPU machine) whose .git, if any, is not the source's."""
    named = os.environ.get("TASU_SOURCE_COMMIT", "").strip()
    if named:
        return f"{named} (named by TASU_SOURCE_COMMIT)"
    rev = dirty = ""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root, capture_output=True, text=True,
                               check=False).stdout.strip()
    except OSError:
        pass
    return rev + ("+uncommitted-changes" if dirty else "") if rev else "uncommitted"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def malloc_library() -> str:
    """The C allocator this process runs on: 'tcmalloc' / 'jemalloc' when one is mapped (LD_PRELOAD), else 'glibc'.
    CPU timings of large fresh tensors depend on it (glibc returns blocks > 32 MB to the OS, so each new one pays
    page faults again; tcmalloc and jemalloc keep them)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc"

"""Result provenance: the commit a result file names, and the allocator it ran on."""

from __future__ import annotations

import subprocess

from tasu.provenance import git_commit, malloc_library


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_git_commit_marks_code_changes_but_not_result_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TASU_SOURCE_COMMIT", raising=False)
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks/results/r.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "benchmarks/results/r.json").write_text('{"speedup": 2}\n')   # an earlier benchmark of the run
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "+uncommitted-changes"
    monkeypatch.setenv("TASU_SOURCE_COMMIT", "abc")
    assert git_commit(tmp_path) == "abc (named by TASU_SOURCE_COMMIT)"


def test_malloc_library_names_the_allocator_of_this_process():
    assert malloc_library() in ("glibc", "tcmalloc", "jemalloc")

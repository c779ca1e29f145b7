"""Launch scripts, env files, hostfile and Dockerfiles: syntax, referenced configs and copied files exist."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tasu.config.loader import resolve_config_path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "launch").rglob("*.sh"))
OVERRIDE = re.compile(r"^(output_dir|train|model|data|stages|simulation|psd|prompts|eval|kernels)[.=]")


def named_configs(text: str) -> set[str]:
    """Tokens used as CONFIG: the token right before the first `key=value` override of a command."""
    names = set()
    for line in text.replace("\\\n", " ").splitlines():
        toks = line.split()
        for a, b in zip(toks, toks[1:]):
            if OVERRIDE.match(b) and "=" not in a and not a.startswith(("-", "$", '"')) and not OVERRIDE.match(a):
                names.add(a)
    return names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    # quote-safe-variables: every expansion quoted, even of variables that hold no spaces today
    scripts = [*SCRIPTS, *sorted((ROOT / "benchmarks").glob("*.sh"))]
    subprocess.run(["shellcheck", "-x", "-o", "quote-safe-variables", *map(str, scripts)], check=True, cwd=ROOT)


def test_every_config_named_by_a_launch_script_or_readme_exists():
    found = set()
    for f in [*SCRIPTS, ROOT / "README.md"]:
        found |= named_configs(f.read_text())
    assert "tiny-curriculum" in found and "tiny" in found   # the heuristic sees the real uses
    for name in found:
        resolve_config_path(name)  # raises ConfigError if neither a preset nor a file


def test_hostfile_example_parses():
    rows = [ln.split() for ln in (ROOT / "launch/hostfile.example").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert rows and all(len(r) == 2 and re.fullmatch(r"slots=\d+", r[1]) for r in rows)


def test_train_sh_rejects_missing_hostfile(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "launch/train.sh"), "-H", str(tmp_path / "none"), "tiny"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "hostfile not found" in r.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.npu"])
def test_dockerfile_parses_and_copies_exist(dockerfile):
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    instructions = [ln.split(None, 1) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    known = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "ENTRYPOINT", "CMD", "LABEL", "USER", "EXPOSE"}
    assert all(i[0] in known for i in instructions), instructions
    assert instructions[0][0] in ("FROM", "ARG")
    copies = [i[1].split() for i in instructions if i[0] == "COPY"]
    assert copies
    for args in copies:
        for src in args[:-1]:
            assert (ROOT / src).exists(), f"{dockerfile}: COPY source {src} does not exist"
    assert any("torch==2.13.0" in i[1] for i in instructions if i[0] == "RUN")

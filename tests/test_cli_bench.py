"""`tasu bench NAME`: runs benchmarks/bench_NAME.py of the checkout; unknown names are a usage error."""

import pytest

from tasu.cli import BENCHMARKS, main


@pytest.mark.parametrize("name", BENCHMARKS)
def test_bench_help_runs_the_script(name, capsys):
    assert main(["bench", name, "--help"]) == 0
    assert f"bench_{name}.py" in capsys.readouterr().out


def test_unknown_bench_is_a_usage_error(capsys):
    assert main(["bench", "nope"]) == 2
    assert "usage: tasu bench" in capsys.readouterr().err

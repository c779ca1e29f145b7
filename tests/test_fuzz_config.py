"""Fuzzing the config loader: random YAML files, random dotted overrides (keys from the schema and garbage, values
as raw YAML text) and schema-guided values of every type. The loader returns a Config or raises ConfigError whose
message names the key, override or file at fault; `tasu config` exits 0 or 2 and never prints a traceback."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import strategies as st

from tasu.cli import main as cli_main
from tasu.config.fields import ConfigError
from tasu.config.loader import PRESET_DIR, load_config
from tasu.config.schema import Config

from .fuzz_strategies import json_values
from .fuzz_utils import fuzz_tests, tally, write_tally


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _schema_keys(cls, prefix: str = "") -> list[tuple[str, object]]:
    """Every dotted key of the config schema with its annotation (lists of sections: index 0)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        out.append((key, tp))
        if dataclasses.is_dataclass(tp):
            out += _schema_keys(tp, key + ".")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass((typing.get_args(tp) or (None,))[0]):
            out += _schema_keys(typing.get_args(tp)[0], key + ".0.")
    return out


KEYS = _schema_keys(Config)

# raw YAML texts for override values: edge numbers, wrong types, and YAML that PyYAML itself rejects oddly
# (timestamps out of range raise ValueError, deep flow collections RecursionError)
_raw_values = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "3", "9", "1e-3", "1e999", "-1e999", ".nan", ".inf", "1" * 400, "0x10",
                     "true", "false", "null", "~", "", "[]", "{}", "[1, 2", "{a: [", "[a, b]", "{x: 1}", "'quoted'",
                     "2001-13-45", "2001-02-30", "0000-01-01", "12:30:00", "!!binary aGk=", "!!python/object:os.system",
                     "&a [*a]", "*nope", "a: b: c", "[" * 3000, "pkg://nothing/here", "/no/such/file.yaml",
                     "${NOPE_VAR_11}", "${HOME:-x}", "a" * 5000, "tiny", "hf", "simulated", "ctc", "fp16", "bf16",
                     "[projector, lora]", "[encoder]", "\x00", "- a\n- b"]),
    st.text(max_size=12), st.integers().map(str), st.floats().map(str),
)
_overrides = st.lists(st.one_of(
    st.tuples(st.sampled_from([k for k, _ in KEYS]), _raw_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.text(alphabet="abcdefgt._0129", max_size=20), _raw_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20),
), max_size=4)


def _expect_config_error(call) -> str:
    """Run `call`; only a Config or a ConfigError naming a key / override / file may come out."""
    try:
        call()
        return "accepted"
    except ConfigError as e:
        msg = str(e)
        assert msg and ("'" in msg or ":" in msg), msg  # names the key, override or file
        return "refused"


def _overrides_body(overrides: list[str]) -> None:
    outcome = _expect_config_error(lambda: load_config("tiny", overrides))
    tally("config overrides", inputs=1, **{outcome: 1})


test_overrides, test_overrides_slow = fuzz_tests(150, 2500, overrides=_overrides)(_overrides_body)


@st.composite
def _typed_value(draw, tp):
    """A value for annotation `tp`, mostly of the right type and often at an edge, sometimes garbage."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return draw(_typed_value(draw(st.sampled_from(args))))
    if tp is type(None):
        return None
    if tp is bool:
        return draw(st.booleans())
    if tp is int:
        return draw(st.one_of(st.integers(-3, 3), st.integers(), st.just(10**400)))
    if tp is float:
        return draw(st.one_of(st.floats(-2, 2), st.floats(), st.just(10**400)))
    if tp is str:
        return draw(st.one_of(st.text(max_size=8), st.sampled_from(["tiny", "none", "hf", "linear", "simulated",
                                                                  "\x00", "a" * 5000, "pkg://x"])))
    if origin is list:
        inner = args[0] if args else typing.Any
        if dataclasses.is_dataclass(inner):
            return draw(st.lists(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(inner)]),
                                                 json_values, max_size=3), max_size=2))
        return draw(st.lists(_typed_value(inner), max_size=3))
    if dataclasses.is_dataclass(tp):
        return draw(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(tp)]), json_values,
                                    max_size=3))
    return draw(json_values)


@st.composite
def _schema_trees(draw) -> dict:
    """The tiny preset with a few keys set to typed (mostly plausible) values."""
    tree = yaml.safe_load((PRESET_DIR / "tiny.yaml").read_text())
    for _ in range(draw(st.integers(1, 4))):
        key, tp = draw(st.sampled_from(KEYS))
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            if isinstance(node, list):
                if not node:
                    node.append({})
                node = node[0]
            else:
                if not isinstance(node.get(p), (dict, list)):
                    node[p] = {}
                node = node[p]
        if isinstance(node, dict):
            node[parts[-1]] = draw(_typed_value(tp))
    return tree


def _yaml_file_body(tree) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        try:
            path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8", errors="surrogatepass")
        except (yaml.YAMLError, OverflowError):
            return
        outcome = _expect_config_error(lambda: load_config(str(path)))
    tally("config YAML files", inputs=1, **{outcome: 1})


test_schema_trees, test_schema_trees_slow = fuzz_tests(120, 2500, tree=_schema_trees())(_yaml_file_body)
test_random_trees, test_random_trees_slow = fuzz_tests(
    40, 600, tree=st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(Config)] + ["x"]), json_values,
                                   max_size=4))(_yaml_file_body)


def _yaml_text_body(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        outcome = _expect_config_error(lambda: load_config(str(path)))
    tally("config YAML text", inputs=1, **{outcome: 1})


_yaml_texts = st.one_of(st.text(max_size=60), _raw_values,
                        st.sampled_from(["train:\n  lr: 2001-13-45\n", "train: {max_steps: " + "9" * 5000 + "}\n",
                                         "{" * 5000, "- 1\n- 2\n", "stages: []\n", "\ufeffoutput_dir: x\n",
                                         "train: !!python/object/apply:os.system [echo]\n", "a: &x 1\nb: *x\n"]))
test_yaml_texts, test_yaml_texts_slow = fuzz_tests(60, 600, text=_yaml_texts)(_yaml_text_body)


def _cli_body(overrides: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["config", "tiny", *overrides])
    assert rc in (0, 2), rc
    assert "Traceback" not in err.getvalue()
    if rc == 2:
        assert err.getvalue().startswith("tasu: "), err.getvalue()
    tally("tasu config CLI", inputs=1, **{f"rc{rc}": 1})


test_cli_config, test_cli_config_slow = fuzz_tests(30, 300, overrides=_overrides)(_cli_body)


@pytest.mark.parametrize("override", ["train.lr=2001-13-45", "train.max_steps=0000-01-01",
                                      "train.lr=" + "9" * 400, "model.encoder.n_heads=0", "train.lr=" + "[" * 3000,
                                      "train.seed=" + "9" * 5000, "output_dir=&a [*a]", "stages=&s [{name: *s}]",
                                      "model.ctc_tokenizer.path=" + "a" * 5000], ids=lambda o: o[:40])
def test_regression_odd_values_are_config_errors(override):
    """PyYAML turns bad dates into ValueError, deep flow lists into RecursionError and `&a [*a]` into a list that
    contains itself; float(10**400) overflows; a zero head count divided by zero in a __post_init__; a path too
    long for the file system raised OSError: all used to escape as non-ConfigErrors."""
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[-1]):
        load_config("tiny", [override])


@pytest.mark.parametrize("name", ["a" * 5000, "a" * 5000 + ".yaml", "\x00.yaml", "/no/such.yml"], ids=lambda o: o[:20])
def test_regression_odd_config_names_are_config_errors(name):
    with pytest.raises(ConfigError):
        load_config(name)

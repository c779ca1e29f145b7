"""No dead config keys: every field of every config dataclass is read somewhere in the package.

A key that nothing reads is accepted and silently ignored (a user who sets it believes it acts). The check is a
lenient text search: the field's name must occur in tasu/ as an attribute (`.name`) or a string ("name") outside
the line that declares it.
"""

import dataclasses
import re
from pathlib import Path

from tasu.config.fields import ConfigError
from tasu.config.loader import load_config, preset_names

PACKAGE = Path(__file__).resolve().parent.parent / "tasu"


def leaf_fields(obj, prefix=""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from leaf_fields(value, name + ".")
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            yield from leaf_fields(value[0], name + ".0.")
        yield name, f.name


def test_every_config_field_is_read_somewhere(tmp_path):
    code = [ln for f in PACKAGE.rglob("*.py") for ln in f.read_text(encoding="utf-8").splitlines()]
    fields = {}
    for preset in preset_names():
        try:
            fields.update(leaf_fields(load_config(preset, [f"output_dir={tmp_path}"])))
        except ConfigError as e:                 # presets filled in by environment variables (the demo's)
            assert "environment variable" in str(e), (preset, e)
    assert "eval.at_end" in fields and "stages.0.mode" in fields
    dead = []
    for key, name in sorted(fields.items()):
        declared = re.compile(rf"^\s*{re.escape(name)}\s*:")
        used = re.compile(rf"\.{re.escape(name)}\b|[\"']{re.escape(name)}[\"']")
        if not any(used.search(ln) for ln in code if not declared.match(ln)):
            dead.append(key)
    assert not dead, f"config keys nothing reads: {dead}"

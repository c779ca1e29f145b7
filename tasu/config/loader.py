"""YAML + dotted overrides -> typed config dataclasses, validated before any compute.

    cfg = load_config("tiny", ["train.max_steps=40", "stages.0.lr=1e-3"])

A config is named by a shipped preset (`tasu/config/presets/<name>.yaml`) or by a path. Values in overrides are
parsed as YAML scalars (`1e-3` -> float, `true` -> bool, `[a, b]` -> list). Paths starting with `pkg://` are
resolved inside the installed tasu package (shipped assets). String values may name environment variables as
`${VAR}` (an error naming the key when VAR is unset) or `${VAR:-default}`: configs that point at local model
folders (e.g. `model.llm.path: ${LLASO_LLM}`) are shipped without machine-specific paths.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tasu.config.fields import ConfigError

PRESET_DIR = Path(__file__).with_name("presets")
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A preset name (`tiny`) or a YAML path; error lists the presets."""
    p = Path(name_or_path)
    try:
        if p.suffix in (".yaml", ".yml"):
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            return p
        preset = PRESET_DIR / f"{name_or_path}.yaml"
        if preset.is_file():
            return preset
    except OSError as e:  # e.g. a name too long for the file system
        raise ConfigError(f"config {_short(name_or_path)!r}: {e.strerror or e}") from None
    raise ConfigError(f"unknown config '{name_or_path}': not a YAML file and not a preset "
                      f"({', '.join(preset_names())})")


def resolve_path(value: str | None) -> str | None:
    """Expand `pkg://rel` to a file shipped inside the tasu package, and `~`."""
    if value is None:
        return None
    if value.startswith("pkg://"):
        return str(PACKAGE_DIR / value[len("pkg://"):])
    return str(Path(value).expanduser()) if value.startswith("~") else value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """Check/convert `value` to the annotated type `tp`; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{key}': expected {' or '.join(_type_name(a) for a in args)}, "
                          f"got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, key)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, inner, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond float range (YAML ints have no size limit)
                raise ConfigError(f"config key '{key}': an integer of {value.bit_length()} bits is out of range for "
                                  "a number") from None
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {type(value).__name__} {value!r}")
    raise ConfigError(f"config key '{key}': unsupported annotation {tp}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are errors naming the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in names:
            path = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"unknown config key '{path}' (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in data.items():
        path = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"config section '{prefix or cls.__name__}': {e}") from None
    except (ArithmeticError, ValueError) as e:  # a __post_init__ check that itself failed (e.g. x % 0)
        raise ConfigError(f"config section '{prefix or cls.__name__}': invalid values {kwargs} "
                          f"({type(e).__name__}: {e})") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# PyYAML raises more than YAMLError: ValueError for impossible dates (2001-13-45) and for ints over Python's
# 4300-digit str->int limit, RecursionError for deeply nested flow collections.
_YAML_ERRORS = (yaml.YAMLError, ValueError, RecursionError, OverflowError)


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def apply_override(tree: dict, dotted: str) -> None:
    """`a.b.0.c=value` into a nested dict/list tree (value parsed as YAML)."""
    if "=" not in dotted:
        raise ConfigError(f"override '{dotted}' must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except _YAML_ERRORS as e:
        raise ConfigError(f"override '{_short(dotted)}': value is not valid YAML ({type(e).__name__}: "
                          f"{_short(str(e))})") from None
    check_tree(value, f"override '{_short(dotted)}'")
    parts = key.strip().split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override '{key}': '{where}' is not a valid list index")
            node = node[int(part)]
        else:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{key}': '{where}' is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override '{key}': '{last}' is not a valid list index")
        node[int(last)] = value
    else:
        node[last] = value


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(tree: Any, key: str = "") -> Any:
    """A copy of `tree` with `${VAR}` / `${VAR:-default}` in its strings replaced from the environment; an unset
    variable without a default is a ConfigError naming the dotted key (`$${` escapes a literal `${`)."""
    if isinstance(tree, dict):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand_env(v, f"{key}.{i}") for i, v in enumerate(tree)]
    if not isinstance(tree, str) or "${" not in tree:
        return tree

    def sub(m: re.Match) -> str:
        if m.start() > 0 and tree[m.start() - 1] == "$":
            return m.group(0)  # escaped: `$${X}` stays `${X}` (the extra `$` is dropped below)
        value = os.environ.get(m.group(1))
        if value is None or value == "":
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(f"config key '{key}': environment variable {m.group(1)} is not set or empty (the "
                              f"value is {tree!r}); set it, or override the key")
        return value

    return _ENV_RE.sub(sub, tree).replace("$${", "${")


def load_tree(name_or_path: str, overrides: list[str] = ()) -> dict:
    path = resolve_config_path(name_or_path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except _YAML_ERRORS as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid YAML: {type(e).__name__}: {_short(str(e))}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    check_tree(tree, str(path))
    for o in overrides:
        apply_override(tree, o)
    return expand_env(tree)


MAX_DEPTH = 64


def check_tree(tree: Any, where: str) -> None:
    """Refuse YAML that refers to itself (`&a [*a]` builds a list containing itself) or nests deeper than
    MAX_DEPTH: both would make every later recursive step fail with RecursionError. Iterative on purpose."""
    stack = [(tree, "", frozenset())]
    while stack:
        node, key, ancestors = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in ancestors:
            raise ConfigError(f"{where}: config key '{key}' contains itself (a recursive YAML alias)")
        if len(ancestors) >= MAX_DEPTH:
            raise ConfigError(f"{where}: config key '{_short(key, 80)}' is nested deeper than {MAX_DEPTH} levels")
        inner = ancestors | {id(node)}
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((v, f"{key}.{k}" if key else str(k), inner) for k, v in items)


def load_config(name_or_path: str, overrides: list[str] = ()):
    """Load, override, type-check and validate a full tasu config (errors name the key)."""
    from tasu.config.schema import Config

    cfg = from_dict(Config, load_tree(name_or_path, overrides))
    cfg.validate_files()
    return cfg


def dump_yaml(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")

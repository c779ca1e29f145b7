"""Helpers for typed config dataclasses: every field carries a one-line doc in its metadata."""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A config problem; the message always names the offending key (dotted path)."""


def doc_field(default: Any = None, doc: str = "", *, factory=None):
    """A dataclass field with a one-line doc (shown by `tasu config --help-keys`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ConfigError naming `key` unless `cond` holds."""
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")

"""Typed config: dataclasses, YAML loading with dotted overrides, validation."""

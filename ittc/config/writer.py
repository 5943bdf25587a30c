"""Writing TOML (the standard library only reads it)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_toml"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | pathlib.Path):
        text = str(value)
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: Mapping[str, Any], header: str = "") -> str:
    """TOML for nested mappings of scalars, lists, tables and arrays of tables."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if lines:
        lines.append("")

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_tables(v)}
        for key, value in scalars.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in table.items():
            name = f"{prefix}{key}"
            if _is_table(value):
                lines.append("")
                lines.append(f"[{name}]")
                emit(value, name + ".")
            elif _is_tables(value):
                for item in value:
                    lines.append("")
                    lines.append(f"[[{name}]]")
                    emit(item, name + ".")

    emit(data, "")
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_tables(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )

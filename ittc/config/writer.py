"""Writing the TOML files people read at a site: values with their explanations.

``tomlkit`` writes (the standard library only reads TOML; :mod:`ittc.config.reader`
reads with ``tomllib``). Every field of a generated file carries a comment that says what
it is for, so the file explains itself where it is deployed.
"""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

__all__ = ["document", "field", "table"]


def document(header: str) -> TOMLDocument:
    """A new document that opens with ``header`` as comment lines."""
    doc = tomlkit.document()
    for line in header.splitlines():
        doc.add(tomlkit.comment(line) if line else tomlkit.comment(""))
    doc.add(tomlkit.nl())
    return doc


def table(doc: TOMLDocument, name: str, about: str = "") -> Table:
    """A new table ``[name]`` in ``doc``, ``about`` as comment lines above its header."""
    doc.add(tomlkit.nl())
    for line in about.splitlines():
        doc.add(tomlkit.comment(line))
    t = tomlkit.table()
    doc.add(name, t)
    if about:
        t.trivia.indent = ""  # tomlkit would put a blank line between comment and header
    return t


def field(container: TOMLDocument | Table, key: str, value: Any, about: str = "") -> None:
    """``key = value``, with ``about`` (possibly several lines) as comments above it."""
    for line in about.splitlines():
        container.add(tomlkit.comment(line))
    container.add(key, value)

"""Reading the TOML files people edit: typed access with errors that name file and field."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from ittc.errors import ConfigError, ParameterError
from ittc.scheme.params import MIN_MODULUS_BITS, PublicParams

__all__ = [
    "IDENTITY",
    "VERSION",
    "Reader",
    "check_format",
    "load_params",
    "load_toml",
    "parse_address",
]

VERSION = 1
#: The identities ``allowed_clients`` may list and certificates may carry.
IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Reader:
    """Typed access to a parsed TOML document, with errors that name file and field."""

    def __init__(self, path: pathlib.Path, data: Mapping[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {problem}")

    def table(self, key: str, required: bool = True) -> Reader:
        value = self.data.get(key)
        if value is None and not required:
            return Reader(self.path, {}, f"{self.prefix}{key}.")
        if not isinstance(value, Mapping):
            raise self.fail(key, "missing table" if value is None else "must be a table")
        return Reader(self.path, value, f"{self.prefix}{key}.")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(key, f"must be {getattr(kind, '__name__', kind)}")
        if not isinstance(value, kind):
            raise self.fail(key, f"must be {getattr(kind, '__name__', kind)}")
        return value

    def int(self, key: str, lo: int, hi: int, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if not lo <= value <= hi:
            raise self.fail(key, f"must be in {lo}..{hi}")
        return int(value)

    def path_(self, key: str, default: Any = ...) -> pathlib.Path | None:
        value = self.get(key, str, default)
        if value is None:
            return None
        p = pathlib.Path(value).expanduser()
        # Relative to the file's folder, ".." taken literally: "../var/audit.log" beside
        # etc/node.toml is var/audit.log, and is shown as such in every message.
        return pathlib.Path(os.path.normpath(p if p.is_absolute() else self.path.parent / p))

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return tuple(value)

    def unknown(self, allowed: set[str]) -> None:
        extra = set(self.data) - allowed
        if extra:
            raise self.fail(sorted(extra)[0], "unknown field (misspelt?)")


def load_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def check_format(reader: Reader, expected: str) -> None:
    if reader.get("format", str, None) != expected:
        raise ConfigError(f'{reader.path}: not an {expected} file (format = "{expected}")')
    version = reader.get("version", int, None)
    if version != VERSION:
        raise ConfigError(
            f"{reader.path}: unsupported version {version!r} (this ittc reads version {VERSION})"
        )


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), checked."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"address {text!r} is not host:port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"address {text!r}: port {port} is not in 1..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"address {text!r}: {host} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"address {text!r}: write an IPv6 address in brackets, [v6]:port")
    return host, port


#: The field (in cluster.toml, and in node.toml's [key]) that lets a modulus below
#: MIN_MODULUS_BITS load: the ceremony writes it only for keys made with the test-only
#: flag (``--insecure-small-key-for-tests``), so a test key says so in its files.
SMALL_KEY_FIELD = "insecure_small_key_for_tests"


def load_params(reader: Reader, key: str, *, small_key_allowed: bool = False) -> PublicParams:
    """The public parameters a config names, refusing a modulus below 2048 bits unless the
    config carries the test-only field (and the key really is a test key)."""
    path = reader.path_(key)
    assert path is not None
    try:
        params = PublicParams.from_json(path.read_bytes())
    except FileNotFoundError:
        raise reader.fail(key, f"{path}: no such file") from None
    except ParameterError as exc:
        raise reader.fail(key, f"{path}: {exc}") from None
    if params.bits < MIN_MODULUS_BITS and not small_key_allowed:
        raise reader.fail(
            key,
            f"{path}: a {params.bits}-bit modulus is below {MIN_MODULUS_BITS} bits and "
            f"protects nothing; only test keys are that small, and their config says so "
            f"({SMALL_KEY_FIELD} = true)",
        )
    return params

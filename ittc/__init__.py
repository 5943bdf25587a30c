"""ittc: an intrusion-tolerant threshold RSA signing network.

One RSA key is split into ``n`` shares held by node daemons at separate sites; any ``k``
of them produce an ordinary RSA signature (PKCS#1 v1.5 or PSS). Shoup, *Practical
Threshold Signatures*, EUROCRYPT 2000.

What an embedder needs is here::

    from ittc import ClusterClient, SyncClusterClient, SignItem, ThresholdRSAPrivateKey

The names are loaded on first use, so ``import ittc`` pulls in neither gRPC nor the
combiner. Errors live in :mod:`ittc.errors` (all under :class:`~ittc.errors.IttcError`).

Layers, bottom up (each imports only the ones below it; CI checks it, see
``docs/design.md``): :mod:`ittc.errors`; :mod:`ittc.scheme` (the math, no I/O);
:mod:`ittc.storage` and :mod:`ittc.config` (files: encrypted shares, TLS identities, the
TOML configs); :mod:`ittc.wire` (the gRPC protocol, its codec, mutual TLS);
:mod:`ittc.combiner` (the client) beside the node daemon (``ittc_node``); :mod:`ittc.ca`
and :mod:`ittc.deploy` (a ``cryptography`` key and CA operations; the key ceremony and
local clusters); :mod:`ittc.cli` on top.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ittc.version import __version__

if TYPE_CHECKING:
    from ittc.ca import ThresholdRSAPrivateKey
    from ittc.combiner import (
        ClientOptions,
        ClientStats,
        ClusterClient,
        NodeEvent,
        SyncClusterClient,
    )
    from ittc.config import ClusterFile
    from ittc.errors import IttcError, SigningError
    from ittc.scheme.encoding import Scheme, SignItem
    from ittc.scheme.params import PublicParams

__all__ = [
    "ClientOptions",
    "ClientStats",
    "ClusterClient",
    "ClusterFile",
    "IttcError",
    "NodeEvent",
    "PublicParams",
    "Scheme",
    "SignItem",
    "SigningError",
    "SyncClusterClient",
    "ThresholdRSAPrivateKey",
    "__version__",
]

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "ClientOptions": "ittc.combiner",
    "ClientStats": "ittc.combiner",
    "ClusterClient": "ittc.combiner",
    "NodeEvent": "ittc.combiner",
    "SyncClusterClient": "ittc.combiner",
    "ThresholdRSAPrivateKey": "ittc.ca",
    "ClusterFile": "ittc.config",
    "IttcError": "ittc.errors",
    "SigningError": "ittc.errors",
    "Scheme": "ittc.scheme.encoding",
    "SignItem": "ittc.scheme.encoding",
    "PublicParams": "ittc.scheme.params",
}

# A library logs, it does not configure logging: without a handler of the application's
# own, nothing is printed ("ittc" is the parent of every logger here).
logging.getLogger("ittc").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ittc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

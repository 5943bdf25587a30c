"""ittc: an intrusion-tolerant threshold RSA signing network.

One RSA key is split into ``n`` shares held by node daemons at separate sites; any ``k``
of them produce an ordinary RSA signature (PKCS#1 v1.5 or PSS). Shoup, *Practical
Threshold Signatures*, EUROCRYPT 2000.

Layers, bottom up (each imports only the ones below it): :mod:`ittc.errors`;
:mod:`ittc.scheme` (the math, no I/O); :mod:`ittc.storage` and :mod:`ittc.config` (files:
encrypted shares, TLS identities, the TOML configs); :mod:`ittc.wire` (the gRPC protocol,
its codec, mutual TLS); :mod:`ittc.combiner` (the client) beside the node daemon
(``ittc_node``); :mod:`ittc.ca` and :mod:`ittc.deploy` (adapters: a ``cryptography`` key,
the key ceremony, local clusters); :mod:`ittc.cli` on top. See ``docs/design.md``.
"""

__version__ = "0.1.0"

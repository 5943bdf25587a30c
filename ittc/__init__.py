"""ittc: an intrusion-tolerant threshold RSA signing network.

One RSA key is split into ``n`` shares held by node daemons at separate sites; any ``k``
of them produce an ordinary RSA signature (PKCS#1 v1.5 or PSS). Shoup, *Practical
Threshold Signatures*, EUROCRYPT 2000.

Layers, bottom up: :mod:`ittc.scheme` (the math, no I/O), :mod:`ittc.storage` (encrypted
share files), :mod:`ittc.v1` (the wire protocol), the combiner client, and adapters on
top (a ``cryptography`` key object, the command line).
"""

__version__ = "0.1.0"

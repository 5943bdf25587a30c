"""The wire: the ``ittc.v1`` gRPC protocol (generated from ``proto/``), the one codec
that turns its messages into the scheme's values and back, and mutual TLS.

Client and node both speak through :mod:`ittc.wire.codec`, so an enum mapping, a size
limit or a share encoding exists once. Nothing here does arithmetic.
"""

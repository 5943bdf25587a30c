"""The threshold RSA scheme itself: pure arithmetic and encodings, no I/O.

Shoup, *Practical Threshold Signatures*, EUROCRYPT 2000. Everything here can be read and
tested without a network; the layers above never do arithmetic of their own.
"""

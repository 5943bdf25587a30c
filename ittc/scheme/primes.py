"""Safe primes ``p = 2p' + 1`` for Shoup's scheme, found with a sieve and gmpy2.

Candidates for ``p'`` are taken ``≡ 5 (mod 6)`` (otherwise 3 divides ``p'`` or ``p``);
a window of them is sieved against the small primes for ``p'`` and ``2p'+1`` together,
so that only about one candidate in 60 reaches a modular exponentiation. A survivor
must pass a base-2 Fermat test on ``p`` and then Miller–Rabin on ``p'``; given ``p'``
prime, ``2^{p-1} ≡ 1 (mod p)`` proves ``p`` prime (Pocklington, since ``p' > √p``).

Several processes search at once and the first two distinct primes found win, so two
cores find a pair in about the time one core takes to find one.
"""

from __future__ import annotations

import math
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import lru_cache

import gmpy2
from gmpy2 import mpz

__all__ = [
    "SIEVE_LIMIT",
    "WINDOW",
    "generate_safe_prime",
    "generate_safe_prime_pair",
    "is_safe_prime",
]

#: Small primes up to this bound sieve the candidates.
SIEVE_LIMIT = 1 << 17
#: Candidates per sieve window.
WINDOW = 1 << 15
_MR_ROUNDS = 40

Progress = Callable[[str], None]


@lru_cache(maxsize=1)
def _small_primes() -> tuple[tuple[int, int], ...]:
    """``(ℓ, 6^{-1} mod ℓ)`` for the primes ``5 <= ℓ < SIEVE_LIMIT``."""
    flags = bytearray([1]) * SIEVE_LIMIT
    flags[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(SIEVE_LIMIT) + 1):
        if flags[i]:
            flags[i * i :: i] = bytes(len(range(i * i, SIEVE_LIMIT, i)))
    return tuple((p, pow(6, -1, p)) for p in range(5, SIEVE_LIMIT) if flags[p])


def is_safe_prime(p: int, rounds: int = _MR_ROUNDS) -> bool:
    """Whether ``p`` and ``(p-1)/2`` are both (probable) primes."""
    return (
        p > 5
        and p % 2 == 1
        and bool(gmpy2.is_prime(p, rounds))
        and bool(gmpy2.is_prime((p - 1) // 2, rounds))
    )


def _search_window(base: mpz, width: int) -> mpz | None:
    """First safe prime ``2q+1`` with ``q = base + 6j``, ``0 <= j < width``, or None."""
    sieve = bytearray([1]) * width
    for ell, inv6 in _small_primes():
        r = int(base % ell)
        # q ≡ 0 (ℓ divides p') and q ≡ (ℓ-1)/2 (ℓ divides 2p'+1) are struck out.
        for target in (0, (ell - 1) >> 1):
            j = (target - r) * inv6 % ell
            if j < width:
                sieve[j::ell] = bytes(len(range(j, width, ell)))
    two = mpz(2)
    j = sieve.find(1)
    while j >= 0:
        q = base + 6 * j
        p = 2 * q + 1
        if gmpy2.powmod(two, p - 1, p) == 1 and gmpy2.is_prime(q, _MR_ROUNDS):
            return p
        j = sieve.find(1, j + 1)
    return None


def _random_base(bits: int) -> mpz:
    """A random ``q ≡ 5 (mod 6)`` such that ``p = 2q+1`` has its top two bits set."""
    lo = (1 << (bits - 2)) + (1 << (bits - 3))  # p >= 2^(b-1) + 2^(b-2)
    hi = (1 << (bits - 1)) - 6 * WINDOW  # p < 2^b for the whole window
    q = lo + secrets.randbelow(hi - lo)
    return mpz(q - q % 6 + 5)


def generate_safe_prime(bits: int, *, progress: Progress | None = None) -> int:
    """A random safe prime of exactly ``bits`` bits whose top two bits are set."""
    if bits < 64:
        raise ValueError("safe primes below 64 bits are not supported")
    windows = 0
    while True:
        found = _search_window(_random_base(bits), WINDOW)
        windows += 1
        if found is not None:
            return int(found)
        if progress is not None:
            progress(f"searched {windows * WINDOW} candidates for a {bits}-bit safe prime")


def _worker_main(bits: int) -> None:  # pragma: no cover - runs in a subprocess
    """Search forever, one line per window on stdout: ``found <hex>`` or ``window <n>``."""
    while True:
        found = _search_window(_random_base(bits), WINDOW)
        line = f"found {int(found):x}" if found is not None else f"window {WINDOW}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def generate_safe_prime_pair(
    bits: int, *, processes: int | None = None, progress: Progress | None = None
) -> tuple[int, int]:
    """Two distinct random safe primes of ``bits`` bits each, searched on several cores.

    The searchers are plain subprocesses (``python -m ittc.scheme.primes``), not
    multiprocessing children, so callers need no ``__main__`` guard and may hold threads.
    ``processes=1`` searches in this process.
    """
    if processes is None:
        processes = min(2, os.cpu_count() or 1)
    if processes <= 1:
        p = generate_safe_prime(bits, progress=progress)
        q = p
        while q == p:
            q = generate_safe_prime(bits, progress=progress)
        return p, q

    lines: queue.Queue[str | None] = queue.Queue()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "ittc.scheme.primes", str(bits)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(processes)
    ]

    def pump(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    pumps = [threading.Thread(target=pump, args=(w,), daemon=True) for w in workers]
    for t in pumps:
        t.start()
    found: list[int] = []
    searched = 0
    alive = len(workers)
    started = last_report = time.monotonic()
    try:
        while len(found) < 2:
            line = lines.get()
            if line is None:
                alive -= 1
                if alive == 0:
                    raise RuntimeError("safe prime search processes exited unexpectedly")
                continue
            kind, _, value = line.strip().partition(" ")
            if kind == "found":
                prime = int(value, 16)
                if prime not in found and is_safe_prime(prime):
                    found.append(prime)
                    if progress is not None:
                        progress(
                            f"found safe prime {len(found)} of 2 "
                            f"({time.monotonic() - started:.1f} s)"
                        )
            elif kind == "window":
                searched += int(value)
                now = time.monotonic()
                if progress is not None and now - last_report >= 2.0:
                    last_report = now
                    progress(f"searched {searched} candidates ({now - started:.0f} s)")
    finally:
        for w in workers:
            w.kill()
        for w in workers:
            w.wait()
            if w.stdout is not None:
                w.stdout.close()
    return found[0], found[1]


if __name__ == "__main__":  # pragma: no cover - the search subprocess
    try:
        _worker_main(int(sys.argv[1]))
    except (BrokenPipeError, KeyboardInterrupt):
        pass

"""Micro-benchmarks of the threshold RSA scheme, one operation at a time.

For each modulus size, in one process and one run: the two bare constant-time
exponentiations a signature share can be built on (``gmpy2.powmod_sec`` and OpenSSL's
``BN_mod_exp_mont_consttime`` called straight through ctypes), a share through
:meth:`KeyShare.signature_share` under each backend of :mod:`ittc.scheme.ct` side by side
and under the run's backend (``--backend``), shares with proofs (fresh and precomputed nonces),
proof verification, combining ``k = 3`` shares with and without the final
``y^e == x`` check, the message encodings, single-key OpenSSL signing through
``cryptography``, the share of a split (integer-shared) key, and the dealer's key
generation and split.

The machine is shared, so every timed operation is interleaved with the others: each
round runs every operation once (fast ones in a batch long enough to time), in an order
rotated from round to round, and the report gives medians and interquartile ranges.
Ratios between two operations are taken round by round (both saw the same noise) and
their median is reported. Targets are marked PASS or MISS here; tests never assert
timings.

    python -m benchmarks.micro [--bits 2048 3072 4096] [--repeat N] [--keygen-runs N]
                               [--split-runs N] [--backend auto|openssl|gmpy2] [--quick]
                               [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import os
import pathlib
import platform
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import cryptography
import gmpy2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ittc.errors import BackendError
from ittc.scheme import _libcrypto, ct, dealer, keyshare
from ittc.scheme.combine import combine, combine_robust
from ittc.scheme.ct import mpz
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.proofs import SignatureShare, verify_share
from ittc.version import __version__ as ittc_version

__all__ = ["OPERATIONS", "SCHEMA", "TARGETS", "main", "run"]

SCHEMA = "ittc.bench.micro/1"
#: The source tree this file is in, or None when it runs from an installed ittc (then
#: reports carry ittc's version and no commit).
REPO: pathlib.Path | None = pathlib.Path(__file__).resolve().parent.parent
if not (REPO / "pyproject.toml").is_file() or not (REPO / "ittc").is_dir():
    REPO = None
DEFAULT_OUT = pathlib.Path("benchmarks") / "results"

DEFAULT_BITS = (2048, 3072, 4096)
DEFAULT_REPEAT, QUICK_REPEAT = 61, 15
DEFAULT_KEYGEN_RUNS = {2048: 9, 3072: 5, 4096: 3}
QUICK_KEYGEN_RUNS = {2048: 3, 3072: 2, 4096: 1}
DEFAULT_SPLIT_RUNS, QUICK_SPLIT_RUNS = 5, 2
#: Each timed sample of a fast operation runs it this long (a batch of calls).
DEFAULT_SAMPLE_MS = 5.0
#: Distinct messages cycled through, so no operation sees one value only.
POOL = 8
N_NODES, THRESHOLD = 5, 3
PSS_SALT_BYTES = 32

#: (name, label) of every timed operation, in report order.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("powmod_sec_bare", "bare gmpy2.powmod_sec, share-sized"),
    ("openssl_ct_bare", "bare OpenSSL BN_mod_exp_mont_consttime via ctypes, share-sized"),
    ("share_gmpy2", "signature share, gmpy2 backend"),
    ("share_openssl", "signature share, openssl backend"),
    ("share", "signature share, the run's backend (T_share)"),
    ("share_python_only", "signature share with its modexp stubbed out (Python overhead)"),
    ("share_proof", "share + proof, fresh nonce"),
    ("share_proof_precomputed", "share + proof, precomputed nonce"),
    ("nonce_precompute", "precompute one proof nonce (r, v^r), idle-time work"),
    ("verify_share", "verify one share's proof (verify_share)"),
    ("combine_check", "combine k=3 shares, with the y^e == x check"),
    ("combine_nocheck", "combine k=3 shares, check=False"),
    ("combine_robust", "combine_robust, k=3 shares without proofs"),
    ("encode_pkcs1v15", "encode EMSA-PKCS1-v1_5, SHA-256"),
    ("encode_pss", f"encode EMSA-PSS, SHA-256, {PSS_SALT_BYTES}-byte salt"),
    ("openssl_sign", "single-key RSA sign, OpenSSL via cryptography (PKCS1v15, SHA-256)"),
    ("split_share", "signature share, split key (integer sharing)"),
    ("split_powmod_sec_bare", "bare gmpy2.powmod_sec, split-share-sized"),
)
LABELS = dict(OPERATIONS)
#: Operations measured only where libcrypto loads.
OPENSSL_OPERATIONS = frozenset({"openssl_ct_bare", "share_openssl"})

#: (id, description, comparison, limit, sizes it applies to or None for all).
TARGETS: tuple[tuple[str, str, str, float, tuple[int, ...] | None], ...] = (
    (
        "share_openssl_over_openssl_ct",
        "share (openssl) / bare OpenSSL constant-time exp",
        "<=",
        1.05,
        None,
    ),
    ("share_openssl_over_powmod_sec", "share (openssl) / bare gmpy2.powmod_sec", "<=", 0.55, None),
    ("share_gmpy2_over_powmod_sec", "share (gmpy2) / bare gmpy2.powmod_sec", "<=", 1.05, None),
    ("combine_check_over_share", "combine k=3 with check / signature share", "<=", 0.05, None),
    ("keygen_median_s", "dealer.generate median wall time (s)", "<", 5.0, (2048,)),
    ("keygen_median_s", "dealer.generate median wall time (s)", "<", 60.0, (4096,)),
)


# -- progress on stderr ------------------------------------------------------------------


class Progress:
    """Status lines on stderr: rewritten in place on a terminal, rate-limited otherwise."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._open = False
        self._last = 0.0

    def line(self, message: str) -> None:
        if not self.enabled:
            return
        self._end_status()
        print(message, file=self.stream, flush=True)

    def status(self, message: str, *, every_s: float = 5.0) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + message)
            self.stream.flush()
            self._open = True
            return
        now = time.monotonic()
        if now - self._last >= every_s:
            self._last = now
            print(message, file=self.stream, flush=True)

    def _end_status(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


# -- timing ------------------------------------------------------------------------------


@dataclass
class Op:
    """One timed operation: ``call`` once per timed call.

    ``setup(count)`` runs untimed before each sample of ``count`` calls, ``teardown()``
    untimed after it.
    """

    name: str
    call: Callable[[], object]
    setup: Callable[[int], None] | None = None
    teardown: Callable[[], None] | None = None
    inner: int = 1


#: What a sample's duration is measured with. ``cpu`` is this thread's CPU time: every
#: timed operation runs in the calling thread, so on a shared machine it leaves out the
#: time other processes held the core (it still includes their effect on caches).
CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def _time_batch(op: Op, count: int, clock: Callable[[], int] = time.perf_counter_ns) -> float:
    if op.setup is not None:
        op.setup(count)
    call = op.call
    try:
        start = clock()
        for _ in range(count):
            call()
        return (clock() - start) / count / 1e9
    finally:
        if op.teardown is not None:
            op.teardown()


def calibrate(
    ops: Sequence[Op], sample_s: float, clock: Callable[[], int] = time.perf_counter_ns
) -> None:
    """Warm each operation up and choose how many calls one sample makes."""
    for op in ops:
        _time_batch(op, 2, clock)
        single = statistics.median(_time_batch(op, 1, clock) for _ in range(3))
        op.inner = 1 if single >= sample_s else max(1, min(100_000, round(sample_s / single)))


def measure_interleaved(
    ops: Sequence[Op],
    rounds: int,
    on_round: Callable[[int], None] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, list[float]]:
    """Seconds per call of each operation, one sample per round, rounds interleaved.

    Round ``r`` runs the operations starting from the ``r``-th, so every operation takes
    every position equally often; the garbage collector runs between rounds only.
    """
    samples: dict[str, list[float]] = {op.name: [] for op in ops}
    ops = list(ops)
    enabled = gc.isenabled()
    try:
        for r in range(rounds):
            gc.collect()
            gc.disable()
            shift = r % len(ops)
            for op in ops[shift:] + ops[:shift]:
                samples[op.name].append(_time_batch(op, op.inner, clock))
            if enabled:
                gc.enable()
            if on_round is not None:
                on_round(r + 1)
    finally:
        if enabled:
            gc.enable()
    return samples


def summarize(values: Sequence[float]) -> dict[str, Any]:
    xs = sorted(values)
    if len(xs) >= 2:
        p25, _, p75 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        p25 = p75 = xs[0]
    return {
        "median": statistics.median(xs),
        "p25": p25,
        "p75": p75,
        "min": xs[0],
        "max": xs[-1],
        "n": len(xs),
    }


def paired(
    a: Sequence[float], b: Sequence[float], how: Callable[[float, float], float]
) -> dict[str, Any]:
    """Summary of ``how(a_r, b_r)`` over rounds ``r``: both samples saw the same noise."""
    return summarize([how(x, y) for x, y in zip(a, b, strict=True)])


def _ratio(x: float, y: float) -> float:
    return x / y


def _diff(x: float, y: float) -> float:
    return x - y


# -- one modulus size --------------------------------------------------------------------


def _random_exponent(bits: int) -> mpz:
    """A random exponent of exactly ``bits`` bits (powmod_sec's cost follows its length)."""
    return mpz(secrets.randbits(bits - 1) | (1 << (bits - 1)))


def _share_exponent_bits(share: KeyShare) -> int:
    """Bit length of ``2·Δ·s_i``, the exponent of a signature share.

    Its length, not its value, sets the cost of ``powmod_sec``; nothing secret is kept.
    """
    exponent = getattr(share, "_exponent", None)
    if exponent is not None:
        return int(exponent).bit_length()
    params = share.params  # pragma: no cover - if KeyShare's internals change
    return params.share_bits + (2 * params.delta).bit_length()


class BareOpenSSL:
    """``BN_mod_exp_mont_consttime`` called straight, every argument made beforehand.

    The same foreign call the openssl backend makes (exponent flagged
    ``BN_FLG_CONSTTIME``, the modulus's cached Montgomery context), without converting
    numbers or allocating: the floor of a share under that backend.
    """

    def __init__(
        self, lib: _libcrypto.LibCrypto, bases: Sequence[mpz], exponent: mpz, modulus: mpz
    ) -> None:
        raw = lib._lib
        self._raw = raw
        self._m = lib._modulus(mpz(modulus))
        size = self._m.size
        self._bases = [raw.BN_bin2bn(int(b).to_bytes(size, "big"), size, None) for b in bases]
        data = int(exponent).to_bytes((exponent.bit_length() + 7) // 8, "big")
        self._p = raw.BN_bin2bn(data, len(data), None)
        raw.BN_set_flags(self._p, 0x04)  # BN_FLG_CONSTTIME
        self._r = raw.BN_new()
        self._ctx = raw.BN_CTX_new()
        self._exp = raw.BN_mod_exp_mont_consttime
        if not all([*self._bases, self._p, self._r, self._ctx]):
            raise MemoryError("libcrypto could not allocate")  # pragma: no cover

    def __call__(self, i: int) -> None:
        m = self._m
        if self._exp(self._r, self._bases[i], self._p, m.bn, self._ctx, m.mont) != 1:
            raise RuntimeError("BN_mod_exp_mont_consttime failed")  # pragma: no cover

    def check(self, i: int, expected: mpz) -> None:
        """Raise unless the last call's result is ``expected`` (the setup is right)."""
        size = self._m.size
        out = ctypes.create_string_buffer(size)
        self._raw.BN_bn2binpad(self._r, out, size)
        if int.from_bytes(out.raw, "big") != expected:
            raise RuntimeError("bare OpenSSL exponentiation gives a wrong answer")

    def close(self) -> None:
        raw = self._raw
        for bn in self._bases:
            raw.BN_free(bn)
        raw.BN_clear_free(self._p)
        raw.BN_clear_free(self._r)
        raw.BN_CTX_free(self._ctx)


def _load_libcrypto() -> _libcrypto.LibCrypto | None:
    try:
        return _libcrypto.load()
    except (OSError, AttributeError):
        return None


def _keygen(
    bits: int, runs: int, insecure: bool, progress: Progress
) -> tuple[dealer.DealtKey, list[float]]:
    times: list[float] = []
    dealt: dealer.DealtKey | None = None
    last = [time.monotonic()]

    def forward(message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            progress.line(f"    {message}")

    for run in range(max(runs, 1)):
        if runs:
            progress.line(f"  keygen {bits} bits: run {run + 1}/{runs} ...")
        start = time.perf_counter()
        dealt = dealer.generate(
            bits,
            N_NODES,
            THRESHOLD,
            progress=forward,
            insecure_allow_small_modulus_for_tests=insecure,
        )
        elapsed = time.perf_counter() - start
        if runs:
            times.append(elapsed)
            progress.line(f"  keygen {bits} bits: run {run + 1}/{runs}: {elapsed:.2f} s")
    assert dealt is not None
    return dealt, times


def _split(key: rsa.RSAPrivateKey, bits: int) -> dealer.DealtKey:
    if bits >= 2048:
        return dealer.split(key, N_NODES, THRESHOLD)
    # dealer.split refuses small keys; its dealing is the same (test-only sizes).
    numbers = key.private_numbers()
    return dealer.deal_integer(
        numbers.public_numbers.n, numbers.public_numbers.e, numbers.d, N_NODES, THRESHOLD
    )


def bench_size(
    bits: int,
    *,
    repeat: int,
    keygen_runs: int,
    split_runs: int,
    sample_s: float,
    insecure: bool,
    progress: Progress,
    backend: str = "auto",
    clock: str = "wall",
) -> dict[str, Any]:
    """Every measurement for one modulus size; ``backend`` is the run's (``share`` etc.),
    ``clock`` a key of :data:`CLOCKS`."""
    progress.line(f"== {bits}-bit modulus ==")
    dealt, keygen_times = _keygen(bits, keygen_runs, insecure, progress)
    params = dealt.params
    shares = dealt.shares

    progress.line(f"  OpenSSL key and dealer.split ({max(split_runs, 1)} run(s)) ...")
    start = time.perf_counter()
    key = rsa.generate_private_key(65537, bits)
    openssl_keygen_s = time.perf_counter() - start
    split_times: list[float] = []
    split_dealt: dealer.DealtKey | None = None
    for _ in range(max(split_runs, 1)):
        start = time.perf_counter()
        split_dealt = _split(key, bits)
        if split_runs:
            split_times.append(time.perf_counter() - start)
    assert split_dealt is not None
    split_params = split_dealt.params

    # Messages: real encodings of random digests (units of both moduli).
    digests = [secrets.token_bytes(32) for _ in range(POOL)]
    salts = [secrets.token_bytes(PSS_SALT_BYTES) for _ in range(POOL)]
    xs = [encode(Scheme.PKCS1V15, "sha256", dg, bits) for dg in digests]
    for x in xs:
        if math.gcd(x, params.modulus) != 1 or math.gcd(x, split_params.modulus) != 1:
            raise RuntimeError("message representative is not a unit")  # pragma: no cover
    xms = [mpz(x) for x in xs]

    signer, idle = shares[0], shares[N_NODES - 1]
    proved = [signer.signature_share(x, proof=True) for x in xs]
    for x, sh in zip(xs, proved, strict=True):
        verify_share(params, x, sh)
    sets: list[list[SignatureShare]] = [
        [s.signature_share(x) for s in shares[:THRESHOLD]] for x in xs
    ]
    for x, group in zip(xs, sets, strict=True):
        combine(params, x, group)  # raises unless the shares make a valid signature

    share_exp_bits = _share_exponent_bits(signer)
    split_exp_bits = _share_exponent_bits(split_dealt.shares[0])
    share_exp = _random_exponent(share_exp_bits)
    split_exp = _random_exponent(split_exp_bits)
    N, split_N = params.N, split_params.N

    pkcs = padding.PKCS1v15()
    sha256 = hashes.SHA256()
    counter = [0]

    def nxt() -> int:
        counter[0] = (counter[0] + 1) % POOL
        return counter[0]

    def no_leftover_nonces(_count: int) -> None:
        if signer.precomputed_nonces:
            raise RuntimeError("a precomputed nonce would be used by the fresh-nonce case")

    # Python overhead of a share: the same call with its one modexp replaced by a stub
    # that returns the base (patched in this process for that operation's samples only).
    namespace = vars(keyshare)
    real_powmod_secret = namespace["powmod_secret"]

    def stub_modexp(_count: int) -> None:
        namespace["powmod_secret"] = lambda base, exponent, modulus: base

    def restore_modexp() -> None:
        namespace["powmod_secret"] = real_powmod_secret

    # The same share under each backend: switched for that operation's samples only.
    def under(name: str) -> Callable[[int], None]:
        return lambda _count: None if ct.use_backend(name) else None

    def back_to_run_backend() -> None:
        ct.use_backend(backend)

    lib = _load_libcrypto() if openssl_usable(backend) else None
    bare: BareOpenSSL | None = None
    if lib is not None:
        bare = BareOpenSSL(lib, xms, share_exp, N)
        bare(0)
        bare.check(0, gmpy2.powmod(xms[0], share_exp, N))

    split_signer = split_dealt.shares[0]
    ops = [
        Op("powmod_sec_bare", lambda: gmpy2.powmod_sec(xms[nxt()], share_exp, N)),
        *([Op("openssl_ct_bare", lambda: bare(nxt()))] if bare is not None else []),
        Op(
            "share_gmpy2",
            lambda: signer.signature_share(xs[nxt()]),
            setup=under("gmpy2"),
            teardown=back_to_run_backend,
        ),
        *(
            [
                Op(
                    "share_openssl",
                    lambda: signer.signature_share(xs[nxt()]),
                    setup=under("openssl"),
                    teardown=back_to_run_backend,
                )
            ]
            if bare is not None
            else []
        ),
        Op("share", lambda: signer.signature_share(xs[nxt()])),
        Op(
            "share_python_only",
            lambda: signer.signature_share(xs[nxt()]),
            setup=stub_modexp,
            teardown=restore_modexp,
        ),
        Op(
            "share_proof",
            lambda: signer.signature_share(xs[nxt()], proof=True),
            setup=no_leftover_nonces,
        ),
        Op(
            "share_proof_precomputed",
            lambda: signer.signature_share(xs[nxt()], proof=True),
            setup=signer.precompute_nonces,
        ),
        Op("nonce_precompute", lambda: idle.precompute_nonces(1)),
        Op("verify_share", lambda: verify_share(params, xs[i := nxt()], proved[i])),
        Op("combine_check", lambda: combine(params, xs[i := nxt()], sets[i])),
        Op("combine_nocheck", lambda: combine(params, xs[i := nxt()], sets[i], check=False)),
        Op("combine_robust", lambda: combine_robust(params, xs[i := nxt()], sets[i])),
        Op("encode_pkcs1v15", lambda: encode(Scheme.PKCS1V15, "sha256", digests[nxt()], bits)),
        Op("encode_pss", lambda: encode(Scheme.PSS, "sha256", digests[i := nxt()], bits, salts[i])),
        Op("openssl_sign", lambda: key.sign(digests[nxt()], pkcs, sha256)),
        Op("split_share", lambda: split_signer.signature_share(xs[nxt()])),
        Op("split_powmod_sec_bare", lambda: gmpy2.powmod_sec(xms[nxt()], split_exp, split_N)),
    ]
    assert [op.name for op in ops] == [
        name for name, _ in OPERATIONS if bare is not None or name not in OPENSSL_OPERATIONS
    ]

    progress.line(f"  calibrating {len(ops)} operations ({ct.backend_description()}) ...")
    calibrate(ops, sample_s, CLOCKS[clock])
    started = time.monotonic()

    def on_round(done: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / done * (repeat - done)
        progress.status(
            f"  measuring {bits} bits: round {done}/{repeat} ({elapsed:.0f} s, ~{eta:.0f} s left)"
        )

    try:
        samples = measure_interleaved(ops, repeat, on_round, CLOCKS[clock])
    finally:
        if bare is not None:
            bare.close()
    if namespace["powmod_secret"] is not real_powmod_secret:
        raise RuntimeError("the modexp stub was left in place")  # pragma: no cover
    progress.line(f"  measured {bits} bits: {repeat} rounds in {time.monotonic() - started:.1f} s")

    operations = {
        op.name: {"label": LABELS[op.name], "inner": op.inner, **summarize(samples[op.name])}
        for op in ops
    }
    s = samples
    t_share = operations["share"]["median"]
    cores = os.cpu_count() or 1
    ratios = {
        "share_gmpy2_over_powmod_sec": paired(s["share_gmpy2"], s["powmod_sec_bare"], _ratio),
        "share_python_only_over_share": paired(s["share_python_only"], s["share"], _ratio),
        "combine_check_over_share": paired(s["combine_check"], s["share"], _ratio),
        "combine_nocheck_over_share": paired(s["combine_nocheck"], s["share"], _ratio),
        "final_check_s": paired(s["combine_check"], s["combine_nocheck"], _diff),
        "combine_robust_over_combine_check": paired(
            s["combine_robust"], s["combine_check"], _ratio
        ),
        "share_proof_over_share": paired(s["share_proof"], s["share"], _ratio),
        "share_proof_precomputed_over_share": paired(
            s["share_proof_precomputed"], s["share"], _ratio
        ),
        "verify_share_over_share": paired(s["verify_share"], s["share"], _ratio),
        "split_share_over_share": paired(s["split_share"], s["share"], _ratio),
        "split_share_over_its_powmod_sec": paired(
            s["split_share"], s["split_powmod_sec_bare"], _ratio
        ),
        "share_over_openssl_sign": paired(s["share"], s["openssl_sign"], _ratio),
    }
    if bare is not None:
        ratios.update(
            {
                "share_openssl_over_openssl_ct": paired(
                    s["share_openssl"], s["openssl_ct_bare"], _ratio
                ),
                "share_openssl_over_powmod_sec": paired(
                    s["share_openssl"], s["powmod_sec_bare"], _ratio
                ),
                "share_openssl_over_share_gmpy2": paired(
                    s["share_openssl"], s["share_gmpy2"], _ratio
                ),
                "openssl_ct_over_powmod_sec": paired(
                    s["openssl_ct_bare"], s["powmod_sec_bare"], _ratio
                ),
            }
        )
    derived = {
        "openssl_signs_per_s": 1.0 / operations["openssl_sign"]["median"],
        "shares_per_s_one_core": 1.0 / t_share,
        "threshold_cpu_per_signature_s": THRESHOLD * t_share
        + operations["combine_check"]["median"],
        "cluster_bound_per_s": cores / (THRESHOLD * t_share),
        "cluster_bound_with_proofs_per_s": cores
        / (
            THRESHOLD * operations["share_proof_precomputed"]["median"]
            + THRESHOLD * operations["verify_share"]["median"]
        ),
        "cores": cores,
    }
    return {
        "bits": bits,
        "backend": ct.backend(),
        "n": N_NODES,
        "k": THRESHOLD,
        "rounds": repeat,
        "share_exponent_bits": share_exp_bits,
        "split_share_exponent_bits": split_exp_bits,
        "operations": operations,
        "ratios": ratios,
        "derived": derived,
        "keygen": {
            "runs": len(keygen_times),
            "runs_s": keygen_times,
            **(
                {f"{k}_s": v for k, v in summarize(keygen_times).items() if k != "n"}
                if keygen_times
                else {"median_s": None}
            ),
        },
        "split": {
            "function": "dealer.split" if bits >= 2048 else "dealer.deal_integer",
            "runs": len(split_times),
            "runs_s": split_times,
            **(
                {f"{k}_s": v for k, v in summarize(split_times).items() if k != "n"}
                if split_times
                else {"median_s": None}
            ),
        },
        "openssl_generate_private_key_s": openssl_keygen_s,
    }


# -- targets, machine, reports -----------------------------------------------------------


def evaluate_targets(sizes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for bits_key, res in sizes.items():
        bits = int(bits_key)
        for ident, description, comparison, limit, applies in TARGETS:
            if applies is not None and bits not in applies:
                continue
            if ident == "keygen_median_s":
                value = res["keygen"]["median_s"]
                note = f"{res['keygen']['runs']} run(s)"
            elif ident in res["ratios"]:
                value = res["ratios"][ident]["median"]
                note = f"median of {res['rounds']} paired rounds"
            else:  # an openssl figure where libcrypto is missing
                continue
            if value is None:
                continue
            ok = value <= limit if comparison == "<=" else value < limit
            out.append(
                {
                    "id": ident,
                    "bits": bits,
                    "description": description,
                    "comparison": comparison,
                    "limit": limit,
                    "value": value,
                    "pass": bool(ok),
                    "note": note,
                }
            )
    return out


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _openssl_version() -> str:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return str(backend.openssl_version_text())
    except Exception:  # noqa: BLE001 - a fact we report, not one we need
        return "unknown"


def openssl_usable(run_backend: str) -> bool:
    """Whether ittc.scheme.ct accepts libcrypto here (it loads and passes its self-test)."""
    try:
        ct.use_backend("openssl")
    except BackendError:
        return False
    finally:
        ct.use_backend(run_backend)
    return True


def _libcrypto_version(run_backend: str) -> str | None:
    """The system libcrypto the openssl backend uses, if it is usable."""
    lib = _load_libcrypto() if openssl_usable(run_backend) else None
    return None if lib is None else f"{lib.version} ({lib.path})"


def _git(*args: str) -> str | None:
    if REPO is None:
        return None
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def ittc_build(machine: dict[str, Any]) -> str:
    """Which ittc a report measured: its version, and the commit when run from a checkout."""
    commit = machine.get("ittc_commit")
    where = f"commit {str(commit)[:12]}" if commit else "installed, no git checkout"
    return f"{machine.get('ittc_version')} ({where})"


def machine_facts(backend: str = "auto") -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    dirty = _git("status", "--porcelain", "--", "ittc/scheme")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "gmpy2": gmpy2.version(),
        "gmp": gmpy2.mp_version(),
        "cryptography": cryptography.__version__,
        "openssl": _openssl_version(),
        "libcrypto": _libcrypto_version(backend),
        "ct_backend": ct.backend_description(),
        "ittc_version": ittc_version,
        "ittc_commit": _git("rev-parse", "HEAD"),
        "ittc_scheme_modified": None if dirty is None else bool(dirty),
        "loadavg_start": list(os.getloadavg()),
    }


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if abs(seconds) < 1.0:
        return f"{seconds * 1e3:.3g} ms" if abs(seconds) < 1e-2 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _fmt_ratio(r: dict[str, Any]) -> str:
    return f"{r['median']:.4g} ({r['p25']:.4g}–{r['p75']:.4g})"


def render_markdown(report: dict[str, Any]) -> str:
    m, cfg = report["machine"], report["config"]
    lines = [
        f"# ittc micro-benchmark, {m['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_usable']} usable), "
        f"{m['platform']}; load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m.get('loadavg_end', [float('nan')])[0]:.2f} at end (a shared machine: numbers "
        "are noisy, ratios are paired round by round).",
        f"Python {m['python']}, gmpy2 {m['gmpy2']} ({m['gmp']}), cryptography "
        f"{m['cryptography']} ({m['openssl']}); ittc {ittc_build(m)}"
        + (" with uncommitted changes in ittc/scheme/" if m["ittc_scheme_modified"] else "")
        + ".",
        f"n={N_NODES}, k={THRESHOLD}; {cfg['repeat']} interleaved rounds per size, fast "
        f"operations batched to ~{cfg['sample_ms']:g} ms per sample, timed by "
        + ("this thread's CPU time" if cfg.get("clock") == "cpu" else "wall clock")
        + ".",
        f"Run's backend (`--backend {cfg.get('backend', 'auto')}`): {m.get('ct_backend')}; "
        f"libcrypto: {m.get('libcrypto') or 'not usable here'}.",
        "",
        "## Targets",
        "",
        "| target | bits | measured | limit | result |",
        "|---|---:|---:|---:|---|",
    ]
    for t in report["targets"]:
        value = f"{t['value']:.2f} s" if t["id"] == "keygen_median_s" else f"{t['value']:.4f}"
        lines.append(
            f"| {t['description']} | {t['bits']} | {value} ({t['note']}) | "
            f"{t['comparison']} {t['limit']:g} | {'PASS' if t['pass'] else 'MISS'} |"
        )

    sizes = report["sizes"]
    keys = list(sizes)
    lines += [
        "",
        "## Median cost per operation",
        "",
        "| operation | " + " | ".join(f"{k} bits" for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, label in OPERATIONS:
        lines.append(
            f"| {label} | "
            + " | ".join(fmt_time(sizes[k]["operations"].get(name, {}).get("median")) for k in keys)
            + " |"
        )
    lines.append(
        "| dealer.generate, median wall time (runs) | "
        + " | ".join(
            f"{fmt_time(sizes[k]['keygen']['median_s'])} ({sizes[k]['keygen']['runs']})"
            for k in keys
        )
        + " |"
    )
    lines.append(
        "| dealer.split of an existing key, median (runs) | "
        + " | ".join(
            f"{fmt_time(sizes[k]['split']['median_s'])} ({sizes[k]['split']['runs']})" for k in keys
        )
        + " |"
    )
    lines.append(
        "| rsa.generate_private_key, OpenSSL (1 run) | "
        + " | ".join(fmt_time(sizes[k]["openssl_generate_private_key_s"]) for k in keys)
        + " |"
    )

    lines += [
        "",
        "## Ratios and rates (paired per round: median (p25–p75))",
        "",
        "| quantity | " + " | ".join(f"{k} bits" for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    ratio_rows = [
        (
            "share (openssl) / bare OpenSSL constant-time exp (target <= 1.05)",
            "share_openssl_over_openssl_ct",
            False,
        ),
        (
            "share (openssl) / bare powmod_sec (target <= 0.55)",
            "share_openssl_over_powmod_sec",
            False,
        ),
        ("share (gmpy2) / bare powmod_sec (target <= 1.05)", "share_gmpy2_over_powmod_sec", False),
        ("share (openssl) / share (gmpy2)", "share_openssl_over_share_gmpy2", False),
        ("bare OpenSSL constant-time exp / bare powmod_sec", "openssl_ct_over_powmod_sec", False),
        ("share's Python overhead / share", "share_python_only_over_share", False),
        ("combine with check / share (target <= 0.05)", "combine_check_over_share", False),
        ("combine check=False / share", "combine_nocheck_over_share", False),
        ("cost of the final y^e == x check", "final_check_s", True),
        (
            "combine_robust (k shares) / combine with check",
            "combine_robust_over_combine_check",
            False,
        ),
        ("share + proof (fresh nonce) / share", "share_proof_over_share", False),
        ("share + proof (precomputed nonce) / share", "share_proof_precomputed_over_share", False),
        ("verify_share / share", "verify_share_over_share", False),
        ("split-key share / Shoup share", "split_share_over_share", False),
        ("split-key share / its bare powmod_sec", "split_share_over_its_powmod_sec", False),
        ("share / single-key OpenSSL sign", "share_over_openssl_sign", False),
    ]
    for label, key, is_time in ratio_rows:
        cells = []
        for k in keys:
            r = sizes[k]["ratios"].get(key)
            if r is None:  # an openssl figure where libcrypto is missing
                cells.append("-")
                continue
            cells.append(
                f"{fmt_time(r['median'])} ({fmt_time(r['p25'])}–{fmt_time(r['p75'])})"
                if is_time
                else _fmt_ratio(r)
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    derived_rows = [
        ("single-key OpenSSL signatures/s (one core)", "openssl_signs_per_s", "{:.0f}"),
        ("signature shares/s (one core, 1/T_share)", "shares_per_s_one_core", "{:.1f}"),
        ("CPU per threshold signature, k·T_share + combine", "threshold_cpu_per_signature_s", None),
        ("compute bound cores/(k·T_share), signatures/s", "cluster_bound_per_s", "{:.1f}"),
        (
            "same with proofs made and verified, signatures/s",
            "cluster_bound_with_proofs_per_s",
            "{:.1f}",
        ),
    ]
    for label, key, pattern in derived_rows:
        lines.append(
            f"| {label} | "
            + " | ".join(
                (
                    pattern.format(sizes[k]["derived"][key])
                    if pattern
                    else fmt_time(sizes[k]["derived"][key])
                )
                for k in keys
            )
            + " |"
        )
    lines.append(
        "| share exponent bits, Shoup / split key | "
        + " | ".join(
            f"{sizes[k]['share_exponent_bits']} / {sizes[k]['split_share_exponent_bits']}"
            for k in keys
        )
        + " |"
    )

    for k in keys:
        res = sizes[k]
        lines += [
            "",
            f"## {k} bits: every operation",
            "",
            "| operation | median | p25–p75 | min | per second | calls × rounds |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, label in OPERATIONS:
            if name not in res["operations"]:
                continue
            o = res["operations"][name]
            lines.append(
                f"| {label} | {fmt_time(o['median'])} | {fmt_time(o['p25'])}–"
                f"{fmt_time(o['p75'])} | {fmt_time(o['min'])} | "
                f"{1.0 / o['median']:,.0f} | {o['inner']} × {o['n']} |"
            )
        kg = res["keygen"]
        if kg["runs"]:
            lines.append("")
            lines.append(
                f"dealer.generate({k}): median {fmt_time(kg['median_s'])}, min "
                f"{fmt_time(kg['min_s'])}, max {fmt_time(kg['max_s'])} over "
                f"{kg['runs']} run(s): " + ", ".join(f"{t:.2f}" for t in kg["runs_s"]) + " s."
            )
    if report.get("plot"):
        lines += ["", f"![per-operation cost]({report['plot']})"]
    return "\n".join(lines) + "\n"


def write_plot(report: dict[str, Any], path: pathlib.Path) -> bool:
    """A bar chart of the median cost per operation and size, if matplotlib is there."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = report["sizes"]
    keys = list(sizes)
    names = [name for name, _ in OPERATIONS if all(name in sizes[k]["operations"] for k in keys)]
    height = 0.8 / max(len(keys), 1)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) * max(1, len(keys) / 2) + 1.5))
    for j, k in enumerate(keys):
        values = [sizes[k]["operations"][n]["median"] * 1e3 for n in names]
        ax.barh(
            [i + j * height for i in range(len(names))], values, height=height, label=f"{k} bits"
        )
    ax.set_yticks([i + height * (len(keys) - 1) / 2 for i in range(len(names))])
    ax.set_yticklabels([LABELS[n] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median milliseconds per call (log scale)")
    ax.set_title(f"ittc micro-benchmark, {report['machine']['date']}")
    ax.legend()
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- command line ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.micro",
        description="Micro-benchmarks of ittc's threshold RSA scheme.",
    )
    p.add_argument(
        "--bits",
        type=int,
        nargs="+",
        default=list(DEFAULT_BITS),
        help="modulus sizes (default: 2048 3072 4096)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"interleaved rounds per size (default {DEFAULT_REPEAT}, --quick {QUICK_REPEAT})",
    )
    p.add_argument(
        "--keygen-runs",
        type=int,
        default=None,
        help="dealer.generate runs per size (default 9/5/3 for 2048/3072/4096, "
        "--quick 3/2/1; 0 times none)",
    )
    p.add_argument(
        "--split-runs",
        type=int,
        default=None,
        help=f"dealer.split runs per size (default {DEFAULT_SPLIT_RUNS}, "
        f"--quick {QUICK_SPLIT_RUNS})",
    )
    p.add_argument(
        "--sample-ms",
        type=float,
        default=DEFAULT_SAMPLE_MS,
        help="batch fast operations to about this long per sample",
    )
    p.add_argument(
        "--backend",
        choices=ct.BACKENDS,
        default="auto",
        help="ittc.scheme.ct backend of the run's share, proofs and combine "
        "(default auto); both backends' shares are measured in any case",
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time samples by wall clock (default) or by this thread's CPU time, which "
        "leaves out the time other processes hold the core (a shared machine)",
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds and keygen runs")
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=DEFAULT_OUT,
        help="directory for micro-<date>.json/.md/.png (default benchmarks/results)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    # Test-only: moduli below 2048 bits (1024 and up), never for real figures.
    p.add_argument(
        "--insecure-allow-small-modulus-for-tests", action="store_true", help=argparse.SUPPRESS
    )
    return p


def run(args: argparse.Namespace, command: str, progress: Progress) -> dict[str, Any]:
    """Measure every size and return the report (not yet written)."""
    repeat = (
        args.repeat if args.repeat is not None else (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    )
    split_runs = (
        args.split_runs
        if args.split_runs is not None
        else (QUICK_SPLIT_RUNS if args.quick else DEFAULT_SPLIT_RUNS)
    )
    ct.use_backend(args.backend)
    facts = machine_facts(args.backend)
    sizes: dict[str, dict[str, Any]] = {}
    for bits in args.bits:
        if args.keygen_runs is not None:
            keygen_runs = args.keygen_runs
        else:
            keygen_runs = (QUICK_KEYGEN_RUNS if args.quick else DEFAULT_KEYGEN_RUNS).get(bits, 1)
        sizes[str(bits)] = bench_size(
            bits,
            repeat=repeat,
            keygen_runs=keygen_runs,
            split_runs=split_runs,
            sample_s=args.sample_ms / 1e3,
            insecure=args.insecure_allow_small_modulus_for_tests,
            progress=progress,
            backend=args.backend,
            clock=args.clock,
        )
    facts["loadavg_end"] = list(os.getloadavg())
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command,
        "machine": facts,
        "config": {
            "bits": list(args.bits),
            "repeat": repeat,
            "split_runs": split_runs,
            "keygen_runs": {k: v["keygen"]["runs"] for k, v in sizes.items()},
            "sample_ms": args.sample_ms,
            "quick": bool(args.quick),
            "n": N_NODES,
            "k": THRESHOLD,
            "pool": POOL,
            "backend": args.backend,
            "clock": args.clock,
        },
        "sizes": sizes,
    }
    report["targets"] = evaluate_targets(sizes)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for bits in args.bits:
        if args.insecure_allow_small_modulus_for_tests:
            if bits < 1024 or bits % 2:
                parser.error("test sizes are even and at least 1024 bits")
        elif bits not in dealer.SUPPORTED_BITS:
            parser.error(f"--bits must be among {dealer.SUPPORTED_BITS}")
    for name in ("repeat", "keygen_runs", "split_runs"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "repeat" else 0):
            parser.error(f"--{name.replace('_', '-')} out of range")
    if args.sample_ms <= 0:
        parser.error("--sample-ms must be positive")
    try:
        ct.use_backend(args.backend)
    except BackendError as exc:
        parser.error(str(exc))

    shown = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks.micro", *shown])
    progress = Progress(enabled=not args.no_progress)
    report = run(args, command, progress)

    out: pathlib.Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    base = out / f"micro-{stamp}"
    if not args.no_plot and write_plot(report, base.with_suffix(".png")):
        report["plot"] = base.with_suffix(".png").name
    markdown = render_markdown(report)
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown)
    print(markdown)
    progress.line(f"wrote {base}.json and .md" + (" and .png" if report.get("plot") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The single-machine figures each point is compared with, measured beside it while the
cluster is idle: a share's exponentiation under each backend, single-key OpenSSL, the
proof costs, and the floor of a lone signature (k exponentiations at once, plus one
audit-line fsync on the nodes' disk)."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import pathlib
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import gmpy2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from benchmarks import micro
from benchmarks.micro import Op
from ittc.errors import InvalidProof
from ittc.scheme.ct import mpz
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import verify_share

__all__ = [
    "AUDIT_LINE_BYTES",
    "Baseline",
    "audit_fsync_seconds",
    "bound_per_s",
    "measure_cpu_interleaved",
    "parallel_makespan",
    "share_exponent_bits",
]

#: About the size of a node's audit line for a one-item request.
AUDIT_LINE_BYTES = 600


def share_exponent_bits(params: PublicParams) -> int:
    """Bit length of ``2·Δ·s_i``: a Shoup share lies below ``m = p'q'`` (about ``N/4``);
    an integer share below ``2^share_bits``."""
    secret_bits = params.share_bits - 2 if params.sharing == "shoup" else params.share_bits - 1
    return secret_bits + (2 * params.delta).bit_length()


class Baseline:
    """The single-machine figures the cluster is compared with, for one key size.

    ``T_share`` is the bare constant-time exponentiation a node's share costs under each
    backend, with a random exponent of a share's length (benchmarks/micro.py measures a
    share at 1.00-1.04 times it): ``t_share_openssl`` is OpenSSL's
    ``BN_mod_exp_mont_consttime`` (the nodes' default, ``auto``, where libcrypto loads),
    ``t_share_gmpy2`` is ``gmpy2.powmod_sec``. Proof costs use a share with a random
    secret under this process's backend (the nodes' default): it costs what a real one
    does, and its proofs (which cannot verify against the key's ``v_i``) are verified to
    the end all the same.
    """

    POOL = 8

    def __init__(self, params: PublicParams, cores: int) -> None:
        self.params = params
        self.cores = cores
        self.exponent_bits = share_exponent_bits(params)
        self._n = mpz(params.modulus)
        self._exp = micro._random_exponent(self.exponent_bits)
        digests = [secrets.token_bytes(32) for _ in range(self.POOL)]
        self._digests = digests
        self._xs = [encode(Scheme.PKCS1V15, "sha256", d, params.bits) for d in digests]
        self._xms = [mpz(x) for x in self._xs]
        secret_bits = self.exponent_bits - (2 * params.delta).bit_length()
        self._share = KeyShare(
            params, 1, secrets.randbits(secret_bits - 1) | (1 << (secret_bits - 2))
        )
        self._proved = [self._share.signature_share(x, proof=True) for x in self._xs]
        self._key = rsa.generate_private_key(65537, params.bits)
        self._i = 0
        lib = micro._load_libcrypto()
        self._bare = (
            micro.BareOpenSSL(lib, self._xms, self._exp, self._n) if lib is not None else None
        )

    def _next(self) -> int:
        self._i = (self._i + 1) % self.POOL
        return self._i

    def _verify(self) -> None:
        i = self._next()
        try:
            verify_share(self.params, self._xs[i], self._proved[i])
        except InvalidProof:
            pass  # expected: the proving share is not the key's

    def ops(self, proofs: bool) -> list[Op]:
        n, e = self._n, self._exp
        sha = hashes.SHA256()
        pkcs = padding.PKCS1v15()
        prehashed = Prehashed(sha)
        ops = [Op("t_share_gmpy2", lambda: gmpy2.powmod_sec(self._xms[self._next()], e, n))]
        bare = self._bare
        if bare is not None:
            ops.append(Op("t_share_openssl", lambda: bare(self._next())))
        ops += [
            Op(
                "openssl_sign", lambda: self._key.sign(self._digests[self._next()], pkcs, prehashed)
            ),
        ]
        if proofs:
            ops += [
                Op(
                    "t_share_proof",
                    lambda: self._share.signature_share(self._xs[self._next()], proof=True),
                ),
                Op("t_verify", self._verify),
            ]
        return ops

    @property
    def backends(self) -> list[str]:
        """The backends whose T_share this machine can measure."""
        return ["openssl", "gmpy2"] if self._bare is not None else ["gmpy2"]

    def close(self) -> None:
        if self._bare is not None:
            self._bare.close()
            self._bare = None

    def measure(self, rounds: int, proofs: bool) -> dict[str, list[float]]:
        """Seconds per call of each operation over ``rounds`` interleaved rounds: CPU time
        of this thread (``<name>``; what the bound needs, and blind to other processes
        taking the core away) and wall time (``<name>_wall``)."""
        ops = self.ops(proofs)
        micro.calibrate(ops, 0.002)
        samples = measure_cpu_interleaved(ops, rounds)
        samples["openssl_threads_per_s"] = [self.openssl_rate(self.cores, 0.15)]
        return samples

    def openssl_rate(self, threads: int, seconds: float) -> float:
        """Signatures per second of single-key OpenSSL with ``threads`` threads at once."""
        sha = hashes.SHA256()
        pkcs = padding.PKCS1v15()
        key, digests = self._key, self._digests
        stop = time.perf_counter() + seconds
        barrier = threading.Barrier(threads)

        def work() -> int:
            barrier.wait()
            done = 0
            while time.perf_counter() < stop:
                key.sign(digests[done % self.POOL], pkcs, Prehashed(sha))
                done += 1
            return done

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(lambda _: work(), range(threads)))
        return total / (time.perf_counter() - start)


def measure_cpu_interleaved(ops: Sequence[Op], rounds: int) -> dict[str, list[float]]:
    """Like :func:`benchmarks.micro.measure_interleaved` (same rotation, garbage
    collector between rounds only), timing each sample in thread CPU time and wall time."""
    samples: dict[str, list[float]] = {}
    for op in ops:
        samples[op.name] = []
        samples[op.name + "_wall"] = []
    ops = list(ops)
    enabled = gc.isenabled()
    try:
        for r in range(rounds):
            gc.collect()
            gc.disable()
            shift = r % len(ops)
            for op in ops[shift:] + ops[:shift]:
                call, count = op.call, op.inner
                wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(count):
                    call()
                cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
                samples[op.name].append(cpu / count / 1e9)
                samples[op.name + "_wall"].append(wall / count / 1e9)
            if enabled:
                gc.enable()
    finally:
        if enabled:
            gc.enable()
    return samples


def _exponentiation(backend: str, modulus: int, exponent: int) -> Callable[[], object]:
    """One share-sized constant-time exponentiation under ``backend``, ready to call."""
    n, e = mpz(modulus), mpz(exponent)
    x = mpz(secrets.randbelow(modulus - 2) + 2)
    if backend == "openssl":
        lib = micro._load_libcrypto()
        if lib is None:
            raise RuntimeError("libcrypto does not load")
        bare = micro.BareOpenSSL(lib, [x], e, n)
        return lambda: bare(0)
    return lambda: gmpy2.powmod_sec(x, e, n)


def _makespan_worker(
    backend: str, modulus: int, exponent: int, go: Any, done: Any, out: Any
) -> None:
    """One of k processes that each make one share-sized exponentiation when told to."""
    exponentiate = _exponentiation(backend, modulus, exponent)
    while True:
        go.wait()
        if done.is_set():
            return
        cpu = time.thread_time()
        exponentiate()
        out.put((time.perf_counter(), time.thread_time() - cpu))
        while go.is_set() and not done.is_set():
            time.sleep(0.0002)


def parallel_makespan(
    params: PublicParams, exponent_bits: int, processes: int, rounds: int, backend: str
) -> tuple[list[float], list[float]]:
    """Seconds from "go" until ``processes`` processes (idle until then) have each made
    one share-sized exponentiation under ``backend``: the compute floor of a lone
    signature, ``k`` nodes computing their shares at once, on this machine's scheduler.
    Also the CPU seconds each of those exponentiations took (k at once on these cores
    cost more each than one alone: shared caches, sibling hyperthreads)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    go, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    exponent = int(micro._random_exponent(exponent_bits))
    workers = [
        ctx.Process(
            target=_makespan_worker,
            args=(backend, params.modulus, exponent, go, done, out),
            daemon=True,
        )
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    spans: list[float] = []
    cpus: list[float] = []
    try:
        time.sleep(0.3)
        for r in range(rounds + 2):
            start = time.perf_counter()
            go.set()
            ends = [out.get(timeout=30) for _ in workers]
            go.clear()
            if r >= 2:
                spans.append(max(end for end, _ in ends) - start)
                cpus.extend(cpu for _, cpu in ends)
            time.sleep(0.02)  # idle, as between a lone caller's signatures
    finally:
        done.set()
        go.set()
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
    return spans, cpus


def bound_per_s(
    cores: int,
    k: int,
    t_share: float,
    proofs: bool,
    t_share_proof: float | None = None,
    t_verify: float | None = None,
) -> float:
    """``cores / (k·T_share)``; with proofs ``cores / (k·(T_share + T_prove) + k·T_verify)``
    where ``T_share + T_prove`` is a share with its proof (fresh nonce)."""
    if not proofs:
        return cores / (k * t_share)
    assert t_share_proof is not None and t_verify is not None
    return cores / (k * t_share_proof + k * t_verify)


def audit_fsync_seconds(directory: pathlib.Path, rounds: int) -> list[float]:
    """Seconds to append one audit-sized line to a file in ``directory`` (where the nodes'
    audit logs are) and fsync it, ``rounds`` times: the part of a lone signature's floor
    that is the node's durable audit record (it answers only once that is done)."""
    line = (b"x" * (AUDIT_LINE_BYTES - 1)) + b"\n"
    fd, name = tempfile.mkstemp(prefix=".fsync-probe-", dir=directory)
    times = []
    try:
        os.write(fd, line)
        os.fsync(fd)
        for _ in range(rounds):
            start = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
            time.sleep(0.005)  # idle between writes, as between a lone caller's requests
    finally:
        os.close(fd)
        os.unlink(name)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)

"""Where a node's exponentiations run: threads in the daemon, or worker processes.

The event loop never does a big exponentiation. A batch is cut into at most one chunk
per thread (or worker) and each chunk is one task, so the Python cost per signature is
the loop body in :func:`sign_chunk` (a ``gcd`` check, the share, ``to_bytes``) rather
than a future and a thread hop per item.

* ``workers == 0``: a :class:`~concurrent.futures.ThreadPoolExecutor`; every thread lets
  gmpy2 drop the GIL (:func:`ittc.scheme.ct.release_gil`), so ``powmod_sec`` calls run
  in parallel on all cores.
* ``workers > 0``: a spawn-context :class:`~concurrent.futures.ProcessPoolExecutor`.
  Each worker receives the public parameters, the node index and the raw share (from
  :meth:`KeyShare.dangerously_export_secret`) once, through the pipe that starts it;
  this is the only place the share leaves the daemon process. It also receives the
  exponentiation backend the daemon settled on (:mod:`ittc.scheme.ct`), asks for it by
  name and self-tests it; a worker that cannot use it does not start.

While no signing work is waiting, a background thread (one per worker process) keeps
proof nonces ``(r, v^r)`` precomputed, so a request with proofs costs one exponentiation
less.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ittc.errors import ComputeError, IttcError
from ittc.scheme import ct
from ittc.scheme.ct import release_gil
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.wire.codec import ShareBytes, share_to_wire

__all__ = [
    "Compute",
    "ComputeError",
    "ProcessCompute",
    "ThreadCompute",
    "make_compute",
    "sign_chunk",
]

log = logging.getLogger("ittc_node.compute")


def sign_chunk(share: KeyShare, xs: Sequence[int], with_proofs: bool) -> list[ShareBytes]:
    """Shares of ``xs`` as wire bytes (:func:`ittc.wire.codec.share_to_wire`)."""
    params = share.params
    return [share_to_wire(share.signature_share(x, proof=with_proofs), params) for x in xs]


class _NonceKeeper:
    """Keeps ``target`` proof nonces ready, computing them only while no work is pending."""

    def __init__(self, share: KeyShare, target: int) -> None:
        self.share = share
        self.target = target
        self.work = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.target > 0:
            self._thread = threading.Thread(target=self._run, name="ittc-nonces", daemon=True)
            self._thread.start()

    def busy(self, items: int) -> None:
        with self._cond:
            self.work += items

    def idle(self, items: int) -> None:
        with self._cond:
            self.work -= items
            if self.work == 0:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _needed(self) -> bool:
        return self.work == 0 and self.share.precomputed_nonces < self.target

    def _run(self) -> None:
        release_gil()
        while True:
            with self._cond:
                while not self._stopped and not self._needed():
                    self._cond.wait()
                if self._stopped:
                    return
            self.share.precompute_nonces(1)


def _call_with(function: Callable[[int], None], items: int, _future: object) -> None:
    """A done-callback that reports how many items finished."""
    function(items)


def _chunks(xs: Sequence[int], parts: int) -> list[Sequence[int]]:
    parts = max(1, min(parts, len(xs)))
    size, extra = divmod(len(xs), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(xs[start:end])
        start = end
    return out


class Compute:
    """Signs batches off the event loop and counts the items waiting."""

    parallelism: int = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None

    @property
    def pending(self) -> int:
        """Items submitted and not yet finished (including ones whose caller gave up)."""
        return self._pending

    async def start(self) -> None:
        """Bring the pool up and check it signs correctly."""

    async def close(self) -> None:
        """Stop the pool; running chunks finish, queued ones are dropped."""

    def _submit(self, chunk: Sequence[int], with_proofs: bool) -> Future[list[ShareBytes]]:
        raise NotImplementedError

    def _finished(self, items: int) -> None:
        with self._lock:
            self._pending -= items

    async def sign(self, xs: Sequence[int], with_proofs: bool) -> list[ShareBytes]:
        """The shares of ``xs`` in order. Cancelling drops the chunks not yet started."""
        if self.failure is not None:
            raise ComputeError(self.failure)
        futures: list[Future[list[ShareBytes]]] = []
        try:
            for chunk in _chunks(xs, self.parallelism):
                with self._lock:
                    self._pending += len(chunk)
                try:
                    future = self._submit(chunk, with_proofs)
                except BaseException:
                    self._finished(len(chunk))
                    for f in futures:
                        f.cancel()
                    raise
                future.add_done_callback(functools.partial(_call_with, self._finished, len(chunk)))
                futures.append(future)
            parts = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except BrokenProcessPool:
            self._fail("a worker process died")
            raise ComputeError("a worker process died") from None
        if len(parts) == 1:
            return parts[0]
        return [share for part in parts for share in part]

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("compute: %s; refusing to sign until restarted", reason)
            if self.on_failure is not None:
                self.on_failure(reason)


class ThreadCompute(Compute):
    """Threads in the daemon process; gmpy2 releases the GIL for the exponentiations."""

    def __init__(self, share: KeyShare, threads: int, proof_nonces: int) -> None:
        super().__init__()
        self.share = share
        self.parallelism = threads
        self._keeper = _NonceKeeper(share, proof_nonces)
        self._executor = ThreadPoolExecutor(
            threads, thread_name_prefix="ittc-sign", initializer=release_gil
        )

    async def start(self) -> None:
        self._keeper.start()

    def _submit(self, chunk: Sequence[int], with_proofs: bool) -> Future[list[ShareBytes]]:
        self._keeper.busy(len(chunk))
        future = self._executor.submit(sign_chunk, self.share, chunk, with_proofs)
        future.add_done_callback(functools.partial(_call_with, self._keeper.idle, len(chunk)))
        return future

    @property
    def precomputed_nonces(self) -> int:
        return self.share.precomputed_nonces

    async def close(self) -> None:
        self._keeper.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- worker processes ----------------------------------------------------------------

_WORKER: tuple[KeyShare, _NonceKeeper] | None = None


def _worker_init(
    params_json: str, index: int, secret: int, nonce_target: int, backend: str
) -> None:
    """Runs once in each worker process: the daemon's backend, the share, the nonce keeper."""
    global _WORKER
    # The daemon decides when workers stop; a terminal's Ctrl-C or a stray SIGTERM to the
    # process group must not kill them under a request in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    release_gil()
    ct.use_backend(backend)
    share = KeyShare(PublicParams.from_json(params_json), index, secret)
    keeper = _NonceKeeper(share, nonce_target)
    keeper.start()
    _WORKER = (share, keeper)


def _exit_with_parent() -> None:
    """A worker holds the share: it must not outlive the daemon, even one killed -9."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch(sentinel: int) -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(0)

    threading.Thread(
        target=watch, args=(parent.sentinel,), name="ittc-parent-watch", daemon=True
    ).start()


def _worker_self_test() -> tuple[int, str]:
    assert _WORKER is not None
    _WORKER[0].self_test()
    return os.getpid(), ct.backend()


def _worker_sign(xs: Sequence[int], with_proofs: bool) -> list[ShareBytes]:
    assert _WORKER is not None
    share, keeper = _WORKER
    keeper.busy(len(xs))
    try:
        return sign_chunk(share, xs, with_proofs)
    finally:
        keeper.idle(len(xs))


class ProcessCompute(Compute):
    """``workers`` spawned processes, each holding a copy of the share."""

    def __init__(self, share: KeyShare, workers: int, proof_nonces: int) -> None:
        super().__init__()
        self.parallelism = workers
        per_worker = math.ceil(proof_nonces / workers) if proof_nonces else 0
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(
                share.params.to_json(),
                share.index,
                share.dangerously_export_secret(),
                per_worker,
                ct.backend(),
            ),
        )
        self.backend = ct.backend()

    async def start(self) -> None:
        # With the spawn context the pool starts a process per task submitted while none
        # is idle, so ``parallelism`` tasks at once start every worker; each checks its
        # copy of the share.
        try:
            started = await asyncio.gather(
                *(
                    asyncio.wrap_future(self._executor.submit(_worker_self_test))
                    for _ in range(self.parallelism)
                )
            )
        except BrokenProcessPool:
            raise ComputeError("worker processes failed to start") from None
        except IttcError as exc:  # a worker's self-test (a backend that answers wrongly)
            raise ComputeError(f"a worker process failed its self-test: {exc}") from None
        others = sorted({backend for _, backend in started} - {self.backend})
        if others:
            raise ComputeError(
                f"worker processes use the {', '.join(others)} backend, the daemon {self.backend}"
            )

    def _submit(self, chunk: Sequence[int], with_proofs: bool) -> Future[list[ShareBytes]]:
        return self._executor.submit(_worker_sign, list(chunk), with_proofs)

    async def close(self) -> None:
        executor: Executor = self._executor
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: executor.shutdown(wait=True, cancel_futures=True)
        )


def default_threads() -> int:
    """Cores this process may run on (the affinity mask, not just the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def make_compute(share: KeyShare, *, workers: int, threads: int, proof_nonces: int) -> Compute:
    """The pool a node's config asks for."""
    if workers > 0:
        return ProcessCompute(share, workers, proof_nonces)
    return ThreadCompute(share, threads or default_threads(), proof_nonces)

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
import contextlib
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
from typing import Any

from ittc.errors import ComputeError, IttcError
from ittc.scheme import ct
from ittc.scheme.ct import release_gil
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.wire.codec import ShareBytes, share_to_wire
from ittc_node.threadname import name_this_thread

__all__ = [
    "Commit",
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
            # Wake the thread only if it has nonces to make: a wake-up for nothing costs
            # a request a thread switch and a handover of the GIL.
            if self._needed():
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _needed(self) -> bool:
        return self.work == 0 and self.share.precomputed_nonces < self.target

    def _run(self) -> None:
        release_gil()
        name_this_thread()
        while True:
            with self._cond:
                while not self._stopped and not self._needed():
                    self._cond.wait()
                if self._stopped:
                    return
            self.share.precompute_nonces(1)


def _sign_thread_init() -> None:
    release_gil()
    name_this_thread()


def _call_with(function: Callable[[int], None], items: int, _future: object) -> None:
    """A done-callback that reports how many items finished."""
    function(items)


#: What a request does once its shares exist, before the event loop hears of it: called
#: in the thread that finished them (under the request's lock: it must only hand work
#: on), with a function to call (from any thread) once that work is done, given the error
#: if it failed. It may return work for that same thread to do at once, after the lock is
#: released. The node queues its audit record here (or, when nothing else is waiting,
#: returns the writing of it), so a lone request wakes the event loop once, when the
#: record is durable, and wakes no other thread.
Commit = Callable[[Callable[[BaseException | None], None]], Callable[[], None] | None]


class _Request:
    """One request's chunks, gathered in the threads that finish them; the event loop is
    told once, when every share exists (and the commit, if any, is done) or one failed.

    The deadline and the caller's cancellation end the request only while its shares are
    being computed; once they exist (the commit started) the request runs to the end.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        parts: int,
        commit: Commit | None,
        fail: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self.result: asyncio.Future[list[ShareBytes]] = loop.create_future()
        self._commit = commit
        self._fail = fail
        self._lock = threading.Lock()
        self._parts: list[list[ShareBytes] | None] = [None] * parts
        self._missing = parts
        #: "computing", then "done" (shares or an error), or "abandoned".
        self._state = "computing"

    def chunk_done(
        self,
        position: int,
        finished: Callable[[int], None],
        items: int,
        future: Future[list[ShareBytes]],
    ) -> None:
        """A chunk's done-callback, in the thread that finished (or cancelled) it."""
        finished(items)
        with self._lock:
            if self._state != "computing" or future.cancelled():
                return
            error = future.exception()
            if error is None:
                self._parts[position] = future.result()
                self._missing -= 1
                if self._missing:
                    return
            self._state = "done"
            shares: list[ShareBytes] | None = None
            if error is None:
                parts = [part for part in self._parts if part is not None]
                shares = parts[0] if len(parts) == 1 else [s for part in parts for s in part]
            commit = self._commit if error is None else None
            # Under the lock: a cancellation either stopped the request before this, or
            # finds its commit started (abandon() is False).
            then = commit(lambda e: self._call(self._settle, e, shares)) if commit else None
        if commit is not None:
            if then is not None:
                then()  # outside the lock: a cancellation on the loop waits for no disk
            return
        if isinstance(error, BrokenProcessPool):
            self._call(self._broken)
        elif error is not None:
            self._call(self._settle, error, None)
        else:
            self._call(self._settle, None, shares)

    def abandon(self) -> bool:
        """Stop the request if its shares are still being computed (on the loop)."""
        with self._lock:
            if self._state == "computing":
                self._state = "abandoned"
                return True
            return False

    def expire(self) -> None:
        """The deadline (a timer on the loop): fails the request unless its shares exist."""
        if self.abandon():
            self._settle(TimeoutError(), None)

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(function, *args)

    def _settle(self, error: BaseException | None, shares: list[ShareBytes] | None) -> None:
        if self.result.done():
            return
        if error is not None:
            self.result.set_exception(error)
        else:
            assert shares is not None
            self.result.set_result(shares)

    def _broken(self) -> None:
        self._fail("a worker process died")
        self._settle(ComputeError("a worker process died"), None)


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

    async def sign(
        self,
        xs: Sequence[int],
        with_proofs: bool,
        *,
        commit: Commit | None = None,
        timeout: float | None = None,
    ) -> list[ShareBytes]:
        """The shares of ``xs`` in order, once ``commit`` (if given) is done too.

        Raises :class:`TimeoutError` if the shares are not all computed within
        ``timeout`` seconds; that, or cancelling, drops the chunks not yet started. Once
        the shares exist, ``commit`` runs to its end even if the caller is cancelled.
        The threads (or, for worker processes, the pool's result thread) report back
        with one ``call_soon_threadsafe``: a lone request wakes the event loop once.
        """
        if self.failure is not None:
            raise ComputeError(self.failure)
        loop = asyncio.get_running_loop()
        chunks = _chunks(xs, self.parallelism)
        request = _Request(loop, len(chunks), commit, self._fail)
        futures: list[Future[list[ShareBytes]]] = []
        timer = None
        try:
            for position, chunk in enumerate(chunks):
                with self._lock:
                    self._pending += len(chunk)
                try:
                    future = self._submit(chunk, with_proofs)
                except BaseException:
                    self._finished(len(chunk))
                    request.abandon()
                    raise
                futures.append(future)
                future.add_done_callback(
                    functools.partial(request.chunk_done, position, self._finished, len(chunk))
                )
            if timeout is not None:
                timer = loop.call_later(timeout, request.expire)
            return await request.result
        except asyncio.CancelledError:
            request.abandon()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            result = request.result
            if not result.done() or result.cancelled() or result.exception() is not None:
                for f in futures:  # a no-op for chunks already finished
                    f.cancel()

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
            threads, thread_name_prefix="ittc-sign", initializer=_sign_thread_init
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
    name_this_thread("ittc-worker")
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

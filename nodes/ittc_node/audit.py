"""The node's audit log: append-only JSON lines, hash-chained, fsynced before answering.

Every line is one JSON object with a ``"prev"`` field: the hex SHA-256 of the previous
line's bytes (without its newline). The first line's ``prev`` is the SHA-256 of a fixed
genesis string followed by the node's key id, and that first line names the key id, so
a log cannot be moved to another key unnoticed. Editing, inserting, reordering or
deleting a line breaks the chain at the line after it; :func:`verify_audit_log` names
the first bad line. A chain alone cannot show that lines were cut off the *end*: copy
the last line's hash (:func:`audit_log_head`) somewhere else now and then, or ship the
log to a remote store, to catch that too.

Writes are group-committed: one writer thread takes every line queued while the
previous ``write + fsync`` ran and writes them with one more ``write + fsync``, so many
concurrent requests cost few fsyncs, and answers their callers with one wake-up of the
event loop. A request is answered only after its line is on
disk; if writing ever fails the log stays failed and the node refuses to sign until it
is restarted. A failed write or fsync is cut back to the end of the last acknowledged
line (never further), so the log a restart finds is whole and verifies: the documented
recovery from a full disk is "free space, restart".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import shlex
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ittc.errors import AuditLogError
from ittc.storage.files import fsync_dir
from ittc_node.threadname import name_this_thread

__all__ = [
    "AuditChainBroken",
    "AuditLog",
    "GENESIS",
    "audit_log_head",
    "genesis_hash",
    "utc_iso",
    "verify_audit_log",
]

log = logging.getLogger("ittc_node.audit")

#: Hashed with the key id and the node index to make the first line's ``prev``.
GENESIS = b"ittc/v2/audit-log\x00"
#: Logs started before the node index was bound hash the key id only; they still verify,
#: and a node continues one only if its first line names that node (it always did).
GENESIS_V1 = b"ittc/v1/audit-log\x00"
#: A line longer than this is not one the node wrote (a refused request's items are
#: truncated well below it).
MAX_LINE_BYTES = 16 << 20
_MAX_NODE = 1 << 16
_TAIL_BLOCK = 64 << 10


def genesis_hash(key_id: str, node: int) -> str:
    """``prev`` of a log's first line: binds the key id and the node index."""
    return hashlib.sha256(GENESIS + key_id.encode("ascii") + b"\x00%d" % node).hexdigest()


def _genesis_hash_v1(key_id: str) -> str:
    return hashlib.sha256(GENESIS_V1 + key_id.encode("ascii")).hexdigest()


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def utc_iso(timestamp: float) -> str:
    """Seconds since the epoch as UTC ISO 8601 with milliseconds."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(record: dict[str, Any]) -> bytes:
    # ensure_ascii: a caller's string can never smuggle a newline or odd bytes in.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class AuditChainBroken(AuditLogError):
    """The log fails verification: evidence that it was altered or damaged."""


class _Broken(Exception):
    """Where a log's chain fails: the 1-based line number and what is wrong with it."""

    def __init__(self, number: int, problem: str, chain: bool = False) -> None:
        super().__init__(problem)
        self.number, self.problem, self.chain = number, problem, chain


def _parse_line(number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        raise _Broken(number, "not a JSON object") from None
    if not isinstance(record, dict) or not isinstance(record.get("prev"), str):
        raise _Broken(number, 'not an audit record (no "prev" hash)')
    return record


def _check_first(record: dict[str, Any]) -> tuple[str, int]:
    """The key id and node index the first line names, and starts the chain with."""
    key_id, node = record.get("key_id"), record.get("node")
    if not isinstance(key_id, str) or not key_id.isascii():
        raise _Broken(1, "does not name the node's key id")
    if not isinstance(node, int) or isinstance(node, bool) or not 1 <= node <= _MAX_NODE:
        node = 0  # not a node's log: no genesis matches (reported as such below)
    if node == 0 or record["prev"] not in (genesis_hash(key_id, node), _genesis_hash_v1(key_id)):
        raise _Broken(
            1, "does not start the hash chain (lines were deleted before it, or it was edited)"
        )
    return key_id, node


@dataclass
class _Walked:
    """What reading a whole, intact log found."""

    lines: int = 0
    #: Bytes up to the end of the last complete line.
    end: int = 0
    #: The last line, without its newline.
    last: bytes | None = None
    #: The key id and node index line 1 names.
    key_id: str | None = None
    node: int | None = None
    #: Requests whose shares were computed (signed, or cancelled after that) and that are
    #: dated at or after ``recent_since_ms``: (request_id, timestamp_ms, client).
    recent: list[tuple[str, int, str | None]] = field(default_factory=list)


#: Outcomes of requests whose id was spent and whose shares were (or may have been)
#: computed: after a restart their ids are remembered again.
_SPENT_OUTCOMES = ("signed", "cancelled")


def _walk_chain(
    fh: BinaryIO, recent_since_ms: float | None = None, *, path: str = "FILE"
) -> _Walked:
    """Check a whole log from its start. Raises :class:`_Broken` at the first bad line.

    With ``recent_since_ms``, also collect the requests dated since then whose shares
    were computed (see :attr:`_Walked.recent`)."""
    walked = _Walked()
    number = 0
    previous: bytes | None = None
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            walked.lines, walked.last = number, previous
            return walked
        number += 1
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE_BYTES:
                raise _Broken(number, "too long")
            raise _Broken(
                number,
                "incomplete (no newline: a write was cut short); the "
                f"complete lines end at byte {walked.end}: keep a copy of the log "
                "as evidence, then cut the rest with "
                f"`truncate -s {walked.end} {shlex.quote(path)}`",
            )
        walked.end += len(line)
        line = line[:-1]
        record = _parse_line(number, line)
        if previous is None:
            walked.key_id, walked.node = _check_first(record)
        elif record["prev"] != _line_hash(previous):
            raise _Broken(
                number,
                f"hash chain broken (line {number - 1} was edited, or "
                "lines were deleted or inserted here)",
                chain=True,
            )
        if recent_since_ms is not None and record.get("outcome") in _SPENT_OUTCOMES:
            request_id, timestamp_ms = record.get("request_id"), record.get("timestamp_ms")
            client = record.get("client")
            if (
                isinstance(request_id, str)
                and type(timestamp_ms) is int
                and timestamp_ms >= recent_since_ms
            ):
                walked.recent.append(
                    (request_id, timestamp_ms, client if isinstance(client, str) else None)
                )
        previous = line


def verify_audit_log(path: str | os.PathLike[str]) -> int:
    """Check the whole hash chain; return the number of lines.

    Raises :class:`AuditChainBroken` naming the first bad line (1-based): a line that is
    not JSON, does not end in a newline, or whose ``prev`` is not the hash of the line
    before it (an edited, inserted or deleted line); :class:`AuditLogError` if the file
    cannot be read at all.
    """
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise AuditLogError(f"{os.fspath(path)}: cannot read: {exc.strerror}") from None
    with fh:
        try:
            return _walk_chain(fh, path=os.fspath(path)).lines
        except _Broken as broken:
            raise AuditChainBroken(
                f"{os.fspath(path)}: line {broken.number}: {broken.problem}"
            ) from None
        except OSError as exc:
            raise AuditLogError(f"{os.fspath(path)}: cannot read: {exc.strerror}") from None


def audit_log_head(path: str | os.PathLike[str]) -> str:
    """Hash of the log's last line: record it elsewhere to detect a truncated log later."""
    with open(path, "rb") as fh:
        lines = _tail_lines(fh.fileno(), os.fstat(fh.fileno()).st_size, 1)
    return _line_hash(lines[-1]) if lines else ""


def _tail_lines(fd: int, size: int, count: int) -> list[bytes]:
    """The last ``count`` complete lines (without newlines), reading backwards in blocks."""
    if size == 0:
        return []
    data = b""
    pos = size
    while pos > 0 and data.count(b"\n") <= count and len(data) <= (count + 1) * MAX_LINE_BYTES:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
    if not data.endswith(b"\n"):
        raise AuditLogError("the last line is incomplete (no newline: a write was cut short)")
    lines = data[:-1].split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may be a partial line
    return lines[-count:]


#: Who waits for a record: a future of the event loop, or a function called in the writer
#: thread with the error (None once the record is durable).
_Waiter = asyncio.Future[None] | Callable[[BaseException | None], None]


def _open_for_append(where: str) -> int:
    """A descriptor appending to ``where`` (created 0600), never following a symlink."""
    # O_NONBLOCK: opening a FIFO planted at the path must fail, not wait for a reader.
    flags = (
        os.O_WRONLY
        | os.O_APPEND
        | os.O_CREAT
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
    )
    try:
        return os.open(where, flags, 0o600)
    except OSError as exc:
        raise AuditLogError(
            f"audit log {where}: cannot open for appending: {exc.strerror}"
        ) from None


def _check_mode(where: str, fd: int, st: os.stat_result) -> None:
    """A regular file, not writable by group or others; blocking writes from now on."""
    if not stat.S_ISREG(st.st_mode):
        raise AuditLogError(f"audit log {where}: not a regular file")
    if hasattr(os, "O_NONBLOCK"):
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    if st.st_mode & 0o022:
        raise AuditLogError(
            f"audit log {where}: writable by group or other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 {where}"
        )


def _continue_chain(
    where: str, key_id: str, node: int, size: int, recent_since_ms: float | None
) -> tuple[str, _Walked]:
    """(hash to chain the next line to, what the log holds) for an existing log."""
    if size == 0:
        return genesis_hash(key_id, node), _Walked()
    try:
        fh = open(where, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise AuditLogError(f"audit log {where}: cannot read: {exc.strerror}") from None
    with fh:
        try:
            walked = _walk_chain(fh, recent_since_ms, path=os.fspath(where))
        except _Broken as broken:
            if broken.chain:
                raise AuditLogError(
                    f"audit log {where}: line {broken.number} does not chain to the line "
                    f"before it (the log was altered); keep it as evidence, check it with "
                    "`ittc audit verify`, and start the node with a new log"
                ) from None
            raise AuditLogError(
                f"audit log {where}: line {broken.number}: {broken.problem}"
            ) from None
    if walked.key_id != key_id:
        raise AuditLogError(
            f"audit log {where}: belongs to key {str(walked.key_id)[:16]}, "
            f"not to this node's key {key_id[:16]}"
        )
    if walked.node != node:
        raise AuditLogError(
            f"audit log {where}: belongs to node {walked.node}, not to this node ({node})"
        )
    assert walked.last is not None
    return _line_hash(walked.last), walked


class AuditLog:
    """One node's audit log, open for appending.

    :meth:`open` checks the existing file (mode, and its whole hash chain) and never
    writes; :meth:`start` launches the writer thread; :meth:`append` returns once the
    record is durable or raises :class:`AuditLogError`. Once started, the writer thread
    alone touches the file and the chain.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str,
        fd: int,
        key_id: str,
        node: int,
        prev: str,
        created: bool,
        lines: int,
        recent: list[tuple[str, int, str | None]] | None = None,
        size: int = 0,
    ) -> None:
        self.path = os.fspath(path)
        self.key_id = key_id
        self.node = node
        self.created = created
        #: Lines in the file when it was opened (so: does the node know its history?).
        self.opened_lines = lines
        #: Lines in the file when it was opened plus lines written since.
        self.lines = lines
        #: Requests of earlier runs that may still be fresh and whose shares were computed:
        #: (request_id, timestamp_ms, client). The replay memory lost in a restart is
        #: rebuilt from them (see the service).
        self.recent = recent or []
        self._fd = fd
        self._prev = prev
        #: The file's length up to the last acknowledged (written and fsynced) line: after
        #: a failed write or fsync the file is cut back to it, never shorter.
        self._acked = size
        #: Records waiting for the writer thread, and what guards them.
        self._queue: list[tuple[dict[str, Any], _Waiter]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self._discarding = False
        #: A write is under way (the writer thread's, or a caller's: append_threadsafe).
        self._writing = False
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        #: Called with the seconds each write and fsync took (from the writer's thread).
        self.on_sync: Callable[[float], None] | None = None
        self.fsyncs = 0

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: os.PathLike[str] | str,
        key_id: str,
        node: int,
        *,
        recent_since_ms: float | None = None,
    ) -> AuditLog:
        """Open (or create, mode 0600) the log at ``path`` of node ``node`` of key ``key_id``.

        An existing log must be a regular file not writable by group or others, start
        with this key's and this node's chain, and verify to its last line, which must be
        complete: the node does not extend a chain that is already broken. That reads the
        whole log (about a second per 100 MB): rotate logs (nodes/README.md). Nothing is
        written. With ``recent_since_ms``, :attr:`recent` lists the requests dated since
        then whose shares were computed.
        """
        where = os.fspath(path)
        existed = os.path.lexists(where)
        fd = _open_for_append(where)
        try:
            st = os.fstat(fd)
            _check_mode(where, fd, st)
            prev, walked = _continue_chain(where, key_id, node, st.st_size, recent_since_ms)
            if not existed:
                _fsync_dir(os.path.dirname(os.path.abspath(where)))
        except BaseException:
            os.close(fd)
            if not existed:
                _unlink_quietly(where)
            raise
        return cls(
            where,
            fd,
            key_id,
            node,
            prev,
            not existed,
            walked.lines,
            walked.recent,
            size=st.st_size,
        )

    # -- writing -----------------------------------------------------------------------

    def start(self) -> None:
        """Launch the writer thread; records are answered on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._write_loop, name="ittc-audit", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self.failure is None and not self._closing

    async def append(self, record: dict[str, Any]) -> None:
        """Queue ``record`` (a fresh dict, handed over: ``prev`` is added) and wait until it
        is durable."""
        # If the caller is cancelled the line is still written: only the wait ends.
        await self.submit(record)

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue ``record`` now, without waiting (for a caller that is being cancelled):
        the future is done once the line is durable, or has the error."""
        if self.failure is not None:
            raise AuditLogError(f"audit log {self.path}: unavailable ({self.failure})")
        if self._closing or self._loop is None:
            raise AuditLogError(f"audit log {self.path}: closed")
        future: asyncio.Future[None] = self._loop.create_future()
        with self._cond:
            self._queue.append((record, future))
            self._cond.notify()
        return future

    def append_threadsafe(
        self,
        record: dict[str, Any],
        done: Callable[[BaseException | None], None],
        *,
        here: bool = False,
    ) -> Callable[[], None] | None:
        """From any thread: queue ``record`` (handed over, like :meth:`append`); ``done`` is
        called with ``None`` once it is durable, or with the :class:`AuditLogError` (at
        once, in this thread, if the log cannot take it).

        With ``here``, when no write is under way and nothing else waits, the caller may
        write the record itself: then a function is returned, to be called from the
        caller's thread (holding no lock others wait for), that writes and fsyncs it and
        calls ``done``; that saves waking the writer thread. Otherwise (None) the writer
        thread writes it, with whatever else is queued, and calls ``done`` there."""
        with self._cond:
            if self.failure is None and not self._closing:
                self._queue.append((record, done))
                if here and not self._writing and len(self._queue) == 1 and self._thread:
                    self._writing = True
                    return self._write_here
                self._cond.notify()
                return None
        done(
            self._unavailable() if self.failure else AuditLogError(f"audit log {self.path}: closed")
        )
        return None

    def _write_here(self) -> None:
        """Write what is queued from the calling thread (see :meth:`append_threadsafe`)."""
        with self._cond:
            batch, self._queue = self._queue, []
        error: Exception | None = None
        try:
            error = self._write_batch(batch)
        finally:
            with self._cond:
                self._writing = False
                if self._queue or self._closing:
                    self._cond.notify()
        self._answer(batch, error)

    def _write_loop(self) -> None:
        """The writer thread: everything queued while the last write ran goes out in one
        ``write + fsync``; the waiting callers are answered with one wake-up of the loop."""
        name_this_thread()
        while True:
            with self._cond:
                while self._writing or (not self._queue and not self._closing):
                    self._cond.wait()
                if self._discarding or (self._closing and not self._queue):
                    dropped, self._queue = self._queue, []
                    break
                batch, self._queue = self._queue, []
                self._writing = True
            error: Exception | None = None
            try:
                error = self._write_batch(batch)
            finally:
                with self._cond:
                    self._writing = False
            # (answered once the next write may start: a caller told now finds the log idle)
            self._answer(batch, error)
        self._answer(dropped, AuditLogError(f"audit log {self.path}: closed"))
        self._call_on_loop(_set_result, self._stopped, None)

    def _write_batch(self, batch: list[tuple[dict[str, Any], _Waiter]]) -> Exception | None:
        """Chain, write and fsync ``batch`` (one write at a time: the caller holds
        ``_writing``); the error to answer its writers with, None once it is durable."""
        if self.failure is not None:  # queued after the log failed
            return self._unavailable()
        prev = self._prev
        lines = []
        if self._acked == 0:
            # A log's first line names what its chain is bound to.
            batch[0][0].update(key_id=self.key_id, node=self.node)
        for record, _ in batch:
            record["prev"] = prev
            line = _dumps(record)
            prev = _line_hash(line)
            lines.append(line)
        try:
            self._write_sync(b"\n".join(lines) + b"\n")
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror or exc}")
            return self._unavailable()
        self._prev = prev
        self.lines += len(batch)
        return None

    def _unavailable(self) -> AuditLogError:
        return AuditLogError(f"audit log {self.path}: unavailable ({self.failure})")

    def _answer(self, batch: list[tuple[dict[str, Any], _Waiter]], error: Exception | None) -> None:
        """Tell the writers of ``batch``: the loop's waiters with one wake-up of the loop,
        the others (:meth:`append_threadsafe`) here."""
        futures = []
        for _, waiter in batch:
            if isinstance(waiter, asyncio.Future):
                futures.append(waiter)
            else:
                waiter(error)
        if futures:
            self._call_on_loop(_settle, futures, error)

    def _call_on_loop(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(function, *args)

    #: The system calls the writer makes (tests replace them to inject disk faults).
    _write = staticmethod(os.write)
    _fsync = staticmethod(os.fsync)

    def _write_sync(self, data: bytes) -> None:
        """Append ``data`` and fsync it; on failure, cut the file back to what was
        acknowledged before (so no torn or unacknowledged line stays), then raise."""
        started = time.perf_counter()
        try:
            view = memoryview(data)
            while view:
                view = view[self._write(self._fd, view) :]
            self._fsync(self._fd)
        except OSError:
            self._roll_back()
            raise
        self._acked += len(data)
        self.fsyncs += 1
        if self.on_sync is not None:
            self.on_sync(time.perf_counter() - started)

    def _roll_back(self) -> None:
        """Cut the file back to the last acknowledged line (:func:`_cut_back`)."""
        _cut_back(self._fd, self._acked, self.path)

    def _fail(self, reason: str) -> None:
        """The log failed (in the writer thread): it stays failed until the node restarts."""
        with self._cond:
            if self.failure is not None:
                return
            self.failure = reason
            # Anything queued behind the failed write fails too: the chain is now unknown.
            queued, self._queue = self._queue, []
        log.error("audit log %s: %s; refusing to sign until restarted", self.path, reason)
        self._answer(queued, self._unavailable())
        if self.on_failure is not None:
            self._call_on_loop(self.on_failure, reason)

    async def close(self) -> None:
        """Write what is queued, then close the file."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._stopped is not None:
            await self._stopped
        self.discard()

    def discard(self) -> None:
        """Close without writing anything more (startup failed)."""
        with self._cond:
            self._closing = True
            self._discarding = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()  # at most the write in progress: the file is closed after it
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.created and self.lines == 0:
            # Startup failed after creating an empty log: leave the disk as it was.
            _unlink_quietly(self.path)


def _cut_back(fd: int, acked: int, path: str) -> None:
    """Truncate the log open at ``fd`` to ``acked`` bytes, its last acknowledged line
    (only ever shorter: nothing that was acknowledged is rewritten). If even that fails,
    say how to do it by hand."""
    try:
        size = os.fstat(fd).st_size
        if size > acked:
            os.ftruncate(fd, acked)
            os.fsync(fd)
            log.error(
                "audit log %s: removed %d bytes of the failed write (the log ends "
                "with its last acknowledged line, at byte %d)",
                path,
                size - acked,
                acked,
            )
    except OSError as exc:
        log.error(
            "audit log %s: cannot remove the failed write (%s): before restarting, "
            "keep a copy of the log, then cut it with `truncate -s %d %s`",
            path,
            exc.strerror or exc,
            acked,
            path,
        )


def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    """On the loop: answer the callers still waiting."""
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _set_result(future: asyncio.Future[None] | None, value: None) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # best effort: the line itself is what is fsynced
        fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        if os.path.getsize(path) == 0:
            os.unlink(path)
    except OSError:
        pass

"""Starting, serving and stopping one node.

:func:`run` is the command-line entry point (``python -m ittc_node --config node.toml``
and ``ittc node --config node.toml``): it reads the config, the public parameters and
the passphrase, decrypts the share, self-tests it, and only then serves. Anything wrong
at startup is one line on stderr naming the file and the problem, exit status 2, and
nothing written or changed on disk.

:func:`serve` runs the gRPC server for an already-loaded share; tests embed it with an
injected clock. Health (``grpc.health.v1``, services ``""`` and ``ittc.v1.Signer``) is
NOT_SERVING until the node is ready, SERVING while it can sign, and NOT_SERVING again
when the audit log or the compute pool fails, when its certificate expires, and during
shutdown. A node whose certificate (or the CA's) is not valid now does not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import pathlib
import signal
import sys
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ittc import logs, storage
from ittc.config import NodeConfig
from ittc.errors import (
    AuditLogError,
    BackendError,
    ComputeError,
    IttcError,
    StartupError,
)
from ittc.scheme import ct
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import MIN_MODULUS_BITS, PublicParams
from ittc.version import __version__
from ittc.wire import codec, tls
from ittc_node import certwatch
from ittc_node.audit import AuditLog, utc_iso
from ittc_node.compute import Compute, make_compute
from ittc_node.epochs import ReshareSetup, start_epoch
from ittc_node.faults import ENABLE_VAR, FAULT_VAR, Faults
from ittc_node.identity import TlsIdentity, load_identity
from ittc_node.metrics import LiveState, NodeMetrics, instrument
from ittc_node.monitoring import MonitoringServer
from ittc_node.reload import Reloader
from ittc_node.replay import ReplayCache
from ittc_node.reshare import SERVICE_NAME as RESHARE_SERVICE
from ittc_node.reshare import Epoch, ReshareService
from ittc_node.sdnotify import Notifier
from ittc_node.service import SignerService

__all__ = ["StartupError", "load_node", "load_share", "read_passphrase", "run", "serve"]

log = logging.getLogger("ittc_node")

SERVICE_NAME = "ittc.v1.Signer"
#: Concurrent RPCs a node accepts before gRPC itself refuses with RESOURCE_EXHAUSTED.
MAX_CONCURRENT_RPCS = 512
#: Longest graceful shutdown: in-flight requests get this long to finish.
MAX_GRACE_SECONDS = 10.0
EXIT_OK, EXIT_FAILED, EXIT_STARTUP = 0, 1, 2


# -- startup -------------------------------------------------------------------------


def read_passphrase(config: NodeConfig) -> bytes:
    """The share's passphrase: from the systemd credential the config names (when systemd
    passed credentials), the configured file, the named environment variable, or the
    terminal; never from the command line."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if config.passphrase_credential is not None and credentials:
        path = pathlib.Path(credentials) / config.passphrase_credential
        if not path.exists():
            raise StartupError(
                f"{config.path}: key.passphrase_credential names "
                f"{config.passphrase_credential!r}, but systemd passed no such credential "
                f"(the unit needs LoadCredential={config.passphrase_credential}:FILE or "
                f"LoadCredentialEncrypted={config.passphrase_credential}:FILE)"
            )
        return storage.read_passphrase_file(path)
    if config.passphrase_file is not None:
        return storage.read_passphrase_file(config.passphrase_file)
    if config.passphrase_env is not None:
        value = os.environ.pop(config.passphrase_env, "")  # worker processes must not inherit it
        if not value:
            raise StartupError(
                f"{config.path}: key.passphrase_env names "
                f"${config.passphrase_env}, which is not set or empty"
            )
        return value.encode("utf-8")
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            entered = getpass.getpass(f"passphrase for {config.share_file}: ")
        except (EOFError, KeyboardInterrupt):
            entered = ""
        if not entered:
            raise StartupError(f"{config.share_file}: no passphrase entered")
        return entered.encode("utf-8")
    raise StartupError(
        f"{config.path}: no passphrase: set key.passphrase_file or "
        "key.passphrase_env, or start the node on a terminal"
    )


def _passphrase(config: NodeConfig) -> bytes:
    try:
        return read_passphrase(config)
    except OSError as exc:
        raise StartupError(
            f"{exc.filename or config.passphrase_file}: cannot read the "
            f"passphrase file: {exc.strerror}"
        ) from None
    except StartupError:
        raise
    except IttcError as exc:  # InsecureFileMode, an empty passphrase file
        raise StartupError(str(exc)) from None


def _use_backend(config: NodeConfig) -> None:
    try:
        ct.use_backend(config.backend)
    except BackendError as exc:
        raise StartupError(f"{config.path}: node.backend = {config.backend!r}: {exc}") from None


def load_share(config: NodeConfig) -> KeyShare:
    """Decrypt and self-test this node's share (nothing is written).

    Raises :class:`StartupError` naming the file at fault.
    """
    try:
        params = config.load_params()
    except IttcError as exc:
        raise StartupError(str(exc)) from None
    passphrase = _passphrase(config)
    try:
        share = storage.read_share_file(config.share_file, params, config.index, passphrase)
    except OSError as exc:
        raise StartupError(
            f"{config.share_file}: cannot read the share file: {exc.strerror}"
        ) from None
    except IttcError as exc:  # every ShareFileError names the file
        raise StartupError(str(exc)) from None
    finally:
        del passphrase
    if share.index != config.index or share.params.key_id != params.key_id:
        raise StartupError(
            f"{config.share_file}: holds node {share.index}'s share of key "
            f"{share.params.short_id}, not node {config.index}'s of "
            f"{params.short_id}"
        )
    _use_backend(config)
    try:
        share.self_test()  # checks the backend at this key's modulus too
    except IttcError as exc:
        raise StartupError(f"{config.share_file}: {exc}") from None
    return share


def _check_limits(config: NodeConfig, params: PublicParams) -> None:
    """A full batch's answer must fit in one message, or the node could never send it."""
    needed = codec.sign_response_bound(params, config.limits.max_batch)
    if needed > config.limits.max_message_bytes:
        limits = config.limits
        raise StartupError(
            f"{config.path}: limits.max_message_bytes = "
            f"{limits.max_message_bytes} cannot carry {limits.max_batch} shares "
            f"with proofs of a {params.bits}-bit key (needs {needed})"
        )


def _identity(config: NodeConfig, now: float) -> TlsIdentity:
    """The node's TLS identity, checked (the key's mode, that it fits the certificate, that
    a CA of the bundle issued it, that both are valid now); warnings are logged (one
    expires soon)."""
    try:
        identity, warnings = load_identity(config, now)
    except IttcError as exc:  # ConfigError, certwatch.CertificateError
        raise StartupError(str(exc)) from None
    for warning in warnings:
        log.warning("%s", warning)
    return identity


# -- serving -------------------------------------------------------------------------


class _Health:
    """Sets both health names at once; once shutting down, stays NOT_SERVING."""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()

    async def set(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.servicer.set(name, status)


async def _hold_start(path: pathlib.Path, stop: asyncio.Event) -> None:
    """Test fault ``hold-start``: wait until ``path`` exists (or the node is stopped)."""
    while not path.exists() and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def serve(
    config: NodeConfig,
    share: KeyShare | None,
    *,
    clock: Callable[[], float] = time.time,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    faults: Faults | None = None,
    reload: asyncio.Event | None = None,
    notifier: Notifier | None = None,
    reshare: ReshareSetup | None = None,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully.

    ``share`` must be this node's, already self-tested; with ``reshare`` (a node that
    takes part in reshares, :func:`ittc_node.epochs.start_epoch`) it is the share of the
    epoch the node starts in, or None for a site that holds no share yet (it serves the
    Reshare service only, and health says NOT_SERVING until a commit gives it a share).
    Opens the audit log (raising
    :class:`AuditLogError` before serving anything if it cannot), binds the port, starts
    the compute pool, then reports SERVING and sets ``ready``. ``faults`` defaults to
    what the environment asks for (see :mod:`ittc_node.faults`). Each time ``reload`` is
    set the node reloads its TLS identity and allowed clients (:mod:`ittc_node.reload`).
    ``notifier`` tells systemd (default: from ``$NOTIFY_SOCKET``, if set).
    """
    if share is None and reshare is None:
        raise StartupError(f"{config.path}: no share to serve")
    params = share.params if share is not None else reshare.epoch.params  # type: ignore[union-attr]
    if share is not None and reshare is None and share.index != config.index:
        raise StartupError(
            f"{config.path}: node.index is {config.index} but the share is node {share.index}'s"
        )
    _check_limits(config, params)
    stop = stop if stop is not None else asyncio.Event()
    faults = faults if faults is not None else Faults.from_env()
    if faults.ignored:
        log.warning("%s is set but %s is not: test faults ignored", FAULT_VAR, ENABLE_VAR)
    if faults.active:
        log.warning(
            "!!! TEST FAULTS ACTIVE (%s): this node LIES ON PURPOSE; it must never "
            "hold a real key !!!",
            faults.describe(),
        )

    notifier = notifier if notifier is not None else Notifier()
    reload = reload if reload is not None else asyncio.Event()
    identity = _identity(config, clock())
    credentials = tls.ReloadableServerCredentials(
        identity.key_pem, identity.cert_pem, identity.ca_pem
    )
    # The ids of requests that may still be fresh are read back from the log (2 windows:
    # see ReplayCache.restore).
    audit = AuditLog.open(
        config.audit_log,
        params.key_id,
        config.index,
        recent_since_ms=(clock() - 2 * config.limits.freshness_seconds) * 1000,
    )
    compute: Compute | None = None
    server = None
    monitor: MonitoringServer | None = None
    health = _Health()
    metrics = NodeMetrics()
    # Requests are counted and timed only when something can read the counts: a node
    # that serves no metrics (the default; a restart changes that) spends nothing on them.
    if config.metrics_listen is not None:
        audit.on_sync = metrics.audit_sync.observe
    tasks: set[asyncio.Task[None]] = set()

    def failed(reason: str) -> None:
        # Sign refuses by itself (it checks the audit log and the pool); tell probes.
        task = asyncio.get_running_loop().create_task(health.set(False))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def new_compute(new: KeyShare) -> Compute:
        made = make_compute(
            new, workers=config.workers, threads=config.threads, proof_nonces=config.proof_nonces
        )
        made.on_failure = failed
        return made

    try:
        limits = config.limits
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # Without this a second node could bind the same port unnoticed.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        try:
            port = server.add_secure_port(config.listen, credentials.credentials)
        except RuntimeError:
            port = 0
        if not port:
            raise StartupError(
                f"{config.path}: cannot listen on {config.listen} (address in use or not local)"
            )
        if share is not None:
            compute = new_compute(share)
        service = SignerService(
            config=config,
            params=params,
            compute=compute,
            audit=audit,
            replay=ReplayCache(limits.freshness_seconds),
            faults=faults,
            clock=clock,
            index=share.index if share is not None else None,
        )
        # Requests arrive as bytes and the service parses them after checking the caller.
        handlers = service.rpc_handlers()
        if config.metrics_listen is not None:
            handlers = instrument(handlers, metrics)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)
        resharing: ReshareService | None = None
        if reshare is not None:

            async def committed(epoch: Epoch) -> None:
                """A new epoch is current: sign with its share from now on."""
                old = service.compute
                fresh = new_compute(epoch.share) if epoch.share is not None else None
                if fresh is not None:
                    await fresh.start()
                service.switch(epoch.params, fresh, epoch.index)
                if old is not None:
                    await old.close()
                await health.set(service.serving)

            resharing = ReshareService(
                key=reshare.key,
                passphrase=reshare.passphrase,
                store=reshare.store,
                epoch=reshare.epoch,
                kdf=reshare.kdf,
                audit=audit,
                clock=clock,
                on_commit=committed,
                stale_share=reshare.configured_share,
                faults=faults,
                auto_refresh_days=config.auto_approve_refresh_days,
            )
            service.site = reshare.key.name
            reshare_handlers = resharing.rpc_handlers()
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(RESHARE_SERVICE, reshare_handlers),)
            )
            server.add_registered_method_handlers(RESHARE_SERVICE, reshare_handlers)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        await health.set(False)
        audit.start()
        await server.start()
        log.info(
            "node %s of key %s epoch %d listening on %s (not ready yet)",
            service.index or "(no share yet)",
            params.short_id,
            params.epoch,
            config.listen,
        )
        metrics.attach(_live_state(config, params, service, lambda: identity))
        monitor = await _monitoring(config, metrics, lambda: service.serving)

        if compute is not None:
            await compute.start()
        if faults.hold_start is not None:
            await _hold_start(faults.hold_start, stop)

        audit.on_failure = failed
        await audit.append(
            {
                "time": utc_iso(clock()),
                "type": "start",
                "node": config.index,
                "key_id": params.key_id,
                "epoch": params.epoch,
                "epoch_id": params.epoch_id,
                "index": service.index,
                "site": reshare.key.name if reshare is not None else None,
                "software_version": __version__,
                "listen": config.listen,
                "workers": config.workers,
                "backend": ct.backend(),
                "test_faults": faults.describe(),
            }
        )
        if reshare is not None:
            for note in reshare.notes:
                log.warning("%s", note)
                await audit.append(
                    {"time": utc_iso(clock()), "type": "reshare", "step": "start", "note": note}
                )
            if reshare.stale_now:
                assert resharing is not None
                resharing.delete_stale_share()
    except BaseException:
        if monitor is not None:
            await monitor.close()
        if server is not None:
            await server.stop(None)
        if compute is not None:
            await compute.close()
        audit.discard()
        raise

    service.ready = True
    loop = asyncio.get_running_loop()
    summaries = loop.create_task(service.gate.summarize_refusals(stop))

    def certificate_invalid(reason: str) -> None:
        service.certificate_problem = reason
        failed(reason)

    def watch(identity: TlsIdentity) -> asyncio.Task[None]:
        return loop.create_task(certwatch.watch(identity.watched, clock, stop, certificate_invalid))

    watcher = watch(identity)

    async def identity_changed(new: TlsIdentity) -> None:
        nonlocal watcher, identity
        identity = new
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        watcher = watch(new)
        # A renewed certificate ends a NOT_SERVING that its expiry caused.
        service.certificate_problem = None
        await health.set(service.serving)

    reloader = Reloader(
        config, identity, credentials, service, audit, clock, identity_changed, notifier
    )
    watchdog = loop.create_task(notifier.watchdog(stop))
    await health.set(service.serving)
    if params.bits < MIN_MODULUS_BITS:
        log.warning(
            "!!! TEST KEY: a %d-bit modulus protects nothing (the config allows it with "
            "insecure_small_key_for_tests); never use it for anything real !!!",
            params.bits,
        )
    if compute is not None:
        log.info(
            "node %d ready (share decrypted and self-tested): %s on %s, %d allowed client(s)",
            service.index,
            f"{config.workers} worker processes"
            if config.workers
            else f"{compute.parallelism} compute threads",
            ct.backend_description(),
            len(config.allowed_clients),
        )
    else:
        log.info("site %s ready to receive a share at the next reshare", service.site)
    notifier.ready(f"serving as node {config.index} of key {params.short_id}")
    if ready is not None:
        ready.set()
    try:
        while not stop.is_set():
            await _first(stop, reload)
            if reload.is_set() and not stop.is_set():
                reload.clear()
                applied = await reloader.reload()
                metrics.reloads.labels("applied" if applied else "refused").inc()
    finally:
        log.info("node %d stopping", config.index)
        notifier.stopping()
        service.ready = False
        await health.servicer.enter_graceful_shutdown()
        await server.stop(min(config.limits.max_deadline_seconds, MAX_GRACE_SECONDS))
        if service.compute is not None:
            await service.compute.close()
        await summaries
        await watcher
        await watchdog
        await service.gate.write_refusal_summaries(final=True)
        with contextlib.suppress(AuditLogError):
            await audit.append({"time": utc_iso(clock()), "type": "stop", "node": config.index})
        await audit.close()
        if monitor is not None:
            await monitor.close()
        log.info("node %d stopped", config.index)


def _live_state(
    config: NodeConfig,
    params: PublicParams,
    service: SignerService,
    identity: Callable[[], TlsIdentity],
) -> LiveState:
    """What a metrics scrape reads from the running node."""

    def certificates() -> list[tuple[str, str, float]]:
        current = identity()
        return [
            (label, cert.subject.rfc4514_string(), cert.not_valid_after_utc.timestamp())
            for label, cert in (("cert", current.cert), ("ca", current.issuer))
        ]

    def info() -> dict[str, str]:
        return {
            "index": str(service.index or 0),
            "key": service.params.short_id,
            "epoch": str(service.params.epoch),
            "version": __version__,
            "backend": ct.backend(),
        }

    return LiveState(
        serving=lambda: service.serving,
        pending_items=lambda: service.compute.pending if service.compute is not None else 0,
        certificates=certificates,
        info=info,
    )


async def _monitoring(
    config: NodeConfig, metrics: NodeMetrics, serving: Callable[[], bool]
) -> MonitoringServer | None:
    """The plain-HTTP metrics and health listeners the config asks for, started."""
    if config.metrics_listen is None and config.health_listen is None:
        return None
    monitor = MonitoringServer(
        serving=serving,
        registry=metrics.registry,
        metrics_listen=config.metrics_listen,
        health_listen=config.health_listen,
    )
    try:
        bound = await monitor.start()
    except OSError as exc:
        raise StartupError(
            f"{config.path}: cannot listen for monitoring on "
            f"{config.metrics_listen or config.health_listen}: {exc.strerror or exc}"
        ) from None
    log.info("monitoring (plain HTTP) on %s", ", ".join(bound))
    return monitor


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


# -- the command line ----------------------------------------------------------------


def _configure_logging(fmt: str, level: str) -> None:
    text = "%(asctime)s ittc-node %(levelname)s %(message)s"
    logs.configure(fmt=fmt, level=level, text=text, loggers=("ittc_node",))
    # The library's own records (the backend chosen...) only from warnings on, unless
    # debugging: a node that refuses to start says so in one line.
    library = level if level in ("debug", "error") else "warning"
    logs.configure(fmt=fmt, level=library, text=text, loggers=("ittc",))


def _os_error(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {exc.strerror or exc}"
    return exc.strerror or str(exc)


def _fail(message: str) -> int:
    if _json_logs:
        log.error("refused to start: %s", message)
    else:
        print(f"ittc-node: error: {message}", file=sys.stderr, flush=True)
    return EXIT_STARTUP


#: Startup refusals are log records too when the logs are JSON (set by :func:`run`).
_json_logs = False


async def _main(
    config: NodeConfig, share: KeyShare | None, reshare: ReshareSetup | None, hup_pending: bool
) -> None:
    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    if hup_pending:  # a SIGHUP while the node was starting: reload once it serves
        reload.set()
    await serve(config, share, stop=stop, faults=Faults.from_env(), reload=reload, reshare=reshare)


def load_node(config: NodeConfig) -> tuple[KeyShare | None, ReshareSetup | None]:
    """This node's share (self-tested) and, for a node that reshares, its epoch state.

    A node without ``[reshare]`` is :func:`load_share`. One with it reads its passphrase
    once (it stays in memory: new shares are written under it), its site key, and starts
    in the epoch its state folder says (:func:`ittc_node.epochs.start_epoch`).
    """
    if not config.reshares:
        return load_share(config), None
    passphrase = _passphrase(config)
    setup = start_epoch(config, passphrase)
    share = setup.epoch.share
    _use_backend(config)
    if share is not None:
        try:
            share.self_test()
        except IttcError as exc:
            raise StartupError(
                f"{config.path}: the share of epoch {share.params.epoch}: {exc}"
            ) from None
    return share, setup


def run(
    config_path: pathlib.Path | str, *, log_format: str = "text", log_level: str = "info"
) -> int:
    """Run a node until SIGTERM/SIGINT. Returns the exit status: 0 after a clean stop,
    2 if the node could not start (one line on stderr says why), 1 on a later failure.
    Logs go to stderr as text lines or JSON objects (``log_format``, :mod:`ittc.logs`)."""
    global _json_logs
    _configure_logging(log_format, log_level)
    _json_logs = log_format == "json"
    # Until the event loop handles it, a SIGHUP (a reload) must not kill the node: it is
    # remembered and applied once the node serves.
    hups: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: hups.append(signum))
    config_path = pathlib.Path(config_path)
    try:
        try:
            Faults.from_env()  # a malformed fault list is a startup error, not a surprise
        except ValueError as exc:
            raise StartupError(f"${FAULT_VAR}: {exc}") from None
        config = NodeConfig.load(config_path)
        share, reshare = load_node(config)
    except IttcError as exc:  # every startup error names the file and the problem
        return _fail(str(exc))
    except OSError as exc:
        return _fail(_os_error(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    try:
        asyncio.run(_main(config, share, reshare, bool(hups)))
    except ComputeError as exc:
        return _fail(f"{config.path}: {exc}")
    except IttcError as exc:  # StartupError, AuditLogError: before serving anything
        return _fail(str(exc))
    except OSError as exc:
        return _fail(_os_error(exc))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:
        log.exception("node %d failed", config.index)
        return EXIT_FAILED
    return EXIT_OK

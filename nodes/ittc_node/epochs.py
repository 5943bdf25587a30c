"""Which epoch a node starts in, for a node that takes part in reshares.

A node configured with ``[reshare]`` starts from its state folder
(:class:`~ittc.storage.epochs.EpochStore`):

* no ``current`` file yet: the epoch its configuration names (``key.params``), with the
  share its configuration names (``key.share``), and the site identities of the cluster
  file its ``[reshare] sites`` names; without a share file it is a site that has not
  received a share yet, and takes part in reshares only as a new member;
* a ``current`` file: that epoch's parameters, certificate and share from the folder;
* a certificate for the next epoch whose commit a crash cut short: it completes it (the
  certificate was checked before it was written; it is checked again);
* a ``retired`` record: it does not start (this site left the cluster).

A pending share without a certificate changes nothing: the node keeps signing in its
epoch until a certificate arrives (from the coordinator's ``--resume``, or anyone).
"""

from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass

from ittc import storage
from ittc.config import ClusterFile, NodeConfig
from ittc.errors import CertificateError, IttcError, StartupError
from ittc.lifecycle import SiteKey
from ittc.scheme.params import PublicParams
from ittc.storage import KdfLimits
from ittc.storage.epochs import EpochStore
from ittc_node.reshare import Epoch

__all__ = ["ReshareSetup", "start_epoch"]

log = logging.getLogger("ittc_node")


@dataclass
class ReshareSetup:
    """What the node's Reshare service needs, decided at startup."""

    key: SiteKey
    passphrase: bytes
    store: EpochStore
    epoch: Epoch
    kdf: KdfLimits
    #: The share file the configuration names: of the configured epoch, so to be deleted
    #: at the first commit (at once, when a later epoch is already current).
    configured_share: pathlib.Path
    #: A later epoch than the configured one is current, and that share file is still there.
    stale_now: bool
    #: What the start did beyond loading (a commit completed, a stale file deleted).
    notes: list[str]


def _configured_params(config: NodeConfig) -> PublicParams:
    from ittc.config.reader import Reader, load_params

    try:
        return load_params(
            Reader(config.path, {"params": str(config.params_file)}),
            "params",
            small_key_allowed=config.insecure_small_key_for_tests,
        )
    except IttcError as exc:
        raise StartupError(str(exc)) from None


def _configured_epoch(config: NodeConfig, key: SiteKey, passphrase: bytes) -> Epoch:
    params = _configured_params(config)
    assert config.sites is not None
    try:
        cluster = ClusterFile.load(config.sites)
        sites = cluster.sites()
    except IttcError as exc:
        raise StartupError(f"[reshare] sites: {exc}") from None
    if (cluster.params.key_id, cluster.params.epoch_id) != (params.key_id, params.epoch_id):
        raise StartupError(
            f"{config.sites}: the sites file is of key {cluster.params.short_id} epoch "
            f"{cluster.params.epoch}, not of this node's key {params.short_id} epoch "
            f"{params.epoch} ({config.params_file})"
        )
    if not config.share_file.exists():
        log.warning(
            "no share file %s: this site holds no share yet and takes part in reshares "
            "only as a new member",
            config.share_file,
        )
        return Epoch(params, None, sites, configured_nodes=_nodes(cluster))
    if sites.get(config.index) != key.identity:
        raise StartupError(
            f"{config.sites}: names another site for index {config.index} than this site's "
            f"key {config.site_key} ({key.name})"
        )
    try:
        share = storage.read_share_file(config.share_file, params, config.index, passphrase)
    except OSError as exc:
        raise StartupError(
            f"{config.share_file}: cannot read the share file: {exc.strerror}"
        ) from None
    except IttcError as exc:
        raise StartupError(str(exc)) from None
    return Epoch(params, share, sites, configured_nodes=_nodes(cluster))


def _nodes(cluster: ClusterFile) -> dict[int, tuple[str, str]]:
    return {n.index: (n.address, n.tls_name) for n in cluster.nodes}


def _stored_epoch(
    store: EpochStore, key: SiteKey, passphrase: bytes, epoch: int, epoch_id: str
) -> Epoch:
    try:
        params = store.params(epoch)
        certificate = store.certificate(epoch)
    except (OSError, IttcError) as exc:
        raise StartupError(
            f"{store.root}: epoch {epoch} is current but unreadable: {exc}"
        ) from None
    if params.epoch_id != epoch_id or certificate.params != params:
        raise StartupError(f"{store.root}: epoch {epoch}'s files do not match its pointer")
    index = certificate.member_index(key.identity)
    if index is None:
        raise StartupError(
            f"{store.root}: this site ({key.name}) is not a member of its current epoch {epoch}"
        )
    if not store.share_path(epoch).exists():
        log.warning(
            "no share file %s: this site lost its share of epoch %d and takes part in "
            "reshares only as a new member until one gives it a share again",
            store.share_path(epoch),
            epoch,
        )
        return Epoch(params, None, certificate.sites(), certificate)
    try:
        share = store.read_share(params, index, passphrase)
    except OSError as exc:
        raise StartupError(
            f"{store.share_path(epoch)}: cannot read this node's share of epoch {epoch}: "
            f"{exc.strerror}"
        ) from None
    except IttcError as exc:
        raise StartupError(str(exc)) from None
    return Epoch(params, share, certificate.sites(), certificate)


def start_epoch(config: NodeConfig, passphrase: bytes) -> ReshareSetup:
    """The epoch this node starts in, its site key and its state (see the module
    docstring). Raises :class:`StartupError` naming the file at fault."""
    assert config.site_key is not None and config.state_dir is not None
    try:
        key = storage.read_site_key(config.site_key, passphrase)
    except OSError as exc:
        raise StartupError(f"{config.site_key}: cannot read the site key: {exc.strerror}") from None
    except IttcError as exc:
        raise StartupError(str(exc)) from None
    store = EpochStore(config.state_dir)
    try:
        store.create()
        retired = store.retired()
        current = store.current()
    except (OSError, IttcError) as exc:
        raise StartupError(f"{config.state_dir}: {exc}") from None
    if retired is not None:
        raise StartupError(
            f"{config.state_dir}: site {key.name} retired at epoch {retired.epoch}: it is not "
            "a member of the cluster any more and holds no share (remove this node)"
        )
    notes: list[str] = []
    if current is None:
        epoch = _configured_epoch(config, key, passphrase)
    else:
        epoch = _stored_epoch(store, key, passphrase, current.epoch, current.epoch_id)
    unfinished = store.unfinished(epoch.params.epoch)
    if unfinished is not None:
        epoch = _complete(store, key, passphrase, epoch, unfinished, notes)
    kdf = _kdf_of(config, store, epoch)
    stale_now = store.current() is not None and config.share_file.exists()
    return ReshareSetup(key, passphrase, store, epoch, kdf, config.share_file, stale_now, notes)


def _complete(
    store: EpochStore,
    key: SiteKey,
    passphrase: bytes,
    epoch: Epoch,
    certificate: object,
    notes: list[str],
) -> Epoch:
    from ittc.lifecycle import Certificate

    assert isinstance(certificate, Certificate)
    try:
        certificate.verify(epoch.params, epoch.sites)
    except CertificateError as exc:
        raise StartupError(
            f"{store.certificate_path(certificate.epoch)}: a certificate for the next epoch "
            f"that does not verify: {exc}"
        ) from None
    index = certificate.member_index(key.identity)
    if index is None:
        store.retire(certificate)
        raise StartupError(
            f"site {key.name} is not a member of epoch {certificate.epoch}: it retired "
            "(its shares are deleted)"
        )
    try:
        share, gone = store.commit(certificate, index, passphrase)
    except CertificateError as exc:
        raise StartupError(str(exc)) from None
    notes.append(
        f"completed the commit of epoch {certificate.epoch} cut short before this start "
        f"(deleted {len(gone)} old share files)"
    )
    return Epoch(certificate.params, share, certificate.sites(), certificate)


def _kdf_of(config: NodeConfig, store: EpochStore, epoch: Epoch) -> KdfLimits:
    """New share files are written with the limits of the share file the node has."""
    for path in (store.share_path(epoch.params.epoch), config.share_file):
        try:
            return storage.read_share_header(path).kdf
        except (OSError, IttcError):
            continue
    return KdfLimits.moderate()

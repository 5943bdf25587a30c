"""The cluster's identities over the years: new clients, renewed certificates, a new CA.

Every function here needs the cluster CA's key, which the ceremony told the operator to
keep offline: it is brought back explicitly as a folder (:class:`CAFolder`: ``ca.pem``
and ``ca.key``, as the ceremony's ``ca/`` or :func:`new_ca` wrote it) and never copied
anywhere.

* :func:`issue_client_bundle`: a new client identity (a second combiner, a monitoring
  probe) as a complete combiner bundle, like the ceremony's ``combiner/``.
* :func:`renew`: a new certificate for an existing node or client key (same name,
  addresses and usage), from the same CA or a new one. Only the public certificate
  travels: the private key never leaves its host.
* :func:`new_ca` and :func:`trust_bundle`: a CA rotation that never leaves the cluster
  unable to sign. Every node and combiner first trusts the old and the new CA (a
  bundle), then each identity is renewed under the new CA, then the old CA is dropped
  (nodes/README.md walks through it; nodes reload on SIGHUP, combiners follow their
  files).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ittc.config import ClusterFile
from ittc.errors import ConfigError, ParameterError
from ittc.storage import pki
from ittc.storage.files import write_file_atomically

__all__ = [
    "CAFolder",
    "issue_client_bundle",
    "new_ca",
    "renew",
    "trust_bundle",
]

#: How long a new node or client certificate is valid by default (days).
DEFAULT_DAYS = 825
#: How long a new cluster CA is valid by default (days).
DEFAULT_CA_DAYS = 3650

CA_README = """\
This folder holds a cluster CA of an ittc cluster: ca.pem (public: every node and
combiner trusts it) and ca.key, which can mint identities the nodes accept. Keep it
offline; bring it back only to issue or renew an identity (ittc tls client, ittc tls
renew). See nodes/README.md, "Identities over time".
"""


@dataclass(frozen=True)
class CAFolder:
    """The cluster CA, brought back from offline storage: its certificate and key."""

    path: pathlib.Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:  # never the key
        return f"CAFolder({self.path}, '{self.cert.subject.rfc4514_string()}')"

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CAFolder:
        """Read ``path/ca.pem`` and ``path/ca.key`` (mode 0600), and check they match."""
        folder = pathlib.Path(path)
        if not (folder / "ca.key").exists():
            raise ConfigError(
                f"{folder}: no ca.key here; give the cluster CA's folder (the ceremony's "
                "ca/, brought back from offline storage)"
            )
        cert = pki.load_cert(folder / "ca.pem")
        key = pki.load_private_key(folder / "ca.key")
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise ConfigError(f"{folder / 'ca.key'}: is not the key of {folder / 'ca.pem'}")
        if not _is_ca(cert):
            raise ConfigError(f"{folder / 'ca.pem'}: is not a CA certificate")
        return cls(folder, cert, key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_days(days: int) -> None:
    if not isinstance(days, int) or not 1 <= days <= 100 * 366:
        raise ParameterError(f"certificate lifetime {days!r} is not 1..36600 days")


def _fresh_folder(out: pathlib.Path) -> pathlib.Path:
    """A hidden sibling of ``out`` to build in (renamed to ``out`` once complete)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new folder")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(tmp, 0o700)
    return tmp


def _finish(tmp: pathlib.Path, out: pathlib.Path) -> None:
    os.rename(tmp, out)  # atomic; replaces ``out`` only if it is an empty folder
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _public(path: pathlib.Path, data: bytes) -> None:
    write_file_atomically(path, data, mode=0o644)


def issue_client_bundle(
    ca: CAFolder,
    bundle: str | os.PathLike[str],
    name: str,
    out: str | os.PathLike[str],
    *,
    days: int = DEFAULT_DAYS,
) -> ClusterFile:
    """A new client identity ``name``, as a complete combiner bundle in the new folder
    ``out``: the cluster file, parameters, public key and CA certificates of ``bundle``
    (an existing combiner bundle, e.g. the ceremony's ``combiner/``) with a certificate
    and key of its own. Returns the new bundle's cluster file.

    The nodes sign for it only once ``name`` is in their ``allowed_clients``; a
    monitoring probe that only asks for health is left out of that list."""
    from ittc.config.reader import IDENTITY

    _check_days(days)
    if not IDENTITY.match(name):
        raise ParameterError(
            f"{name!r} is not a valid client identity (letters, digits, '.', '_', '-')"
        )
    source = ClusterFile.load(bundle)
    trusted = pki.load_certs(source.ca)
    if ca.cert not in trusted:
        raise ConfigError(
            f"{source.ca}: does not trust the CA in {ca.path} "
            f"('{ca.cert.subject.rfc4514_string()}'): the bundle belongs to another cluster, "
            "or its CA was rotated"
        )
    final = pathlib.Path(out).expanduser().absolute()
    tmp = _fresh_folder(final)
    try:
        cert, key = pki.issue_client_cert(ca.cert, ca.key, name, days=days)
        params = source.params
        _public(tmp / "params.json", params.to_json().encode())
        _public(
            tmp / "public.pem",
            params.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        _public(tmp / "ca.pem", source.ca.read_bytes())
        certificate = None
        if source.certificate is not None:
            certificate = source.certificate.name
            shutil.copyfile(source.certificate, tmp / certificate)
        pki.write_cert(tmp / "client.pem", cert)
        pki.write_private_key(tmp / "client.key", key)
        text = ClusterFile.render(
            params, list(source.nodes), client_name=name, certificate=certificate
        )
        _public(tmp / "cluster.toml", text.encode())
        loaded = ClusterFile.load(tmp / "cluster.toml")
        if loaded.params != params or loaded.nodes != source.nodes:
            raise ConfigError(f"{final}: the cluster file read back differs from {source.path}")
        _finish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ClusterFile.load(final / "cluster.toml")


def renew(
    ca: CAFolder,
    cert_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    days: int = DEFAULT_DAYS,
) -> x509.Certificate:
    """A new certificate for the key of the node or client certificate at ``cert_path``
    (same name, addresses and usage), issued by ``ca`` for ``days`` from now, written
    atomically to ``out`` (default: over ``cert_path``). Returns it.

    ``ca`` may be the CA that issued the old certificate (a renewal) or a new one (a CA
    rotation): whoever trusts ``ca`` accepts the new certificate."""
    _check_days(days)
    old = pki.load_cert(cert_path)
    new = pki.recertify(old, ca.cert, ca.key, days)
    target = pathlib.Path(out) if out is not None else pathlib.Path(cert_path)
    pki.write_cert(target, new, overwrite=True)
    return new


def new_ca(
    out: str | os.PathLike[str], *, name: str | None = None, days: int = DEFAULT_CA_DAYS
) -> CAFolder:
    """A new cluster CA in the new folder ``out`` (``ca.pem``, ``ca.key`` mode 0600,
    ``README.txt``), for a rotation; named after the date unless ``name`` is given."""
    _check_days(days)
    label = name or f"ittc cluster CA {datetime.datetime.now(datetime.UTC):%Y-%m-%d}"
    final = pathlib.Path(out).expanduser().absolute()
    tmp = _fresh_folder(final)
    try:
        cert, key = pki.make_ca(label, days)
        pki.write_cert(tmp / "ca.pem", cert)
        pki.write_private_key(tmp / "ca.key", key)
        _public(tmp / "README.txt", CA_README.encode())
        _finish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CAFolder.open(final)


def trust_bundle(
    sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> list[x509.Certificate]:
    """Write to ``out`` one CA file that trusts every CA certificate in ``sources`` (each
    a CA file, itself possibly a bundle), in order, once each. Returns them."""
    if not sources:
        raise ParameterError("name at least one CA certificate file")
    certs: list[x509.Certificate] = []
    for source in sources:
        for cert in pki.load_certs(source):
            if not _is_ca(cert):
                raise ConfigError(
                    f"{source}: '{cert.subject.rfc4514_string()}' is not a CA certificate"
                )
            if cert not in certs:
                certs.append(cert)
    pki.write_certs(out, certs, overwrite=True)
    return certs

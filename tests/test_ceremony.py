"""The key ceremony: the cluster folder, its PKI, mutual TLS, and the ``ittc`` command line.

A 1024-bit key (test-only size) and the fastest KDF keep this quick; one 2048-bit key is
split to check the existing-key path. The mTLS tests run a real gRPC server on loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ittc import cli, storage
from ittc.combiner import SyncClusterClient
from ittc.config import ClusterFile, NodeConfig
from ittc.deploy import leftovers
from ittc.deploy.ceremony import README_TITLE, create_cluster, describe, plan_sites
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ConfigError, ParameterError, WrongPassphrase
from ittc.scheme import dealer
from ittc.scheme.dealer import DealtKey
from ittc.storage import pki
from ittc.wire import tls

PASSPHRASE = b"correct horse battery staple"
FAST = storage.KdfLimits.fast_for_tests()


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_secret(path: pathlib.Path, data: bytes) -> pathlib.Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


@dataclass
class Made:
    out: pathlib.Path
    dealt: DealtKey
    cluster: ClusterFile

    @property
    def folder(self) -> CeremonyFolder:
        return CeremonyFolder(self.out)

    def passphrase(self, index: int) -> bytes:
        return storage.read_passphrase_file(self.folder.passphrase(index))


@pytest.fixture(scope="module")
def dealt() -> DealtKey:
    return dealer.generate(1024, insecure_allow_small_modulus_for_tests=True)


@pytest.fixture(scope="module")
def made(dealt: DealtKey, tmp_path_factory: pytest.TempPathFactory) -> Made:
    out = tmp_path_factory.mktemp("ceremony") / "cluster"
    messages: list[str] = []
    cluster = create_cluster(out, dealt, kdf=FAST, progress=messages.append)
    assert messages and "ceremony output written" in messages[-1]
    return Made(out, dealt, cluster)


# -- the folder --------------------------------------------------------------------------

COMBINER_FILES = ["cluster.toml", "params.json", "public.pem", "ca.pem", "client.pem"]
SITE_PUBLIC = ["README.txt", "etc/node.toml", "etc/tls.pem", "etc/ca.pem", "etc/params.json"]
SITE_SECRET = ["passphrase", "etc/share.enc", "etc/tls.key"]


def test_layout_and_modes(made: Made) -> None:
    out, n = made.out, made.dealt.params.n
    public = ["README.txt", "ca/ca.pem", "ca/README.txt"]
    public += [f"combiner/{f}" for f in COMBINER_FILES]
    public += [f"site-{i}/{f}" for i in range(1, n + 1) for f in SITE_PUBLIC]
    secret = ["ca/ca.key", "combiner/client.key"]
    secret += [f"site-{i}/{f}" for i in range(1, n + 1) for f in SITE_SECRET]
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == set(public) | set(secret)
    folders = ["ca", "combiner"]
    folders += [f"site-{i}{sub}" for i in range(1, n + 1) for sub in ("", "/etc", "/var")]
    for folder in folders:
        assert _mode(out / folder) == 0o700, folder
    assert all(list(made.folder.var(i).iterdir()) == [] for i in range(1, n + 1))  # empty
    for path in secret:
        assert _mode(out / path) == 0o600, path
    for path in public:
        assert _mode(out / path) & 0o077 == 0o044, path
    # No leftovers of the temporary build folder beside OUT.
    assert sorted(p.name for p in out.parent.iterdir()) == ["cluster"]
    assert "offline" in (out / "ca" / "README.txt").read_text()


def test_public_files_match_the_key(made: Made) -> None:
    params = made.dealt.params
    combiner = made.folder.combiner
    public = serialization.load_pem_public_key((combiner / "public.pem").read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == params.public_key().public_numbers()
    ca_pem = (made.out / "ca" / "ca.pem").read_bytes()
    assert (combiner / "params.json").read_text() == params.to_json()
    assert (combiner / "ca.pem").read_bytes() == ca_pem
    for i in range(1, params.n + 1):
        assert (made.folder.etc(i) / "params.json").read_text() == params.to_json()
        assert (made.folder.etc(i) / "ca.pem").read_bytes() == ca_pem


def test_cluster_and_node_configs_load(made: Made) -> None:
    params = made.dealt.params
    combiner = made.folder.combiner
    cluster = ClusterFile.load(made.out)  # a ceremony folder: its combiner/cluster.toml
    assert cluster == made.cluster == ClusterFile.load(combiner)
    assert cluster.path == combiner / "cluster.toml"
    assert cluster.params == params
    assert [(e.index, e.address, e.tls_name) for e in cluster.nodes] == [
        (i, f"127.0.0.1:{7000 + i}", f"ittc-node-{i}") for i in range(1, params.n + 1)
    ]
    assert (cluster.ca, cluster.client_cert, cluster.client_key, cluster.public_key) == (
        combiner / "ca.pem",
        combiner / "client.pem",
        combiner / "client.key",
        combiner / "public.pem",
    )
    for entry in cluster.nodes:
        etc = made.folder.etc(entry.index)
        config = NodeConfig.load(etc / "node.toml")
        assert config.index == entry.index
        assert config.listen == entry.address  # a local trial: each binds its own address
        assert config.allowed_clients == ("ittc-client",)
        assert config.load_params() == params
        assert (config.share_file, config.tls_cert, config.tls_key, config.tls_ca) == (
            etc / "share.enc",
            etc / "tls.pem",
            etc / "tls.key",
            etc / "ca.pem",
        )
        assert config.audit_log.resolve() == made.folder.var(entry.index) / "audit.log"
        assert config.passphrase_credential == "passphrase"
        assert config.passphrase_file is not None
        assert config.passphrase_file.resolve() == made.folder.passphrase(entry.index)


def test_a_small_key_loads_only_where_its_config_says_it_is_a_test_key(
    made: Made, tmp_path: pathlib.Path
) -> None:
    """The 2048-bit floor holds where nodes and combiners load parameters, not only at
    keygen: a 1024-bit params.json loads only beside the test-only field the ceremony
    wrote for it (explicit in the files); without it, a typed error naming the file."""
    copy = tmp_path / "cluster"
    shutil.copytree(made.out, copy)
    folder = CeremonyFolder(copy)
    cluster_toml, node_toml = folder.combiner / "cluster.toml", folder.node_config(2)
    for path in (cluster_toml, node_toml):
        text = path.read_text()
        assert "\ninsecure_small_key_for_tests = true\n" in text
        path.write_text(text.replace("\ninsecure_small_key_for_tests = true\n", "\n"))
    words = "a 1024-bit modulus is below 2048 bits and protects nothing"
    with pytest.raises(ConfigError, match=words) as cluster_error:
        ClusterFile.load(cluster_toml)
    assert str(folder.combiner / "params.json") in str(cluster_error.value)
    with pytest.raises(ConfigError, match=words):
        SyncClusterClient(cluster_toml)  # the combiner loads it the same way
    with pytest.raises(ConfigError, match=words) as node_error:
        NodeConfig.load(node_toml).load_params()
    assert str(folder.etc(2) / "params.json") in str(node_error.value)


def _named_paths(path: pathlib.Path) -> list[str]:
    """Every string value in a TOML file that a reader treats as a path."""
    data = tomllib.loads(path.read_text())
    found = []
    for table in ("key", "tls", "audit", "client"):
        found += [v for k, v in data.get(table, {}).items() if k not in ("passphrase_credential",)]
    found += [data[k] for k in ("params", "public_key", "ca") if k in data]
    return [v for v in found if isinstance(v, str)]


def test_no_config_names_a_file_outside_its_folder(made: Made) -> None:
    """Each site folder and the combiner bundle work wherever they are copied, alone."""
    bundles = [(made.folder.combiner, made.folder.cluster_file)]
    bundles += [(made.folder.site(i), made.folder.node_config(i)) for i in range(1, 6)]
    for bundle, config in bundles:
        paths = _named_paths(config)
        assert len(paths) >= 4, config
        for value in paths:
            assert not os.path.isabs(value), (config, value)
            target = (config.parent / value).resolve()
            assert target.is_relative_to(bundle), (config, value)
            if not value.endswith("audit.log"):
                assert target.is_file(), (config, value)


def test_each_site_has_its_own_passphrase(made: Made) -> None:
    params = made.dealt.params
    passphrases = [made.passphrase(i) for i in range(1, params.n + 1)]
    assert len(set(passphrases)) == params.n
    assert all(len(p) >= 43 for p in passphrases)  # 256 random bits
    for i in range(1, params.n + 1):
        share_file = made.folder.etc(i) / "share.enc"
        share = storage.read_share_file(share_file, params, i, passphrases[i - 1])
        share.self_test()
        assert share == made.dealt.shares[i - 1]
        for j in range(1, params.n + 1):
            if j != i:  # site j's passphrase does not open site i's share file
                with pytest.raises(WrongPassphrase):
                    storage.read_share_file(share_file, params, i, passphrases[j - 1])


def _private_keys(folder: pathlib.Path) -> list[tuple[pathlib.Path, bytes]]:
    """(file, public key) of every file under ``folder`` that holds a private key."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            continue
        found.append((path, key.public_key().public_bytes(*SPKI)))
    return found


def _share_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return [
        p for p in folder.rglob("*") if p.is_file() and p.read_bytes().startswith(b"ITTC-SHARE")
    ]


SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_bundles_hold_only_their_own_secrets(made: Made) -> None:
    params = made.dealt.params
    ca_public = pki.load_cert(made.out / "ca" / "ca.pem").public_key().public_bytes(*SPKI)
    combiner = made.folder.combiner
    # The combiner bundle: no share, and one private key, its own client key.
    assert _share_files(combiner) == []
    client_public = pki.load_cert(combiner / "client.pem").public_key().public_bytes(*SPKI)
    assert _private_keys(combiner) == [(combiner / "client.key", client_public)]
    passphrases = {i: made.passphrase(i) for i in range(1, params.n + 1)}
    for i in range(1, params.n + 1):
        site = made.folder.site(i)
        # One share file, site i's own; one private key, its node's TLS key (not the CA's).
        [share] = _share_files(site)
        assert storage.read_share_header(share).index == i
        node_public = pki.load_cert(made.folder.etc(i) / "tls.pem").public_key()
        assert _private_keys(site) == [
            (made.folder.etc(i) / "tls.key", node_public.public_bytes(*SPKI))
        ]
        assert ca_public != node_public.public_bytes(*SPKI)
        # Its own passphrase, and no other site's anywhere in the folder.
        contents = b"".join(p.read_bytes() for p in site.rglob("*") if p.is_file())
        for j, other in passphrases.items():
            assert (other in contents) == (i == j), (i, j)
    assert _private_keys(made.out / "ca") == [(made.out / "ca" / "ca.key", ca_public)]


def test_nothing_secret_in_public_files(made: Made) -> None:
    secrets_ = [format(s.dangerously_export_secret(), "x") for s in made.dealt.shares]
    passphrases = [made.passphrase(i).decode() for i in range(1, 6)]
    for path in made.out.rglob("*"):
        if path.is_file() and path.suffix in (".pem", ".json", ".toml", ".txt"):
            text = path.read_text().lower()
            assert not any(p.lower() in text for p in passphrases), path
            assert not any(s in text for s in secrets_), path


def test_readme_says_where_each_part_goes_and_what_to_destroy(made: Made) -> None:
    text = made.folder.readme.read_text()
    assert text.startswith(README_TITLE + "\n")
    assert made.dealt.params.key_id in text
    for words in ("site-1/ ... site-5/", "combiner/", "ca/ca.key", "offline", "destroy"):
        assert words in text, words
    assert f"ittc ceremony finish {made.out}" in text
    assert "--ca-key-offline" in text
    for i in range(1, 6):
        assert f"127.0.0.1:{7000 + i}" in text
        site = (made.folder.site(i) / "README.txt").read_text()
        assert f"site {i}" in site and "ittc node --config etc/node.toml" in site
        assert "systemd-creds encrypt --name=passphrase" in site


# -- the PKI -----------------------------------------------------------------------------


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_ca_certificate(made: Made) -> None:
    ca = pki.load_cert(made.out / "ca" / "ca.pem")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert made.dealt.params.short_id in ca.subject.rfc4514_string()
    key = pki.load_private_key(made.out / "ca" / "ca.key")
    assert key.public_key().public_numbers() == ca.public_key().public_numbers()  # type: ignore[union-attr]


def test_node_certificates(made: Made) -> None:
    ca = pki.load_cert(made.out / "ca" / "ca.pem")
    store = verification.Store([ca])
    for entry in made.cluster.nodes:
        folder = made.folder.etc(entry.index)
        cert = pki.load_cert(folder / "tls.pem")
        cert.verify_directly_issued_by(ca)
        name = f"ittc-node-{entry.index}"
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        san = _san(cert)
        assert san.get_values_for_type(x509.DNSName) == [name, "localhost"]
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
        # Full RFC 5280 path validation, by name (what the combiner checks) and by IP.
        for subject in (x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
            chain = (
                verification.PolicyBuilder()
                .store(store)
                .build_server_verifier(subject)
                .verify(cert, [])
            )
            assert chain[-1] == ca
        with pytest.raises(verification.VerificationError):  # serverAuth only
            verification.PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
        key = pki.load_private_key(folder / "tls.key")
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_client_certificate(made: Made) -> None:
    ca = pki.load_cert(made.out / "ca" / "ca.pem")
    cert = pki.load_cert(made.folder.combiner / "client.pem")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ittc-client"
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    verified = (
        verification.PolicyBuilder()
        .store(verification.Store([ca]))
        .build_client_verifier()
        .verify(cert, [])
    )
    assert verified.subjects == [x509.DNSName("ittc-client")]
    with pytest.raises(verification.VerificationError):  # clientAuth only
        verification.PolicyBuilder().store(verification.Store([ca])).build_server_verifier(
            x509.DNSName("ittc-client")
        ).verify(cert, [])


def test_private_key_files_are_0600_whatever_the_umask(tmp_path: pathlib.Path) -> None:
    _, key = pki.make_ca()
    old = os.umask(0)
    try:
        pki.write_private_key(tmp_path / "k.pem", key)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k.pem") == 0o600
    with pytest.raises(FileExistsError):
        pki.write_private_key(tmp_path / "k.pem", key)
    os.chmod(tmp_path / "k.pem", 0o640)
    with pytest.raises(ConfigError, match="other users"):
        pki.load_private_key(tmp_path / "k.pem")
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


def test_server_cert_hosts_become_dns_or_ip_entries() -> None:
    ca, ca_key = pki.make_ca()
    cert, _ = pki.issue_server_cert(
        ca, ca_key, "ittc-node-2", ["node2.example.org", "[::1]", "10.0.0.2", "localhost"]
    )
    san = _san(cert)
    assert san.get_values_for_type(x509.DNSName) == [
        "ittc-node-2",
        "localhost",
        "node2.example.org",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.2"),
    ]


def test_peer_identity_needs_an_authenticated_tls_peer() -> None:
    ca_cert, ca_key = pki.make_ca()

    def pem(*names: str) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n) for n in names])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    ok = {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem("ittc-client")]}
    assert tls.peer_identity(ok) == "ittc-client"
    assert tls.peer_identity({}) is None
    assert tls.peer_identity({**ok, "transport_security_type": [b"insecure"]}) is None
    assert tls.peer_identity({"transport_security_type": [b"ssl"]}) is None
    # gRPC's x509_common_name shows only the first name: the certificate itself decides.
    assert (
        tls.peer_identity(
            {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [b"ittc-client"],
                "x509_pem_cert": [pem("ittc-client", "mallory")],
            }
        )
        is None
    )
    assert (
        tls.peer_identity({"transport_security_type": [b"ssl"], "x509_pem_cert": [pem()]}) is None
    )
    assert (
        tls.peer_identity(
            {"transport_security_type": [b"ssl"], "x509_pem_cert": [b"not a certificate"]}
        )
        is None
    )


def test_channel_options() -> None:
    options = dict(tls.channel_options("ittc-node-3", 4096))
    assert options == {
        "grpc.ssl_target_name_override": "ittc-node-3",
        "grpc.max_send_message_length": 4096,
        "grpc.max_receive_message_length": 4096,
    }


def test_the_combiner_balances_over_a_name_and_retries_only_there() -> None:
    """Pass: every node channel balances round_robin; a DNS name (maybe several replicas of
    a site) retries an UNAVAILABLE once (two attempts, nothing else retried, only the
    Signer service); an IPv4 or IPv6 address (one node) never retries."""
    from ittc.combiner.transport import service_config

    for address in ("10.0.0.3:7003", "[::1]:7003", "127.0.0.1:7001"):
        config = json.loads(service_config(address))
        assert config == {"loadBalancingConfig": [{"round_robin": {}}]}, address
    config = json.loads(service_config("ittc-site-3.ittc.svc.cluster.local:7000"))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "ittc.v1.Signer"}]
    assert method["retryPolicy"]["maxAttempts"] == 2
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


# -- mutual TLS on loopback ---------------------------------------------------------------


@dataclass
class Server:
    port: int
    seen: list[str | None]


@pytest.fixture
def node1_server(made: Made) -> Iterator[Server]:
    """A gRPC server with node 1's identity whose one method answers the peer's name."""
    seen: list[str | None] = []

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = tls.peer_identity(context.auth_context())
        seen.append(identity)
        return (identity or "").encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    folder = made.folder.etc(1)
    port = server.add_secure_port(
        "127.0.0.1:0",
        tls.server_credentials(folder / "tls.pem", folder / "tls.key", folder / "ca.pem"),
    )
    assert port > 0
    server.start()
    try:
        yield Server(port, seen)
    finally:
        server.stop(None).wait()


def _call(port: int, credentials: grpc.ChannelCredentials, tls_name: str) -> bytes:
    with grpc.secure_channel(
        f"127.0.0.1:{port}", credentials, options=tls.channel_options(tls_name, 1 << 16)
    ) as channel:
        result: bytes = channel.unary_unary("/test.Who/Am")(b"", timeout=20)
        return result


@pytest.mark.network
def test_mtls_handshake_and_peer_identity(made: Made, node1_server: Server) -> None:
    client = made.folder.combiner
    creds = tls.channel_credentials(client / "client.pem", client / "client.key", client / "ca.pem")
    assert _call(node1_server.port, creds, "ittc-node-1") == b"ittc-client"
    assert node1_server.seen == ["ittc-client"]


def _refused(port: int, credentials: grpc.ChannelCredentials, tls_name: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(port, credentials, tls_name)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.network
def test_mtls_refuses_client_of_another_ca(
    made: Made, node1_server: Server, tmp_path: pathlib.Path
) -> None:
    other_ca, other_key = pki.make_ca("someone else's CA")
    cert, key = pki.issue_client_cert(other_ca, other_key, "ittc-client")
    pki.write_cert(tmp_path / "c.pem", cert)
    pki.write_private_key(tmp_path / "c.key", key)
    creds = tls.channel_credentials(
        tmp_path / "c.pem", tmp_path / "c.key", made.folder.combiner / "ca.pem"
    )
    _refused(node1_server.port, creds, "ittc-node-1")
    assert node1_server.seen == []


@pytest.mark.network
def test_mtls_refuses_no_client_cert_and_server_cert_as_client(
    made: Made, node1_server: Server
) -> None:
    ca_pem = (made.out / "ca" / "ca.pem").read_bytes()
    _refused(
        node1_server.port, grpc.ssl_channel_credentials(root_certificates=ca_pem), "ittc-node-1"
    )
    node2 = made.folder.etc(2)  # a node's serverAuth-only identity is not a client
    _refused(
        node1_server.port,
        tls.channel_credentials(node2 / "tls.pem", node2 / "tls.key", node2 / "ca.pem"),
        "ittc-node-1",
    )
    assert node1_server.seen == []


@pytest.mark.network
def test_mtls_checks_the_node_name_not_the_address(made: Made, node1_server: Server) -> None:
    client = made.folder.combiner
    creds = tls.channel_credentials(client / "client.pem", client / "client.key", client / "ca.pem")
    _refused(node1_server.port, creds, "ittc-node-2")
    assert node1_server.seen == []


# -- create_cluster's choices and refusals -----------------------------------------------


def test_refuses_non_empty_out(dealt: DealtKey, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        create_cluster(out, dealt, passphrases=[PASSPHRASE], kdf=FAST)
    assert [p.name for p in out.iterdir()] == ["something"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_out_folder_is_used(dealt: DealtKey, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cluster = create_cluster(out, dealt, passphrases=[PASSPHRASE], kdf=FAST)
    assert cluster.path == out / "combiner" / "cluster.toml"
    # One passphrase for every site (the caller's choice): each site still gets a copy.
    for i in (1, 5):
        assert storage.read_passphrase_file(out / f"site-{i}" / "passphrase") == PASSPHRASE


def test_failure_leaves_nothing(dealt: DealtKey, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ParameterError, match="addresses"):
        create_cluster(tmp_path / "out", dealt, addresses=["127.0.0.1:1"], kdf=FAST)
    with pytest.raises(ParameterError, match="listen"):
        create_cluster(tmp_path / "out", dealt, listen=["a:1", "b:2"], kdf=FAST)
    assert list(tmp_path.iterdir()) == []


def test_addresses_listen_clients_and_given_passphrases(
    dealt: DealtKey, tmp_path: pathlib.Path
) -> None:
    n = dealt.params.n
    addresses = [f"node{i}.example.org:9000" for i in range(1, n + 1)]
    addresses[2] = "203.0.113.7:443"  # behind NAT: forwarded to the node's port 9003
    listen = ["0.0.0.0", "10.0.0.2", "0.0.0.0:9003", "[::]", "[fd00::5]:9000"]
    passphrases = [f"passphrase of node {i}".encode() for i in range(1, n + 1)]
    out = tmp_path / "out"
    cluster = create_cluster(
        out,
        dealt,
        passphrases=passphrases,
        addresses=addresses,
        listen=listen,
        client_names=["combiner-a", "combiner-b", "ops"],
        kdf=FAST,
    )
    folder = CeremonyFolder(out)
    assert [e.address for e in cluster.nodes] == addresses
    binds = ["0.0.0.0:9000", "10.0.0.2:9000", "0.0.0.0:9003", "[::]:9000", "[fd00::5]:9000"]
    ca = pki.load_cert(out / "ca" / "ca.pem")
    for i in range(1, n + 1):
        config = NodeConfig.load(folder.node_config(i))
        assert config.listen == binds[i - 1]
        assert config.allowed_clients == ("combiner-a", "combiner-b", "ops")
        assert storage.read_passphrase_file(folder.passphrase(i)) == passphrases[i - 1]
        share = storage.read_share_file(config.share_file, dealt.params, i, passphrases[i - 1])
        assert share == dealt.shares[i - 1]
        with pytest.raises(WrongPassphrase):
            storage.read_share_file(config.share_file, dealt.params, i, passphrases[i % n])
        # The certificate names what combiners dial (and a specific bind address).
        san = _san(pki.load_cert(config.tls_cert))
        host = addresses[i - 1].rsplit(":", 1)[0]
        if i == 3:
            assert ipaddress.ip_address(host) in san.get_values_for_type(x509.IPAddress)
        else:
            assert host in san.get_values_for_type(x509.DNSName)
        if i in (2, 5):
            bound = ipaddress.ip_address(binds[i - 1].rsplit(":", 1)[0].strip("[]"))
            assert bound in san.get_values_for_type(x509.IPAddress)
        # ...and the node.toml says so to the operator at the site.
        text = folder.node_config(i).read_text()
        assert f"Combiners dial this node at {addresses[i - 1]}" in text
    first = pki.load_cert(folder.combiner / "client.pem")
    assert first.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "combiner-a"
    assert sorted(p.name for p in (out / "clients").iterdir()) == ["combiner-b", "ops"]
    for name in ("combiner-b", "ops"):
        bundle = folder.client(name)
        assert _mode(bundle) == 0o700 and _mode(bundle / "client.key") == 0o600
        cert = pki.load_cert(bundle / "client.pem")
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        own = ClusterFile.load(bundle)  # a complete combiner bundle of its own
        assert own.client_cert == bundle / "client.pem" and own.params == dealt.params
    assert "combiner-b, ops" in folder.readme.read_text()


@pytest.mark.parametrize(
    ("addresses", "listen", "expected"),
    [
        (None, None, ["127.0.0.1:7001", "127.0.0.1:7002"]),
        (["a.example:1", "[2001:db8::1]:2"], None, ["0.0.0.0:1", "[::]:2"]),
        (["127.0.0.1:1", "[::1]:2"], None, ["127.0.0.1:1", "[::1]:2"]),
        (["127.0.0.1:1", "[::1]:2"], ["0.0.0.0"], ["0.0.0.0:1", "0.0.0.0:2"]),
        (["a.example:1", "b.example:2"], ["127.0.0.1"], ["127.0.0.1:1", "127.0.0.1:2"]),
        (["a.example:1", "b.example:2"], ["::1"], ["[::1]:1", "[::1]:2"]),
        (["a.example:1", "b.example:2"], ["0.0.0.0:7000"], ["0.0.0.0:7000"] * 2),
        (["a.example:1", "b.example:2"], ["h1", "h2:9"], ["h1:1", "h2:9"]),
    ],
)
def test_plan_sites(
    addresses: list[str] | None, listen: list[str] | None, expected: list[str]
) -> None:
    plans = plan_sites(2, addresses, listen)
    assert [p.listen for p in plans] == expected
    assert [p.tls_name for p in plans] == ["ittc-node-1", "ittc-node-2"]


@pytest.mark.parametrize(
    ("addresses", "listen", "words"),
    [
        (["a:1"], None, "need 2 node addresses"),
        (["a:1", "a:1"], None, "distinct"),
        (["a:1", "b:99999"], None, "port 99999 is not in 1..65535"),
        (["a:1", "fe80::1:7"], None, "brackets"),
        (["a:1", "b"], None, "not host:port"),
        (["a:1", "b:2"], ["x", "y", "z"], "one listen address for every node or one per node"),
        (["a:1", "b:2"], ["fe80::1:7003x"], "neither host:port nor a host"),
    ],
)
def test_plan_sites_refuses(
    addresses: list[str] | None, listen: list[str] | None, words: str
) -> None:
    with pytest.raises(ParameterError, match=words):
        plan_sites(2, addresses, listen)


def test_bad_arguments_are_refused(dealt: DealtKey, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match="one per node"):
        create_cluster(out, dealt, passphrases=[PASSPHRASE, PASSPHRASE], kdf=FAST)
    with pytest.raises(ParameterError, match="empty"):
        create_cluster(out, dealt, passphrases=[b""], kdf=FAST)
    with pytest.raises(ParameterError, match="client identity"):
        create_cluster(out, dealt, client_names=["bad name"], kdf=FAST)
    with pytest.raises(ParameterError, match="distinct"):
        create_cluster(out, dealt, addresses=["127.0.0.1:7001"] * dealt.params.n, kdf=FAST)
    assert not out.exists()


def test_split_existing_key(tmp_path: pathlib.Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    split = dealer.split(key, 5, 3)
    out = tmp_path / "split"
    cluster = create_cluster(out, split, kdf=FAST, leftovers=[tmp_path / "root.pem"])
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    assert (out / "combiner" / "public.pem").read_bytes() == key.public_key().public_bytes(*spki)
    assert cluster.params.sharing == "integer" and not cluster.params.proofs_sound
    assert any("not sound" in w for w in split.warnings)
    assert "NOT sound" in describe(cluster)
    passphrase = storage.read_passphrase_file(out / "site-4" / "passphrase")
    share_file = out / "site-4" / "etc" / "share.enc"
    storage.read_share_file(share_file, cluster.params, 4, passphrase).self_test()
    # The key that was split is named among what to destroy.
    assert (
        f"ittc ceremony finish --also {tmp_path / 'root.pem'}" in (out / "README.txt").read_text()
    )


def test_describe(made: Made) -> None:
    text = describe(made.cluster)
    params = made.dealt.params
    assert params.key_id in text
    assert "RSA-1024" in text and "any 3 of 5" in text and "sound" in text
    assert "NOT sound" not in text
    for i in range(1, 6):
        assert f"127.0.0.1:{7000 + i}" in text and f"ittc-node-{i}" in text


# -- the command line --------------------------------------------------------------------


def _run_cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ittc", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_cli_keygen_makes_a_passphrase_per_site_without_a_terminal(tmp_path: pathlib.Path) -> None:
    done = _run_cli(
        "keygen",
        "--insecure-small-key-for-tests",
        "--bits",
        "1024",
        "--nodes",
        "4",
        "--threshold",
        "2",
        "--kdf",
        "fast-insecure-for-tests",
        "--out",
        "c",
        cwd=tmp_path,  # stdin is /dev/null: nothing is asked
    )
    assert done.returncode == 0, done.stderr
    cluster = ClusterFile.load(tmp_path / "c")
    assert (cluster.params.n, cluster.params.k, cluster.params.bits) == (4, 2, 1024)
    assert cluster.params.key_id in done.stdout
    # It ends by saying where each part goes and what to destroy (the folder's README).
    assert (tmp_path / "c" / "README.txt").read_text() in done.stdout
    assert "ittc ceremony finish" in done.stdout and "ittc cluster up" in done.stdout
    assert "1024-bit test key" in done.stderr and "test-only KDF" in done.stderr
    assert "same passphrase" not in done.stderr
    folder = CeremonyFolder(tmp_path / "c")
    passphrases = [storage.read_passphrase_file(folder.passphrase(i)) for i in range(1, 5)]
    assert len(set(passphrases)) == 4
    for i, passphrase in enumerate(passphrases, 1):
        assert passphrase.decode() not in done.stdout + done.stderr
        config = NodeConfig.load(folder.node_config(i))
        share = storage.read_share_file(config.share_file, cluster.params, i, passphrase)
        assert share.index == i


def test_cli_brings_its_own_passphrases(tmp_path: pathlib.Path) -> None:
    common = ["keygen", "--insecure-small-key-for-tests", "--bits", "1024", "--nodes", "3"]
    common += ["--threshold", "2", "--kdf", "fast-insecure-for-tests"]
    (tmp_path / "mine").mkdir()
    own = [f"site {i} passphrase".encode() for i in range(1, 4)]
    for i, passphrase in enumerate(own, 1):
        _write_secret(tmp_path / "mine" / f"site-{i}", passphrase + b"\n")
    done = _run_cli(*common, "--passphrase-dir", "mine", "--out", "a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "same passphrase" not in done.stderr
    for i, passphrase in enumerate(own, 1):
        assert (
            storage.read_passphrase_file(tmp_path / "a" / f"site-{i}" / "passphrase") == passphrase
        )
    # The operator's own passphrase files are leftovers too.
    assert str(tmp_path / "mine" / "site-3") in (tmp_path / "a" / "README.txt").read_text()

    _write_secret(tmp_path / "pass.txt", PASSPHRASE + b"\n")
    done = _run_cli(*common, "--passphrase-file", "pass.txt", "--out", "b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "same passphrase" in done.stderr  # one passphrase for every site: said loudly
    assert PASSPHRASE.decode() not in done.stdout + done.stderr

    done = _run_cli(*common, "--ask-passphrases", "--out", "d", cwd=tmp_path)
    assert done.returncode == 2 and "not a terminal" in done.stderr
    done = _run_cli(*common, "--passphrase-dir", "nope", "--out", "d", cwd=tmp_path)
    assert done.returncode == 2 and "no such folder" in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("shape", [("1", "1"), ("3", "1")])
def test_cli_a_threshold_of_one_needs_saying_so(
    tmp_path: pathlib.Path, shape: tuple[str, str]
) -> None:
    """k = 1 (n = 1 included) is not a threshold: every site holds the whole signing
    power. keygen and split refuse it, before any work, unless told explicitly; then they
    make it and say loudly what it is."""
    nodes, threshold = shape
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_secret(
        tmp_path / "key.pem",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    common = ["--nodes", nodes, "--threshold", threshold, "--kdf", "fast-insecure-for-tests"]
    for command in (
        ["keygen", "--insecure-small-key-for-tests", "--bits", "1024"],
        ["split", "--key", "key.pem"],
    ):
        refused = _run_cli(*command, *common, "--out", "c", cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines() == [
            f"ittc: error: --threshold 1: any one of the {nodes} nodes could sign alone, so "
            "each site (its host, or its share file and passphrase) holds the whole signing "
            "power; use a threshold of 2 or more, or pass --insecure-one-node-signs-alone if "
            "that is really what you want"
        ]
        assert not (tmp_path / "c").exists()
    done = _run_cli(
        "split",
        "--key",
        "key.pem",
        *common,
        "--insecure-one-node-signs-alone",
        "--out",
        "c",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert f"WARNING: threshold k=1: each of the {nodes} node(s) can sign alone" in done.stderr
    assert ClusterFile.load(CeremonyFolder(tmp_path / "c").combiner).params.k == 1


def test_cli_bad_argument_exits_2_without_traceback(tmp_path: pathlib.Path) -> None:
    done = _run_cli("keygen", "--bits", "many", "--out", "c", cwd=tmp_path)
    assert done.returncode == 2
    assert "ittc: error:" in done.stderr and "--bits" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "c").exists()


def test_cli_errors_are_one_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = [
        ["keygen", "--out", str(tmp_path / "full"), "--passphrase-file", "nope"],
        ["keygen", "--out", str(tmp_path / "a"), "--passphrase-file", str(tmp_path / "nope")],
        [
            "keygen",
            "--out",
            str(tmp_path / "a"),
            "--bits",
            "1024",
            "--passphrase-file",
            str(_write_secret(tmp_path / "p", PASSPHRASE)),
        ],
        ["info", "--cluster", str(tmp_path / "nope")],
        ["split", "--key", str(tmp_path / "nope.pem"), "--out", str(tmp_path / "b")],
    ]
    for argv in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ittc: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "p"]


def test_cli_asks_for_passphrases_only_on_a_terminal(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["keygen", "--out", str(tmp_path / "c"), "--bits", "1024"]
    argv += ["--insecure-small-key-for-tests", "--ask-passphrases"]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert cli.main(argv) == 2
    assert "not a terminal" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["first passphrase", "second passphrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(argv) == 2
    assert "do not match" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cli_split_and_info(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pass = _write_secret(tmp_path / "key-pass", b"key file passphrase\n")
    (tmp_path / "root.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key file passphrase"),
        )
    )
    share_pass = _write_secret(tmp_path / "share-pass", PASSPHRASE)
    argv = [
        "split",
        "--key",
        str(tmp_path / "root.pem"),
        "--out",
        str(tmp_path / "c"),
        "--passphrase-file",
        str(share_pass),
        "--kdf",
        "fast-insecure-for-tests",
        "--nodes",
        "3",
        "--threshold",
        "2",
    ]
    assert (
        cli.main(argv[:3] + ["--key-passphrase-file", str(tmp_path / "share-pass")] + argv[3:]) == 2
    )
    assert "share-pass does not open this key" in capsys.readouterr().err
    assert cli.main(argv) == 2
    assert "--key-passphrase-file" in capsys.readouterr().err
    assert cli.main(argv + ["--key-passphrase-file", str(key_pass)]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "not sound" in captured.err
    assert "Destroy it" in captured.out
    public_pem = tmp_path / "c" / "combiner" / "public.pem"
    public = serialization.load_pem_public_key(public_pem.read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()

    assert cli.main(["info", "--cluster", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "any 2 of 3" in out and "NOT sound" in out


def test_the_example_node_config_loads() -> None:
    example = pathlib.Path(__file__).parent.parent / "nodes" / "examples" / "node.toml"
    config = NodeConfig.load(example)
    assert (config.index, config.passphrase_credential) == (3, "passphrase")
    assert config.audit_log == example.parent.parent / "var" / "audit.log"


def test_ceremony_finish_refuses_what_is_not_a_ceremony_folder(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious").write_text("keep me")
    (tmp_path / "README.txt").write_text("my own notes\n")
    assert cli.main(["ceremony", "finish", str(tmp_path), "--yes", "--ca-key-offline"]) == 2
    assert "not a key ceremony's output folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.txt", "precious"]


def test_ceremony_finish_asks_and_keeps_the_ca_key(
    dealt: DealtKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "c"
    create_cluster(out, dealt, kdf=FAST, client_names=["a", "b"])
    outside = _write_secret(tmp_path / "root.pem", b"the original key")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "no")
    assert cli.main(["ceremony", "finish", str(out), "--also", str(outside)]) == 2
    assert (out / "site-1" / "etc" / "share.enc").exists() and outside.exists()
    with pytest.raises(ConfigError, match="not a regular file"):  # --also takes files only
        leftovers.plan(out, also=[tmp_path])
    monkeypatch.setattr("builtins.input", lambda prompt="": "destroy")
    assert cli.main(["ceremony", "finish", str(out), "--also", str(outside)]) == 0
    printed = capsys.readouterr().out
    assert "site 3: its share file and its passphrase" in printed and "Kept:" in printed
    assert not outside.exists()
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == ["README.txt", "ca", "ca/README.txt", "ca/ca.key", "ca/ca.pem"]
    assert cli.main(["ceremony", "finish", str(out), "--ca-key-offline", "--yes"]) == 0
    assert not out.exists()

"""The key ceremony: the cluster folder, its PKI, mutual TLS, and the ``ittc`` command line.

A 1024-bit key (test-only size) and the fastest KDF keep this quick; one 2048-bit key is
split to check the existing-key path. The mTLS tests run a real gRPC server on loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import stat
import subprocess
import sys
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
from ittc.config import ClusterFile, NodeConfig
from ittc.deploy.ceremony import create_cluster, describe
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
    passphrase_file: pathlib.Path


@pytest.fixture(scope="module")
def dealt() -> DealtKey:
    return dealer.generate(1024, insecure_allow_small_modulus_for_tests=True)


@pytest.fixture(scope="module")
def made(dealt: DealtKey, tmp_path_factory: pytest.TempPathFactory) -> Made:
    base = tmp_path_factory.mktemp("ceremony")
    secrets_dir = base / "secrets"
    secrets_dir.mkdir()
    passphrase_file = _write_secret(secrets_dir / "pass.txt", PASSPHRASE + b"\n")
    out = base / "sites" / "cluster"
    out.parent.mkdir()
    messages: list[str] = []
    cluster = create_cluster(
        out,
        dealt,
        passphrases=[PASSPHRASE],
        passphrase_file=passphrase_file,
        kdf=FAST,
        progress=messages.append,
    )
    assert messages and "cluster written" in messages[-1]
    return Made(out, dealt, cluster, passphrase_file)


# -- the folder --------------------------------------------------------------------------

PUBLIC_FILES = [
    "public.pem",
    "params.json",
    "cluster.toml",
    "ca/ca.pem",
    "ca/README.txt",
    "client/client.pem",
    "client/ca.pem",
]
NODE_PUBLIC = ["node.toml", "tls.pem", "ca.pem", "params.json"]
NODE_SECRET = ["share.enc", "tls.key"]


def test_layout_and_modes(made: Made) -> None:
    out, n = made.out, made.dealt.params.n
    expected = set(PUBLIC_FILES) | {"ca/ca.key", "client/client.key"}
    for i in range(1, n + 1):
        expected |= {f"node-{i}/{f}" for f in NODE_PUBLIC + NODE_SECRET}
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == expected
    for folder in ["ca", "client", *(f"node-{i}" for i in range(1, n + 1))]:
        assert _mode(out / folder) == 0o700, folder
    for key in [
        "ca/ca.key",
        "client/client.key",
        *(f"node-{i}/{f}" for i in range(1, n + 1) for f in NODE_SECRET),
    ]:
        assert _mode(out / key) == 0o600, key
    for public in PUBLIC_FILES:
        assert _mode(out / public) & 0o077 == 0o044, public
    # No leftovers of the temporary build folder beside OUT.
    assert sorted(p.name for p in out.parent.iterdir()) == ["cluster"]
    assert "offline" in (out / "ca" / "README.txt").read_text()


def test_public_files_match_the_key(made: Made) -> None:
    params = made.dealt.params
    public = serialization.load_pem_public_key((made.out / "public.pem").read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == params.public_key().public_numbers()
    assert (made.out / "params.json").read_text() == params.to_json()
    for i in range(1, params.n + 1):
        assert (made.out / f"node-{i}" / "params.json").read_text() == params.to_json()
        assert (made.out / f"node-{i}" / "ca.pem").read_bytes() == (
            made.out / "ca" / "ca.pem"
        ).read_bytes()


def test_cluster_and_node_configs_load(made: Made) -> None:
    params = made.dealt.params
    cluster = ClusterFile.load(made.out)
    assert cluster == made.cluster
    assert cluster.params == params
    assert [(e.index, e.address, e.tls_name) for e in cluster.nodes] == [
        (i, f"127.0.0.1:{7000 + i}", f"ittc-node-{i}") for i in range(1, params.n + 1)
    ]
    assert cluster.ca == made.out / "ca" / "ca.pem"
    assert cluster.client_cert == made.out / "client" / "client.pem"
    assert cluster.client_key == made.out / "client" / "client.key"
    assert cluster.public_key == made.out / "public.pem"
    for entry in cluster.nodes:
        folder = made.out / f"node-{entry.index}"
        config = NodeConfig.load(folder / "node.toml")
        assert config.index == entry.index
        assert config.listen == entry.address
        assert config.allowed_clients == ("ittc-client",)
        assert config.load_params() == params
        assert (config.share_file, config.tls_cert, config.tls_key, config.tls_ca) == (
            folder / "share.enc",
            folder / "tls.pem",
            folder / "tls.key",
            folder / "ca.pem",
        )


def test_passphrase_file_is_named_relative_and_resolves(made: Made) -> None:
    for i in range(1, made.dealt.params.n + 1):
        folder = made.out / f"node-{i}"
        text = (folder / "node.toml").read_text()
        # OUT is base/sites/cluster, the file base/secrets/pass.txt.
        assert 'passphrase_file = "../../../secrets/pass.txt"' in text
        config = NodeConfig.load(folder / "node.toml")
        assert config.passphrase_file is not None
        assert config.passphrase_file.resolve() == made.passphrase_file.resolve()


def test_shares_decrypt_and_self_test(made: Made) -> None:
    params = made.dealt.params
    for entry in made.cluster.nodes:
        config = NodeConfig.load(made.out / f"node-{entry.index}" / "node.toml")
        assert config.passphrase_file is not None
        passphrase = storage.read_passphrase_file(config.passphrase_file)
        share = storage.read_share_file(config.share_file, params, entry.index, passphrase)
        share.self_test()
        assert share == made.dealt.shares[entry.index - 1]
    with pytest.raises(WrongPassphrase):
        storage.read_share_file(made.out / "node-1" / "share.enc", params, 1, b"not it")


def test_nothing_secret_in_public_files(made: Made) -> None:
    secrets_ = [format(s.dangerously_export_secret(), "x") for s in made.dealt.shares]
    for path in made.out.rglob("*"):
        if path.is_file() and path.suffix in (".pem", ".json", ".toml", ".txt"):
            text = path.read_text().lower()
            assert PASSPHRASE.decode() not in text, path
            assert not any(s in text for s in secrets_), path


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
        folder = made.out / f"node-{entry.index}"
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
    cert = pki.load_cert(made.out / "client" / "client.pem")
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
    folder = made.out / "node-1"
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
    client = made.out / "client"
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
        tmp_path / "c.pem", tmp_path / "c.key", made.out / "client" / "ca.pem"
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
    node2 = made.out / "node-2"  # a node's serverAuth-only identity is not a client
    _refused(
        node1_server.port,
        tls.channel_credentials(node2 / "tls.pem", node2 / "tls.key", node2 / "ca.pem"),
        "ittc-node-1",
    )
    assert node1_server.seen == []


@pytest.mark.network
def test_mtls_checks_the_node_name_not_the_address(made: Made, node1_server: Server) -> None:
    client = made.out / "client"
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
    assert cluster.path == out / "cluster.toml"
    assert NodeConfig.load(out / "node-1" / "node.toml").passphrase_file is None


def test_failure_leaves_nothing(dealt: DealtKey, tmp_path: pathlib.Path) -> None:
    passphrase_file = _write_secret(tmp_path / "pass.txt", b"another passphrase")
    with pytest.raises(ParameterError, match="passphrase"):
        create_cluster(
            tmp_path / "out",
            dealt,
            passphrases=[PASSPHRASE],
            passphrase_file=passphrase_file,
            kdf=FAST,
        )
    with pytest.raises(ParameterError, match="addresses"):
        create_cluster(
            tmp_path / "out", dealt, passphrases=[PASSPHRASE], addresses=["127.0.0.1:1"], kdf=FAST
        )
    assert [p.name for p in tmp_path.iterdir()] == ["pass.txt"]


def test_addresses_clients_and_per_node_passphrases(
    dealt: DealtKey, tmp_path: pathlib.Path
) -> None:
    n = dealt.params.n
    addresses = [f"node{i}.example.org:9000" for i in range(1, n + 1)]
    passphrases = [f"passphrase of node {i}".encode() for i in range(1, n + 1)]
    out = tmp_path / "out"
    cluster = create_cluster(
        out,
        dealt,
        passphrases=passphrases,
        addresses=addresses,
        client_names=["combiner-a", "combiner-b", "ops"],
        kdf=FAST,
    )
    assert [e.address for e in cluster.nodes] == addresses
    ca = pki.load_cert(out / "ca" / "ca.pem")
    for i in (2, 5):
        config = NodeConfig.load(out / f"node-{i}" / "node.toml")
        assert config.allowed_clients == ("combiner-a", "combiner-b", "ops")
        assert config.passphrase_file is None
        share = storage.read_share_file(config.share_file, dealt.params, i, passphrases[i - 1])
        assert share == dealt.shares[i - 1]
        with pytest.raises(WrongPassphrase):
            storage.read_share_file(config.share_file, dealt.params, i, passphrases[0])
        san = _san(pki.load_cert(config.tls_cert))
        assert f"node{i}.example.org" in san.get_values_for_type(x509.DNSName)
    first = pki.load_cert(out / "client" / "client.pem")
    assert first.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "combiner-a"
    assert sorted(p.name for p in (out / "clients").iterdir()) == ["combiner-b", "ops"]
    for name in ("combiner-b", "ops"):
        folder = out / "clients" / name
        assert _mode(folder) == 0o700 and _mode(folder / "client.key") == 0o600
        cert = pki.load_cert(folder / "client.pem")
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name


def test_bad_arguments_are_refused(dealt: DealtKey, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match="one per node"):
        create_cluster(out, dealt, passphrases=[PASSPHRASE, PASSPHRASE], kdf=FAST)
    with pytest.raises(ParameterError, match="empty"):
        create_cluster(out, dealt, passphrases=[b""], kdf=FAST)
    with pytest.raises(ParameterError, match="client identity"):
        create_cluster(out, dealt, passphrases=[PASSPHRASE], client_names=["bad name"], kdf=FAST)
    with pytest.raises(ParameterError, match="distinct"):
        create_cluster(
            out,
            dealt,
            passphrases=[PASSPHRASE],
            addresses=["127.0.0.1:7001"] * dealt.params.n,
            kdf=FAST,
        )
    assert not out.exists()


def test_split_existing_key(tmp_path: pathlib.Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    split = dealer.split(key, 5, 3)
    out = tmp_path / "split"
    cluster = create_cluster(out, split, passphrases=[PASSPHRASE], kdf=FAST)
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    assert (out / "public.pem").read_bytes() == key.public_key().public_bytes(*spki)
    assert cluster.params.sharing == "integer" and not cluster.params.proofs_sound
    assert any("not sound" in w for w in split.warnings)
    assert "NOT sound" in describe(cluster)
    share = storage.read_share_file(out / "node-4" / "share.enc", cluster.params, 4, PASSPHRASE)
    share.self_test()


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


def test_cli_keygen(tmp_path: pathlib.Path) -> None:
    _write_secret(tmp_path / "pass.txt", PASSPHRASE + b"\n")
    done = _run_cli(
        "keygen",
        "--insecure-small-key-for-tests",
        "--bits",
        "1024",
        "--nodes",
        "4",
        "--threshold",
        "2",
        "--passphrase-file",
        "pass.txt",
        "--kdf",
        "fast-insecure-for-tests",
        "--out",
        "c",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    cluster = ClusterFile.load(tmp_path / "c")
    assert (cluster.params.n, cluster.params.k, cluster.params.bits) == (4, 2, 1024)
    assert cluster.params.key_id in done.stdout
    assert "ittc cluster up" in done.stdout and "ittc sign --cluster" in done.stdout
    assert PASSPHRASE.decode() not in done.stdout + done.stderr
    assert "1024-bit test key" in done.stderr and "test-only KDF" in done.stderr
    config = NodeConfig.load(tmp_path / "c" / "node-4" / "node.toml")
    assert config.passphrase_file is not None
    assert config.passphrase_file.resolve() == (tmp_path / "pass.txt").resolve()
    share = storage.read_share_file(config.share_file, cluster.params, 4, PASSPHRASE)
    assert share.index == 4


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


def test_cli_asks_for_passphrase_only_on_a_terminal(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert (
        cli.main(
            [
                "keygen",
                "--out",
                str(tmp_path / "c"),
                "--bits",
                "1024",
                "--insecure-small-key-for-tests",
            ]
        )
        == 2
    )
    assert "not a terminal" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["first passphrase", "second passphrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert (
        cli.main(
            [
                "keygen",
                "--out",
                str(tmp_path / "c"),
                "--bits",
                "1024",
                "--insecure-small-key-for-tests",
            ]
        )
        == 2
    )
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
    assert "passphrase is wrong" in capsys.readouterr().err
    assert cli.main(argv) == 2
    assert "--key-passphrase-file" in capsys.readouterr().err
    assert cli.main(argv + ["--key-passphrase-file", str(key_pass)]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "not sound" in captured.err
    assert "Destroy it" in captured.out
    public = serialization.load_pem_public_key((tmp_path / "c" / "public.pem").read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()

    assert cli.main(["info", "--cluster", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "any 2 of 3" in out and "NOT sound" in out

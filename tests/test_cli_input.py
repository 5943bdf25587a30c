"""Bad input to the command line and to the combiner: one clear line that names the flag
or the file and says what is wrong, exit status 2, nothing written, never a traceback.

Numbers are bounded by argparse types; keygen and split check every flag before the prime
search or the split; the combiner checks its own TLS identity before it dials a node.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ittc import cli
from ittc.combiner import ClusterClient
from ittc.config import ClusterFile
from ittc.errors import ClientIdentityError
from ittc.storage import KdfLimits, pki
from ittc.wire import tls

NOW = datetime.datetime.now(datetime.UTC)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``ittc argv`` in this process; it must exit 2 with one ``ittc: error:`` line."""
    assert cli.main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ittc: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- numbers and addresses, checked by argparse -------------------------------------------

CLUSTER = ["--cluster", "/nonexistent/cluster"]
CA = CLUSTER + ["--ca-cert", "/nonexistent/root.pem", "--out", "/nonexistent/x"]

BAD_NUMBERS = [
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--salt-length", "-1"], "--salt-length"),
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--salt-length", "513"], "--salt-length"),
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--deadline", "0"], "--deadline"),
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--deadline", "-5"], "--deadline"),
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--deadline", "nan"], "--deadline"),
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--deadline", "inf"], "--deadline"),
    (["sign", *CLUSTER, "--in", "x", "--out", "y", "--deadline", "soon"], "--deadline"),
    (["status", *CLUSTER, "--timeout", "0"], "--timeout"),
    (["status", *CLUSTER, "--timeout", "1e9"], "--timeout"),
    (["cluster", "up", "/nonexistent", "--timeout", "-1"], "--timeout"),
    (["ca", "selfsign", *CLUSTER, "--out", "x", "--subject", "CN=x", "--days", "0"], "--days"),
    (["ca", "issue", *CA, "--csr", "x", "--days", "36501"], "--days"),
    (["ca", "crl", *CA, "--number", "-1"], "--number"),
    (["ca", "crl", *CA, "--number", str(2**159)], "--number"),
    (["ca", "crl", *CA, "--days", "0"], "--days"),
    (["ca", "ocsp", *CA, "--request", "x", "--status", "good", "--hours", "0"], "--hours"),
    (["keygen", "--out", "/nonexistent/k", "--nodes", "0"], "--nodes"),
    (["keygen", "--out", "/nonexistent/k", "--nodes", "65"], "--nodes"),
    (["keygen", "--out", "/nonexistent/k", "--threshold", "0"], "--threshold"),
    (["keygen", "--out", "/nonexistent/k", "--bits", "100"], "--bits"),
    (["keygen", "--out", "/nonexistent/k", "--e", "1"], "--e"),
    (["keygen", "--out", "/nonexistent/k", "--base-port", "0"], "--base-port"),
    (["keygen", "--out", "/nonexistent/k", "--base-port", "70000"], "--base-port"),
    (["keygen", "--out", "/nonexistent/k", "--address", "h:99999"], "--address"),
    (["keygen", "--out", "/nonexistent/k", "--address", "10.0.0.1"], "--address"),
    (["keygen", "--out", "/nonexistent/k", "--address", "fe80::1:7000"], "--address"),
    (["split", "--key", "k", "--out", "/nonexistent/k", "--nodes", "-3"], "--nodes"),
    (["demo", "--bits", "1000"], "--bits"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_NUMBERS, ids=lambda v: " ".join(v)[:60])
def test_bad_numbers_name_their_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(argv, capsys)
    assert f"argument {flag}:" in line
    assert repr(argv[-1]) in line or argv[-1] in line  # the value as typed, quoted


KEYGEN = ["keygen", "--insecure-small-key-for-tests", "--bits", "1024"]
KEYGEN += ["--kdf", "fast-insecure-for-tests"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--bits", "1000"], "--bits 1000: use 2048, 3072 or 4096"),
        (["--threshold", "7"], "--threshold 7 is more than --nodes 5"),
        (["--e", "3"], "--e 3: public exponent e = 3 is too small for 5 nodes"),
        (["--e", "65535"], "e = 65535 is not prime"),
        (["--nodes", "3", "--address", "a:1", "--address", "b:2"], "--address given 2 times"),
        (["--nodes", "2", "--threshold", "2", "--address", "a:1", "--address", "a:1"], "distinct"),
        (["--listen", "a", "--listen", "b"], "--listen given 2 times"),
        (["--base-port", "65533"], "would need port 65537"),
        (["--host", "fe80::1:7000:x"], "--host"),
    ],
)
def test_keygen_refuses_before_the_prime_search(
    extra: list[str],
    words: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*KEYGEN, "--out", str(tmp_path / "k"), *extra]
    if extra[:2] == ["--bits", "1000"]:
        argv.remove("--insecure-small-key-for-tests")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err, err
    assert "safe prime" not in err  # refused before any key generation
    assert list(tmp_path.iterdir()) == []


# -- split: what the key file is -----------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _split(key: pathlib.Path, out: pathlib.Path, *extra: str) -> list[str]:
    argv = ["split", "--key", str(key), "--out", str(out), "--nodes", "3", "--threshold", "2"]
    return argv + list(extra)


SPLIT_REFUSALS: dict[str, tuple[Callable[[rsa.RSAPrivateKey], bytes], str]] = {
    "public key (PEM)": (
        lambda k: k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "this is a public key, not a private key",
    ),
    "public key (PKCS#1 PEM)": (
        lambda k: k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "this is an RSA public key, not a private key",
    ),
    "public key (DER)": (
        lambda k: k.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "this is a public key (DER), not a private key",
    ),
    "certificate (PEM)": (
        lambda k: _self_signed(k).public_bytes(serialization.Encoding.PEM),
        "this is an X.509 certificate, not a private key",
    ),
    "certificate (DER)": (
        lambda k: _self_signed(k).public_bytes(serialization.Encoding.DER),
        "this is an X.509 certificate (DER), not a private key",
    ),
    "an EC private key": (
        lambda k: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "an EC private key, not an RSA one",
    ),
    "text": (lambda k: b"hello\n", "not a private key (neither PEM nor DER)"),
    "encrypted DER, no passphrase given": (
        lambda k: k.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key passphrase"),
        ),
        "the key is encrypted; give --key-passphrase-file",
    ),
}


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a root")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("case", list(SPLIT_REFUSALS))
def test_split_says_what_the_key_file_is(
    case: str,
    rsa_key: rsa.RSAPrivateKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, words = SPLIT_REFUSALS[case]
    key = _write(tmp_path / "key", make(rsa_key))
    line = refused(_split(key, tmp_path / "out"), capsys)
    assert f"--key {key}: {words}" in line
    assert not (tmp_path / "out").exists()


def test_split_refuses_an_exponent_too_small_for_n(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    key = _write(
        tmp_path / "e3.pem",
        small.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    line = refused(_split(key, tmp_path / "out"), capsys)
    assert "public exponent e = 3 is too small for 3 nodes" in line
    assert "allows at most 2 nodes" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "form",
    ["DER PKCS#8", "DER PKCS#1", "DER PKCS#8, encrypted", "PEM PKCS#1", "OpenSSH"],
)
def test_split_reads_der_and_other_encodings(
    form: str,
    rsa_key: rsa.RSAPrivateKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    encrypted = "encrypted" in form
    encoding, fmt = {
        "DER PKCS#8": (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
        "DER PKCS#1": (serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL),
        "DER PKCS#8, encrypted": (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
        "PEM PKCS#1": (serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL),
        "OpenSSH": (serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH),
    }[form]
    protection: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(b"key passphrase")
        if encrypted
        else serialization.NoEncryption()
    )
    key = _write(tmp_path / "key", rsa_key.private_bytes(encoding, fmt, protection))
    argv = _split(key, tmp_path / "out", "--kdf", "fast-insecure-for-tests")
    if encrypted:
        wrong = _write(tmp_path / "wrong", b"not the passphrase\n")
        line = refused([*argv, "--key-passphrase-file", str(wrong)], capsys)
        assert "not a DER private key, or --key-passphrase-file does not open it" in line
        argv += ["--key-passphrase-file", str(_write(tmp_path / "pass", b"key passphrase\n"))]
    assert cli.main(argv) == 0, capsys.readouterr().err
    public = ClusterFile.load(tmp_path / "out").params.public_key()
    assert public.public_numbers() == rsa_key.public_key().public_numbers()


# -- the combiner's own TLS identity, checked before dialling -------------------------------


def _identity(
    tmp: pathlib.Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ittc-client")]))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(issuer[1], hashes.SHA256())
    )
    pki.write_cert(tmp / f"{name}.pem", cert)
    pki.write_private_key(tmp / f"{name}.key", key)
    return tmp / f"{name}.pem", tmp / f"{name}.key"


@pytest.fixture
def ca(tmp_path: pathlib.Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert, key = pki.make_ca("the cluster CA")
    pki.write_cert(tmp_path / "ca.pem", cert)
    return cert, key


def _bad_identities(
    tmp: pathlib.Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> dict[str, tuple[pathlib.Path, pathlib.Path, str]]:
    day = datetime.timedelta(days=1)
    cases = {}
    cert, key = _identity(tmp, "expired", ca, not_before=NOW - 30 * day, not_after=NOW - day)
    cases["expired"] = (cert, key, "expired on")
    cert, key = _identity(tmp, "early", ca, not_before=NOW + day, not_after=NOW + 30 * day)
    cases["not valid yet"] = (cert, key, "is not valid before")
    cert, _ = _identity(tmp, "a", ca)
    _, other = _identity(tmp, "b", ca)
    cases["key of another certificate"] = (cert, other, "is not the key of the client certificate")
    cert, key = _identity(tmp, "foreign", pki.make_ca("another cluster's CA"))
    cases["another cluster's CA"] = (cert, key, "was not issued by the cluster CA")
    cert, key = _identity(tmp, "server", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    cases["a server certificate"] = (cert, key, "is not for client authentication")
    good_cert, good_key = _identity(tmp, "good", ca)
    cases["key file missing"] = (good_cert, tmp / "missing.key", "no such file")
    (tmp / "dir.key").mkdir()
    cases["key is a directory"] = (good_cert, tmp / "dir.key", "cannot be read")
    cases["certificate given as key"] = (good_cert, good_cert, "holds a PEM 'CERTIFICATE'")
    cases["key given as certificate"] = (good_key, good_key, "not a certificate")
    der = tmp / "der.pem"
    der.write_bytes(pki.load_cert(good_cert).public_bytes(serialization.Encoding.DER))
    cases["DER certificate"] = (der, good_key, "is in DER; gRPC needs PEM")
    encrypted = tmp / "encrypted.key"
    encrypted.write_bytes(
        pki.load_private_key(good_key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cases["encrypted key"] = (good_cert, encrypted, "encrypted")
    return cases


def test_client_identity_problems_are_named_before_dialling(
    tmp_path: pathlib.Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    ca_pem = tmp_path / "ca.pem"
    for case, (cert, key, words) in _bad_identities(tmp_path, ca).items():
        with pytest.raises(ClientIdentityError) as info:
            tls.client_credentials(cert, key, ca_pem, now=NOW.timestamp())
        message = str(info.value)
        assert words in message, (case, message)
        assert str(key) in message or str(cert) in message, (case, message)
    good_cert, good_key = _identity(tmp_path, "fine", ca)
    tls.client_credentials(good_cert, good_key, ca_pem, now=NOW.timestamp())  # the control


def _cluster_with_identity(
    tmp: pathlib.Path, ceremony: pathlib.Path, cert: pathlib.Path, key: pathlib.Path
) -> pathlib.Path:
    """The ceremony's combiner bundle, presenting ``cert``/``key`` instead."""
    bundle = tmp / f"bundle-{cert.stem}"
    bundle.mkdir()
    for name in ("params.json", "public.pem", "ca.pem"):
        (bundle / name).write_bytes((ceremony / "combiner" / name).read_bytes())
    text = (ceremony / "combiner" / "cluster.toml").read_text()
    text = text.replace('cert = "client.pem"', f'cert = "{cert}"')
    text = text.replace('key = "client.key"', f'key = "{key}"')
    (bundle / "cluster.toml").write_text(text)
    return bundle


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from ittc.deploy.ceremony import create_cluster
    from ittc.scheme import dealer

    out = tmp_path_factory.mktemp("identity") / "c"
    dealt = dealer.generate(1024, n=3, k=2, insecure_allow_small_modulus_for_tests=True)
    create_cluster(out, dealt, kdf=KdfLimits.fast_for_tests(), base_port=1)
    return out


def test_cluster_client_checks_its_identity_first(
    ceremony: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    issuer = (
        pki.load_cert(ceremony / "ca" / "ca.pem"),
        pki.load_private_key(ceremony / "ca" / "ca.key"),
    )
    day = datetime.timedelta(days=1)
    cert, key = _identity(tmp_path, "old", issuer, not_before=NOW - 9 * day, not_after=NOW - day)
    bundle = _cluster_with_identity(tmp_path, ceremony, cert, key)

    async def connect() -> None:
        async with ClusterClient(bundle):
            pass

    with pytest.raises(ClientIdentityError, match="expired on"):
        asyncio.run(connect())
    # The clock is the client's own: one set back to when the certificate was valid agrees.
    back = (NOW - 5 * day).timestamp()
    client = ClusterClient(bundle, clock=lambda: back)

    async def connect_and_close() -> None:
        async with client:
            assert len(client.channels) == 3

    asyncio.run(connect_and_close())


@pytest.mark.network  # runs `ittc sign` (it fails before it dials anything)
def test_cli_says_what_is_wrong_with_the_identity_in_one_line(
    ceremony: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    issuer = (
        pki.load_cert(ceremony / "ca" / "ca.pem"),
        pki.load_private_key(ceremony / "ca" / "ca.key"),
    )
    cert, _ = _identity(tmp_path, "mine", issuer)
    _, other_key = _identity(tmp_path, "theirs", issuer)
    bundle = _cluster_with_identity(tmp_path, ceremony, cert, other_key)
    (tmp_path / "msg").write_bytes(b"x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    done = subprocess.run(
        [sys.executable, "-m", "ittc", "sign", "--cluster", str(bundle)]
        + ["--in", str(tmp_path / "msg"), "--out", str(tmp_path / "sig")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"ittc: error: client key {other_key} is not the key of the client certificate "
        f"{cert} (files from two different identities?)"
    ]
    assert not (tmp_path / "sig").exists()


def test_grpc_core_logging_is_silenced_unless_asked_for() -> None:
    code = (
        "import os, ittc.cli; print(os.environ['GRPC_VERBOSITY'], repr(os.environ['GRPC_TRACE']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert quiet.stdout.split() == ["NONE", "''"]
    env.update(GRPC_VERBOSITY="debug", GRPC_TRACE="http")
    asked = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert asked.stdout.split() == ["debug", "'http'"]

"""The cluster as a CA key: certificates, CRLs and OCSP responses signed through the
network and accepted by OpenSSL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ittc import ca
from ittc.ca import OperationRefused, ThresholdRSAPrivateKey
from ittc.errors import IttcError, ParameterError

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def key(live_cluster):
    with ThresholdRSAPrivateKey.open(live_cluster.cluster) as k:
        yield k


@pytest.fixture(scope="module")
def root(key):
    return ca.selfsign(key, "CN=ittc test root,O=ittc tests", 30)


def _pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _csr(name: str = "www.example.test", *, sans=True, key=None):
    leaf_key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.DNSName("alt." + name)]),
            critical=False,
        )
    return builder.sign(leaf_key, hashes.SHA256())


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def test_key_object_is_an_rsa_private_key(key, live_cluster):
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == live_cluster.cluster.params.bits
    assert key.public_key().public_numbers().n == live_cluster.cluster.params.modulus
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        sig = key.sign(b"data", padding.PKCS1v15(), algorithm)
        key.public_key().verify(sig, b"data", padding.PKCS1v15(), algorithm)
        pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.MAX_LENGTH)
        sig = key.sign(b"data", pss, algorithm)
        key.public_key().verify(sig, b"data", pss, algorithm)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"prehashed")
    d = digest.finalize()
    sig = key.sign(d, padding.PSS(padding.MGF1(hashes.SHA256()), 32), Prehashed(hashes.SHA256()))
    key.public_key().verify(
        sig, b"prehashed", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )


def test_key_refuses_decrypt_export_and_raw_signing(key):
    with pytest.raises(OperationRefused):
        key.decrypt(b"\x00" * 128, padding.PKCS1v15())
    with pytest.raises(OperationRefused):
        key.private_numbers()
    with pytest.raises(OperationRefused):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(OperationRefused):
        key.sign(b"\x01" * 32, padding.PKCS1v15(), NoDigestInfo())
    with pytest.raises(UnsupportedAlgorithm, match="not sha1") as info:
        key.sign(b"data", padding.PKCS1v15(), hashes.SHA1())
    assert isinstance(info.value, IttcError)  # both families catch it
    assert "ThresholdRSAPrivateKey" in repr(key)


def test_root_certificate_verifies_with_openssl(root, key, tmp_path):
    assert root.public_key().public_numbers() == key.public_key().public_numbers()
    (tmp_path / "root.pem").write_bytes(_pem(root))
    out = _openssl("verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "root.pem"))
    assert out.returncode == 0, out.stderr
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True


@pytest.mark.parametrize("pad", ["pkcs1v15", "pss"])
def test_issue_certificate_from_csr(root, key, tmp_path, pad):
    cert = ca.issue(key, root, _csr(), 30, pad=pad)
    (tmp_path / "root.pem").write_bytes(_pem(root))
    (tmp_path / "cert.pem").write_bytes(_pem(cert))
    out = _openssl("verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "cert.pem"))
    assert out.returncode == 0, out.stderr
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.test", "alt.www.example.test"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    expected = "rsassaPss" if pad == "pss" else "sha256WithRSAEncryption"
    assert cert.signature_algorithm_oid._name == expected


def test_csr_with_bad_signature_is_refused(root, key):
    good = _csr("tampered.example.test")
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    bad = x509.load_der_x509_csr(bytes(der))
    assert not bad.is_signature_valid
    with pytest.raises(ca.CAError, match="CSR"):
        ca.issue(key, root, bad, 30)


def test_crl_verifies_with_openssl(root, key, tmp_path):
    cert = ca.issue(key, root, _csr("revoked.example.test"), 30)
    crl = ca.crl(key, root, [cert.serial_number, 0x1234])
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    (tmp_path / "root.pem").write_bytes(_pem(root))
    (tmp_path / "crl.pem").write_bytes(_pem(crl))
    out = _openssl(
        "crl",
        "-in",
        str(tmp_path / "crl.pem"),
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-noout",
        "-verify",
    )
    assert out.returncode == 0 and "verify OK" in out.stderr
    # And the revoked certificate fails a CRL-checking verification.
    (tmp_path / "cert.pem").write_bytes(_pem(cert))
    chk = _openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-CRLfile",
        str(tmp_path / "crl.pem"),
        str(tmp_path / "cert.pem"),
    )
    assert chk.returncode != 0 and "revoked" in (chk.stdout + chk.stderr)


def test_crl_number_out_of_range_is_a_typed_error(root, key):
    for number in (-1, 2**159):
        with pytest.raises(ParameterError, match="CRL number"):
            ca.crl(key, root, [], number=number)
    assert (
        ca.crl(key, root, [], number=2**159 - 1)
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
        == 2**159 - 1
    )


@pytest.mark.parametrize("status", ["good", "revoked"])
def test_ocsp_response_verifies_with_openssl(root, key, tmp_path, status):
    cert = ca.issue(key, root, _csr("ocsp.example.test"), 30)
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, root, hashes.SHA1()).build()
    response = ca.ocsp_response(key, root, request, status)
    (tmp_path / "root.pem").write_bytes(_pem(root))
    (tmp_path / "cert.pem").write_bytes(_pem(cert))
    (tmp_path / "resp.der").write_bytes(response.public_bytes(serialization.Encoding.DER))
    out = _openssl(
        "ocsp",
        "-respin",
        str(tmp_path / "resp.der"),
        "-issuer",
        str(tmp_path / "root.pem"),
        "-cert",
        str(tmp_path / "cert.pem"),
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-VAfile",
        str(tmp_path / "root.pem"),
    )
    assert out.returncode == 0, out.stderr
    assert "Response verify OK" in out.stderr
    assert f"cert.pem: {status}" in out.stdout


def test_ocsp_request_for_another_issuer_is_refused(root, key):
    other_key = rsa.generate_private_key(65537, 2048)
    other_root = ca.selfsign(other_key, "CN=someone else", 10)
    leaf = ca.issue(other_key, other_root, _csr("x.example.test"), 10)
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, other_root, hashes.SHA1()).build()
    with pytest.raises(ca.CAError, match="another issuer"):
        ca.ocsp_response(key, root, request, "good")


def test_ca_command_line_end_to_end(live_cluster, tmp_path):
    cluster_dir = str(live_cluster.cluster.root)

    def ittc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ittc", *args], capture_output=True, text=True, timeout=120
        )

    root_pem, cert_pem = tmp_path / "root.pem", tmp_path / "cert.pem"
    out = ittc(
        "ca",
        "selfsign",
        "--cluster",
        cluster_dir,
        "--subject",
        "CN=CLI Root,O=ittc",
        "--days",
        "30",
        "--out",
        str(root_pem),
    )
    assert out.returncode == 0, out.stderr
    (tmp_path / "req.pem").write_bytes(_pem(_csr("cli.example.test")))
    out = ittc(
        "ca",
        "issue",
        "--cluster",
        cluster_dir,
        "--ca-cert",
        str(root_pem),
        "--csr",
        str(tmp_path / "req.pem"),
        "--days",
        "10",
        "--out",
        str(cert_pem),
        "--padding",
        "pss",
    )
    assert out.returncode == 0, out.stderr
    assert _openssl("verify", "-CAfile", str(root_pem), str(cert_pem)).returncode == 0
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    out = ittc(
        "ca",
        "crl",
        "--cluster",
        cluster_dir,
        "--ca-cert",
        str(root_pem),
        "--revoke",
        str(cert.serial_number),
        "--out",
        str(tmp_path / "crl.pem"),
    )
    assert out.returncode == 0, out.stderr
    assert (
        _openssl(
            "crl", "-in", str(tmp_path / "crl.pem"), "-CAfile", str(root_pem), "-noout", "-verify"
        ).returncode
        == 0
    )
    req = _openssl(
        "ocsp",
        "-issuer",
        str(root_pem),
        "-cert",
        str(cert_pem),
        "-reqout",
        str(tmp_path / "req.der"),
        "-no_nonce",
    )
    assert req.returncode == 0, req.stderr
    out = ittc(
        "ca",
        "ocsp",
        "--cluster",
        cluster_dir,
        "--ca-cert",
        str(root_pem),
        "--request",
        str(tmp_path / "req.der"),
        "--status",
        "revoked",
        "--out",
        str(tmp_path / "resp.der"),
    )
    assert out.returncode == 0, out.stderr
    chk = _openssl(
        "ocsp",
        "-respin",
        str(tmp_path / "resp.der"),
        "-issuer",
        str(root_pem),
        "-cert",
        str(cert_pem),
        "-VAfile",
        str(root_pem),
    )
    assert chk.returncode == 0 and "revoked" in chk.stdout
    # A CSR whose signature is broken: refused, nothing written.
    der = bytearray(_csr("bad.example.test").public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    (tmp_path / "bad.der").write_bytes(bytes(der))
    out = ittc(
        "ca",
        "issue",
        "--cluster",
        cluster_dir,
        "--ca-cert",
        str(root_pem),
        "--csr",
        str(tmp_path / "bad.der"),
        "--days",
        "10",
        "--out",
        str(tmp_path / "bad.pem"),
    )
    assert out.returncode == 2 and "CSR" in out.stderr
    assert not (tmp_path / "bad.pem").exists()


# -- the CA's record ---------------------------------------------------------------------


def _ittc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ittc", *args], capture_output=True, text=True, timeout=120
    )


def test_ca_with_memory_issue_revoke_crl_ocsp_list(live_cluster, tmp_path):
    """The CA remembers: issue records, revoke records, crl and ocsp answer from the
    record (no serial given on their command line), list shows it; OpenSSL agrees."""
    cluster = str(live_cluster.cluster.root)
    state = tmp_path / "state"
    common = ["--cluster", cluster, "--state", str(state)]
    root_pem = tmp_path / "root.pem"
    out = _ittc("ca", "selfsign", *common, "--subject", "CN=Memory Root", "--out", str(root_pem))
    assert out.returncode == 0, out.stderr
    issued = []
    for name in ("keep.example.test", "gone.example.test"):
        (tmp_path / f"{name}.csr").write_bytes(_pem(_csr(name)))
        cert_pem = tmp_path / f"{name}.pem"
        out = _ittc(
            "ca",
            "issue",
            *common,
            "--ca-cert",
            str(root_pem),
            "--csr",
            str(tmp_path / f"{name}.csr"),
            "--days",
            "30",
            "--out",
            str(cert_pem),
            "--san",
            "IP:192.0.2.7",
            "--ocsp-url",
            "http://ocsp.example.test",
            "--crl-url",
            "http://crl.example.test/root.crl",
        )
        assert out.returncode == 0, out.stderr
        issued.append(x509.load_pem_x509_certificate(cert_pem.read_bytes()))
    keep, gone = issued
    text = _openssl("x509", "-in", str(tmp_path / "keep.example.test.pem"), "-noout", "-text")
    assert "IP Address:192.0.2.7" in text.stdout and "DNS:keep.example.test" in text.stdout
    assert "OCSP - URI:http://ocsp.example.test" in text.stdout
    assert "URI:http://crl.example.test/root.crl" in text.stdout

    out = _ittc(
        "ca",
        "revoke",
        *common,
        "--ca-cert",
        str(root_pem),
        hex(gone.serial_number),
        "--reason",
        "keyCompromise",
    )
    assert out.returncode == 0, out.stderr
    # Revoking again, or a serial this CA never issued: refused, the record unchanged.
    again = _ittc("ca", "revoke", *common, "--ca-cert", str(root_pem), hex(gone.serial_number))
    assert again.returncode == 2 and "already revoked" in again.stderr
    unknown = _ittc("ca", "revoke", *common, "--ca-cert", str(root_pem), "0x1234")
    assert unknown.returncode == 2 and "not issued by this CA" in unknown.stderr

    listing = _ittc("ca", "list", *common, "--ca-cert", str(root_pem), "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["subject"]: row for row in json.loads(listing.stdout)}
    assert rows["CN=gone.example.test"]["status"] == "revoked"
    assert rows["CN=gone.example.test"]["reason"] == "keyCompromise"
    assert rows["CN=keep.example.test"]["status"] == "good"
    assert rows["CN=Memory Root"]["profile"] == "root"

    numbers = []
    for i in range(2):
        crl_pem = tmp_path / f"crl{i}.pem"
        out = _ittc("ca", "crl", *common, "--ca-cert", str(root_pem), "--out", str(crl_pem))
        assert out.returncode == 0, out.stderr
        crl = x509.load_pem_x509_crl(crl_pem.read_bytes())
        assert [r.serial_number for r in crl] == [gone.serial_number]
        entry = crl.get_revoked_certificate_by_serial_number(gone.serial_number)
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
            x509.ReasonFlags.key_compromise
        )
        numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        assert (
            _openssl(
                "crl", "-in", str(crl_pem), "-CAfile", str(root_pem), "-noout", "-verify"
            ).returncode
            == 0
        )
    assert numbers[1] > numbers[0]  # RFC 5280: CRL numbers increase

    for cert, expected in ((keep, "good"), (gone, "revoked")):
        name = cert.subject.rfc4514_string().removeprefix("CN=")
        req = tmp_path / f"{name}.ocspreq"
        made = _openssl(
            "ocsp",
            "-issuer",
            str(root_pem),
            "-cert",
            str(tmp_path / f"{name}.pem"),
            "-reqout",
            str(req),
            "-no_nonce",
        )
        assert made.returncode == 0, made.stderr
        resp = tmp_path / f"{name}.ocspresp"
        out = _ittc(
            "ca",
            "ocsp",
            *common,
            "--ca-cert",
            str(root_pem),
            "--request",
            str(req),
            "--out",
            str(resp),
        )
        assert out.returncode == 0, out.stderr
        chk = _openssl(
            "ocsp",
            "-respin",
            str(resp),
            "-issuer",
            str(root_pem),
            "-cert",
            str(tmp_path / f"{name}.pem"),
            "-VAfile",
            str(root_pem),
        )
        assert chk.returncode == 0 and f": {expected}" in chk.stdout, chk.stdout
        if expected == "revoked":
            assert "Reason: keyCompromise" in chk.stdout


def test_ca_outputs_are_not_overwritten_without_force(live_cluster, tmp_path):
    cluster = str(live_cluster.cluster.root)
    out_pem = tmp_path / "root.pem"
    out_pem.write_bytes(b"precious")
    args = [
        "ca",
        "selfsign",
        "--cluster",
        cluster,
        "--state",
        str(tmp_path / "s"),
        "--subject",
        "CN=Overwrite",
        "--out",
        str(out_pem),
    ]
    refused = _ittc(*args)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert out_pem.read_bytes() == b"precious"
    forced = _ittc(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert out_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_a_record_belongs_to_one_ca_certificate(root, tmp_path):
    from ittc.ca.registry import Registry
    from ittc.errors import CAError

    registry = Registry(tmp_path, root)
    other_key = rsa.generate_private_key(65537, 2048)
    other_root = ca.selfsign(other_key, "CN=another root", 10)
    # A second root (a renewal, say) gets a record of its own, beside the first.
    Registry(tmp_path, other_root).record_issued(other_root, "root")
    assert registry.certificates() == []
    # A record file moved under another certificate's name refuses to open.
    moved = tmp_path / f"ca-{Registry(tmp_path, other_root).ca[:16]}.sqlite3"
    moved.unlink()
    registry.path.rename(moved)
    with pytest.raises(CAError, match="another CA certificate"):
        Registry(tmp_path, other_root)

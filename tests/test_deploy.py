"""Deploying the ceremony's output the way an operator does, with real processes.

The ceremony runs non-interactively (a random passphrase per site); each site folder and
the combiner bundle are copied ALONE to their own "host" folder; ``ittc ceremony finish``
then destroys what is left of the ceremony, so nothing else of it exists; the nodes start
from their copies (config read-only, where the machine allows a read-only bind mount),
one reading its passphrase from a systemd-style credential directory, one dialled
through a port forward (NAT), one by a DNS name; and the combiner bundle alone signs
through them over real mutual TLS, checked with ``cryptography`` and ``openssl``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ittc import storage
from ittc.config import ClusterFile, NodeConfig
from ittc.errors import WrongPassphrase
from ittc.storage import pki
from tests.cluster import free_ports

KEYGEN = ["--insecure-small-key-for-tests", "--bits", "1024", "--kdf", "fast-insecure-for-tests"]
UNIT = pathlib.Path(__file__).parent.parent / "nodes" / "systemd" / "ittc-node@.service"


def ittc(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ittc", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def files_under(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


class Relay:
    """A TCP port forward (what a NAT in front of a site does): ``listen_port`` on
    loopback to ``target_port``, each connection copied both ways by two threads."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", listen_port))
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.server.close()
        self.thread.join(timeout=5)


def _read_only_mount_works(tmp: pathlib.Path) -> bool:
    probe = tmp / "ro-probe"
    probe.mkdir()
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f"mount --bind -o ro {probe} {probe} && ! touch {probe}/x",
        ],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0 and not (probe / "x").exists()


@dataclass
class Deployment:
    ceremony_stdout: str
    hosts: dict[int, pathlib.Path]
    combiner: pathlib.Path
    public_pem: pathlib.Path
    nodes: dict[int, subprocess.Popen[bytes]]
    read_only_etc: bool
    witness: dict[str, tuple[pathlib.Path, bytes]]
    ports: dict[str, int]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("deploy")
    p1, p2, p3, q3 = free_ports(4)
    # Site 1 is dialled by a DNS name; site 3 at a port its NAT forwards to its port q3.
    done = ittc(
        "keygen",
        *KEYGEN,
        "--nodes",
        "3",
        "--threshold",
        "2",
        "--out",
        "ceremony",
        "--address",
        f"localhost:{p1}",
        "--address",
        f"127.0.0.1:{p2}",
        "--address",
        f"127.0.0.1:{p3}",
        "--listen",
        "0.0.0.0",  # every interface, at the advertised port
        "--listen",
        "127.0.0.1",
        "--listen",
        f"127.0.0.1:{q3}",
        cwd=base,  # stdin is /dev/null: non-interactive
    )
    assert done.returncode == 0, done.stderr
    ceremony = base / "ceremony"

    # Ship: each bundle copied alone to its own host folder.
    hosts = {i: base / f"host-{i}" for i in (1, 3)}
    for i, host in hosts.items():
        host.mkdir()
        shutil.copytree(ceremony / f"site-{i}", host / f"site-{i}", symlinks=True)
    combiner_host = base / "combiner-host"
    combiner_host.mkdir()
    shutil.copytree(ceremony / "combiner", combiner_host / "combiner", symlinks=True)

    # Finish the ceremony: a second name for two secrets shows they are overwritten.
    witness = {}
    for name, path in (
        ("share", ceremony / "site-2" / "etc" / "share.enc"),
        ("passphrase", ceremony / "site-2" / "passphrase"),
    ):
        os.link(path, base / f"witness-{name}")
        witness[name] = (base / f"witness-{name}", path.read_bytes())
    assert ittc("ceremony", "finish", "ceremony", cwd=base).returncode == 2  # no --yes, no tty
    assert (ceremony / "site-2" / "etc" / "share.enc").exists()
    finished = ittc("ceremony", "finish", "ceremony", "--yes", "--ca-key-offline", cwd=base)
    assert finished.returncode == 0, finished.stderr
    assert not ceremony.exists()

    # Site 3 moves its passphrase into a (systemd-style) credential directory.
    credentials = base / "credentials-3"
    credentials.mkdir(mode=0o700)
    shutil.move(hosts[3] / "site-3" / "passphrase", credentials / "passphrase")
    os.chmod(credentials / "passphrase", 0o400)

    read_only = _read_only_mount_works(base)
    nodes = {}
    relay = Relay(p3, q3)
    try:
        for i, host in hosts.items():
            etc = host / f"site-{i}" / "etc"
            node = [sys.executable, "-m", "ittc_node", "--config", str(etc / "node.toml")]
            if read_only:  # as systemd's ReadOnlyPaths= does: only var/ stays writable
                script = f'mount --bind -o ro "{etc}" "{etc}" && exec "$@"'
                node = ["unshare", "--mount", "sh", "-c", script, "sh", *node]
            env = dict(os.environ)
            env.pop("CREDENTIALS_DIRECTORY", None)
            if i == 3:
                env["CREDENTIALS_DIRECTORY"] = str(credentials)
            nodes[i] = subprocess.Popen(
                node,
                cwd=base,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            status = ittc("status", "--cluster", "combiner", cwd=combiner_host)
            if status.returncode == 0:
                break
            for i, proc in nodes.items():
                assert proc.poll() is None, f"node {i} exited: {proc.stdout.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.5)
        yield Deployment(
            done.stdout,
            hosts,
            combiner_host / "combiner",
            combiner_host / "combiner" / "public.pem",
            nodes,
            read_only,
            witness,
            {"p1": p1, "p3": p3, "q3": q3},
        )
    finally:
        for proc in nodes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in nodes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        relay.close()


@pytest.mark.network
def test_ceremony_says_where_each_part_goes(deployment: Deployment) -> None:
    out = deployment.ceremony_stdout
    for words in ("site-1/ ... site-3/", "combiner/", "ca/ca.key", "ittc ceremony finish"):
        assert words in out


@pytest.mark.network
def test_bundles_copied_alone_hold_only_their_own(deployment: Deployment) -> None:
    combiner = files_under(deployment.combiner)
    assert sorted(combiner) == [
        "ca.pem",
        "client.key",
        "client.pem",
        "cluster.toml",
        "params.json",
        "public.pem",
    ]
    assert not any(data.startswith(b"ITTC-SHARE") for data in combiner.values())
    client = pki.load_cert(deployment.combiner / "client.pem")
    key = serialization.load_pem_private_key(combiner["client.key"], password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == client.public_key().public_bytes(*spki)
    ca = pki.load_cert(deployment.combiner / "ca.pem")
    assert ca.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki)
    site1 = deployment.hosts[1] / "site-1"
    assert sorted(files_under(site1)) == [
        "README.txt",
        "etc/ca.pem",
        "etc/node.toml",
        "etc/params.json",
        "etc/share.enc",
        "etc/tls.key",
        "etc/tls.pem",
        "passphrase",
        "var/audit.log",
    ]
    params = ClusterFile.load(deployment.combiner).params
    # Site 1's passphrase opens site 1's share file and not site 3's.
    passphrase = storage.read_passphrase_file(site1 / "passphrase")
    site3_share = deployment.hosts[3] / "site-3" / "etc" / "share.enc"
    storage.read_share_file(site1 / "etc" / "share.enc", params, 1, passphrase)
    with pytest.raises(WrongPassphrase):
        storage.read_share_file(site3_share, params, 3, passphrase)


@pytest.mark.network
def test_finish_destroyed_the_ceremony_by_overwriting(deployment: Deployment) -> None:
    for path, original in deployment.witness.values():
        data = path.read_bytes()  # the same inode, reached by another name
        assert len(data) == len(original) and data != original


@pytest.mark.network
def test_sign_through_copied_sites_with_the_combiner_bundle_alone(
    deployment: Deployment, tmp_path: pathlib.Path
) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"signed by sites that were shipped as folders")
    public = serialization.load_pem_public_key(deployment.public_pem.read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    for pad, extra in (("pkcs1v15", []), ("pss", ["-sigopt", "rsa_padding_mode:pss"])):
        sig = tmp_path / f"{pad}.sig"
        done = ittc(
            "sign",
            "--cluster",
            str(deployment.combiner),
            "--in",
            str(message),
            "--out",
            str(sig),
            "--padding",
            pad,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        if pad == "pss":
            scheme: padding.AsymmetricPadding = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
            extra += ["-sigopt", "rsa_pss_saltlen:32"]
        else:
            scheme = padding.PKCS1v15()
        public.verify(sig.read_bytes(), message.read_bytes(), scheme, hashes.SHA256())
        openssl = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(deployment.public_pem), *extra]
            + ["-signature", str(sig), str(message)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert openssl.returncode == 0 and "Verified OK" in openssl.stdout, openssl.stderr


@pytest.mark.network
def test_state_in_var_config_untouched(deployment: Deployment) -> None:
    for i, host in deployment.hosts.items():
        site = host / f"site-{i}"
        config = NodeConfig.load(site / "etc" / "node.toml")
        assert config.audit_log.resolve() == (site / "var" / "audit.log").resolve()
        assert config.audit_log.stat().st_size > 0
        assert sorted(p.name for p in (site / "etc").iterdir()) == [
            "ca.pem",
            "node.toml",
            "params.json",
            "share.enc",
            "tls.key",
            "tls.pem",
        ]


@pytest.mark.network
def test_listen_is_not_the_advertised_address(deployment: Deployment) -> None:
    cluster = ClusterFile.load(deployment.combiner)
    node3 = NodeConfig.load(deployment.hosts[3] / "site-3" / "etc" / "node.toml")
    assert cluster.node(3).address == f"127.0.0.1:{deployment.ports['p3']}"
    assert node3.listen == f"127.0.0.1:{deployment.ports['q3']}"
    node1 = NodeConfig.load(deployment.hosts[1] / "site-1" / "etc" / "node.toml")
    assert cluster.node(1).address == f"localhost:{deployment.ports['p1']}"
    assert node1.listen == f"0.0.0.0:{deployment.ports['p1']}"
    # Only sites 1 and 3 run and k = 2: every signature above needed node 3, reached
    # through the forward from p3 (the relay) to q3 (where it binds).
    assert deployment.nodes[3].poll() is None


@pytest.mark.network
def test_credential_directory_without_the_credential_is_refused(
    deployment: Deployment, tmp_path: pathlib.Path
) -> None:
    site = tmp_path / "site-1"
    shutil.copytree(deployment.hosts[1] / "site-1", site)
    (site / "var" / "audit.log").unlink()
    empty = tmp_path / "credentials"
    empty.mkdir()
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(empty)}
    done = subprocess.run(
        [sys.executable, "-m", "ittc_node", "--config", str(site / "etc" / "node.toml")],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "passphrase_credential" in done.stderr and "LoadCredential" in done.stderr
    assert not (site / "var" / "audit.log").exists()


@pytest.mark.network
def test_etc_was_read_only_where_the_machine_allows(deployment: Deployment) -> None:
    """The nodes above ran with etc/ bind-mounted read-only (as systemd's ReadOnlyPaths=
    does) whenever unprivileged mount namespaces work here; say which."""
    if not deployment.read_only_etc:
        pytest.skip("no mount namespaces here: the nodes ran with a writable etc/")
    assert all(proc.poll() is None for proc in deployment.nodes.values())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_unit_verifies(tmp_path: pathlib.Path) -> None:
    """``systemd-analyze verify`` on the shipped unit, with ExecStart's interpreter (which
    an install puts at /opt/ittc/venv) pointed at this Python."""
    text = UNIT.read_text()
    assert "/opt/ittc/venv/bin/python -m ittc_node --config /srv/ittc/site-%i/etc/node.toml" in text
    assert "ReadWritePaths=/srv/ittc/site-%i/var" in text
    assert "LoadCredentialEncrypted=passphrase:" in text
    unit = tmp_path / "ittc-node@.service"
    unit.write_text(text.replace("/opt/ittc/venv/bin/python", sys.executable))
    os.chmod(unit, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "ittc-node@3.service")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_reshare_refresh_units_verify(tmp_path: pathlib.Path) -> None:
    """``systemd-analyze verify`` on the scheduled refresh (service and timer), with
    ExecStart's ittc pointed at this environment's."""
    ittc = pathlib.Path(sys.executable).parent / "ittc"
    for name in ("ittc-reshare-refresh.service", "ittc-reshare-refresh.timer"):
        text = (UNIT.parent / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/ittc/venv/bin/ittc", str(ittc)))
        os.chmod(tmp_path / name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in sorted(tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr

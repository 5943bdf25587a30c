"""Shared fixtures: the known-answer test key, loaded once, and helpers."""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import pytest

from ittc.scheme import dealer
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams

VECTORS = pathlib.Path(__file__).parent / "vectors"


@dataclass
class VectorKey:
    params: PublicParams
    shares: list[KeyShare]
    p: int
    q: int
    doc: dict

    @property
    def whole(self):
        return dealer.rsa_key_from_primes(self.p, self.q, self.params.e)


def load_vectors() -> dict:
    return json.loads((VECTORS / "shoup_1536.json").read_text())


@pytest.fixture(scope="session")
def vkey() -> VectorKey:
    doc = load_vectors()
    params = PublicParams.from_dict(doc["params"])
    shares = [KeyShare(params, i, int(s, 16)) for i, s in enumerate(doc["shares"], 1)]
    return VectorKey(params, shares, int(doc["p"], 16), int(doc["q"], 16), doc)


# -- live clusters: real node processes over real mutual TLS on loopback ------------------

def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out (and released) on 127.0.0.1."""
    import socket
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def make_cluster_dir(root, *, bits: int = 1024, n: int = 5, k: int = 3):
    """A cluster folder with a small TEST key, fast KDF and free loopback ports."""
    import os
    import pathlib

    from ittc.ceremony import create_cluster
    from ittc.storage import KdfLimits

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pass_file = root / "passphrase"
    fd = os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("correct horse battery staple\n")
    dealt = dealer.generate(bits, n=n, k=k, insecure_allow_small_modulus_for_tests=True)
    out = root / "cluster"
    create_cluster(out, dealt, passphrases=[b"correct horse battery staple"],
                   passphrase_file=pass_file,
                   addresses=[f"127.0.0.1:{p}" for p in free_ports(n)],
                   kdf=KdfLimits.fast_for_tests())
    return out


@pytest.fixture(scope="session")
def live_cluster(tmp_path_factory):
    """Five nodes (3-of-5, 1024-bit test key) running for the whole session."""
    from ittc.localcluster import LocalCluster

    out = make_cluster_dir(tmp_path_factory.mktemp("live"))
    with LocalCluster(out) as local:
        local.start(timeout=120)
        yield local


@pytest.fixture
def cluster(live_cluster):
    """The session cluster, with every node brought back up after the test."""
    yield live_cluster
    for index in live_cluster.indices:
        if not live_cluster.running(index):
            live_cluster.start([index], timeout=60)
        else:
            live_cluster.resume(index)

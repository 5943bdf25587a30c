"""Shared fixtures: the known-answer test key, loaded once, and helpers."""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import pytest

from ittc.scheme import ct, dealer
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams

VECTORS = pathlib.Path(__file__).parent / "vectors"


# -- the exponentiation backend every test in this process uses -------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--ct-backend",
        choices=ct.BACKENDS,
        default=os.environ.get("ITTC_CT_BACKEND", "auto"),
        help="backend of ittc.scheme.ct for this run (default: $ITTC_CT_BACKEND or auto); "
        "'openssl' fails the run if libcrypto is unusable",
    )


def pytest_configure(config):
    ct.use_backend(config.getoption("--ct-backend"))


def pytest_report_header(config):
    return (
        f"ittc.scheme.ct backend: {ct.backend_description()} "
        f"(asked: {config.getoption('--ct-backend')})"
    )


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


@pytest.fixture(scope="session")
def live_cluster(tmp_path_factory):
    """Five nodes (3-of-5, 1536-bit test key) running for the whole session."""
    from tests.cluster import LocalCluster, make_cluster

    out = make_cluster(tmp_path_factory.mktemp("live"), bits=1536)
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

"""Shared fixtures (the known-answer test key, live clusters) and the network guard."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
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
    _install_network_guard()


# -- the network guard --------------------------------------------------------------------
# `-m "not network"` must be a fast unit run, so every test that starts a gRPC server or a
# node process (itself, or through a fixture it sets up) carries the `network` marker.
# Instead of trusting that, the guard fails any unmarked test that starts one.

_running: dict[str, Any] = {"item": None}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _running["item"] = item


def pytest_runtest_teardown(item, nextitem):
    _running["item"] = item  # module and session fixtures may be torn down here


def _check_network(what: str) -> None:
    item = _running["item"]
    if item is not None and item.get_closest_marker("network") is None:
        raise RuntimeError(
            f"{item.nodeid} starts {what} but is not marked `network`: add "
            "@pytest.mark.network (or pytestmark) so `-m 'not network'` stays a unit run"
        )


def _starts_nodes(args: Sequence[str]) -> bool:
    argv = [str(a) for a in args]
    if {"--print-systemd-unit", "--print-example-config"} & set(argv):
        return False  # `ittc node` prints a file and exits
    if {"--help", "-h", "--version"} & set(argv):
        return False
    if "ittc_node" in argv:
        return True
    if "ittc" in argv and "-m" in argv:
        rest = argv[argv.index("ittc") + 1 :]
        return bool(rest) and rest[0] in (
            "node",
            "cluster",
            "demo",
            "sign",
            "status",
            "ca",
            "reshare",
        )
    return False


def _install_network_guard() -> None:
    if getattr(grpc, "_ittc_guarded", False):
        return
    grpc._ittc_guarded = True  # type: ignore[attr-defined]
    real_server, real_aio_server = grpc.server, grpc.aio.server
    real_popen_init = subprocess.Popen.__init__

    def server(*args: Any, **kwargs: Any) -> Any:
        _check_network("a gRPC server")
        return real_server(*args, **kwargs)

    def aio_server(*args: Any, **kwargs: Any) -> Any:
        _check_network("a gRPC server")
        return real_aio_server(*args, **kwargs)

    def popen_init(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        if not isinstance(args, str | bytes) and _starts_nodes(args):
            _check_network("node processes or talks to them")
        real_popen_init(self, args, *rest, **kwargs)

    grpc.server = server
    grpc.aio.server = aio_server
    subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]


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

"""Monitoring, as an operator sets it up: node processes with ``[monitoring]`` in their
node.toml, scraped over real HTTP, probed without a client certificate; the combiner's
metrics through its collector; JSON logs; ``ittc status --json``.

Node 1 serves metrics on one loopback port and health on another; node 2 serves both on
one port and is held NOT_SERVING at startup (test fault ``hold-start``) to show what a
load balancer sees then.
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import tomlkit
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ittc.combiner import SyncClusterClient
from ittc.combiner.metrics import ClientCollector
from ittc.storage import pki
from ittc.wire.v1 import signer_pb2 as pb
from tests.cluster import (
    LocalCluster,
    fault_env,
    free_ports,
    issue_client,
    make_cluster,
    pkcs1_item,
    sign_request,
)

pytestmark = pytest.mark.network

TIMEOUT = 20.0


def monitor(config: pathlib.Path, **fields: str) -> None:
    """What an operator does: set ``[monitoring]`` fields in node.toml."""
    doc = tomlkit.parse(config.read_text())
    for name, value in fields.items():
        doc["monitoring"][name] = value  # type: ignore[index]
    config.write_text(tomlkit.dumps(doc))


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = make_cluster(tmp_path_factory.mktemp("monitoring"))
    metrics_port, health_port, both_port = free_ports(3)
    with LocalCluster(root) as cluster:
        monitor(
            cluster.node_dir(1) / "node.toml",
            metrics_listen=f"127.0.0.1:{metrics_port}",
            health_listen=f"127.0.0.1:{health_port}",
        )
        both = f"127.0.0.1:{both_port}"
        monitor(cluster.node_dir(2) / "node.toml", metrics_listen=both, health_listen=both)
        cluster.start([1, 3, 4], timeout=120)
        cluster.ports = {"metrics": metrics_port, "health": health_port, "both": both_port}
        yield cluster


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of a plain HTTP request to 127.0.0.1:port."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_without_a_client_certificate(nodes: LocalCluster, tmp_path: pathlib.Path) -> None:
    """Pass: plain HTTP ``/healthz`` says 200 SERVING, ``/livez`` 200; the health
    listener has no ``/metrics`` (404), refuses POST (405), answers garbage with 400 and
    says nothing else. Node 2, held at startup, answers 503 NOT_SERVING on ``/healthz``
    (and 200 on ``/livez``) until it is let go, then 200 SERVING; its single listener
    also serves ``/metrics``."""
    health = nodes.ports["health"]
    assert get(health, "/healthz") == (200, "text/plain; charset=utf-8", "SERVING\n")
    assert get(health, "/healthz", "HEAD")[0] == 200
    assert get(health, "/livez")[0] == 200
    assert get(health, "/metrics")[0] == 404
    assert get(health, "/healthz", "POST")[0] == 405
    with socket.create_connection(("127.0.0.1", health), timeout=5) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 ")

    gate = tmp_path / "let-node-2-go"
    nodes.start([2], wait=False, env=fault_env(f"hold-start:{gate}"))
    both = nodes.ports["both"]
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            status = get(both, "/healthz")
            break
        except OSError:
            assert time.monotonic() < deadline, nodes.log_tail(2)
            time.sleep(0.05)
    assert status == (503, "text/plain; charset=utf-8", "NOT_SERVING\n")
    assert get(both, "/livez")[0] == 200
    assert value(samples(get(both, "/metrics")[2]), "ittc_node_serving") == 0.0
    gate.touch()
    nodes.wait_serving([2], timeout=60)
    assert get(both, "/healthz")[1:] == ("text/plain; charset=utf-8", "SERVING\n")
    assert value(samples(get(both, "/metrics")[2]), "ittc_node_serving") == 1.0


def test_node_metrics_count_what_happened(nodes: LocalCluster, tmp_path: pathlib.Path) -> None:
    """Five Sign requests straight to node 1 (1, 2, 3, 5 and 1 items), then a stale one,
    a replayed one, and a GetInfo from an identity (of the cluster CA) no node allows.

    Pass: a real HTTP scrape of node 1 counts exactly those: ok and refused by method,
    refusals by gRPC status and reason (stale, replay, not_allowed), the latency
    histogram's counts, the items signed; the audit log's write-time histogram has one
    observation per write at least; serving is 1, nothing pending; the certificate expiry
    gauges equal the files' dates; the info names the backend; process metrics are
    there. The scrape says nothing of the identities or requests."""
    before = samples(get(nodes.ports["metrics"], "/metrics")[2])
    stub = nodes.stub(1)
    p = nodes.params
    for count in (1, 2, 3, 5):
        items = [pkcs1_item(f"m{count}-{i}".encode()) for i in range(count)]
        assert len(stub.Sign(sign_request(p, items), timeout=TIMEOUT).shares) == count
    stale = sign_request(p, [pkcs1_item(b"old")], timestamp_ms=int(time.time() * 1000) - 10**6)
    replayed = sign_request(p, [pkcs1_item(b"twice")])
    stub.Sign(replayed, timeout=TIMEOUT)
    codes = []
    for request in (stale, replayed):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Sign(request, timeout=TIMEOUT)
        codes.append(refused.value.code())  # type: ignore[attr-defined]
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS]
    probe = issue_client(nodes.root, "monitoring-probe", tmp_path / "probe")
    with pytest.raises(grpc.RpcError):
        nodes.stub(1, *probe).GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT)

    status, content_type, text = get(nodes.ports["metrics"], "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    request = urllib.request.Request(
        f"http://127.0.0.1:{nodes.ports['metrics']}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        assert reply.read().rstrip().endswith(b"# EOF")
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ittc_node_requests_total", method="Sign", outcome="ok") == 5
    assert grew("ittc_node_requests_total", method="Sign", outcome="refused") == 2
    assert grew("ittc_node_requests_total", method="GetInfo", outcome="refused") == 1
    refusals = {
        labels: v - before.get((name, labels), 0.0)
        for (name, labels), v in after.items()
        if name == "ittc_node_refusals_total" and v != before.get((name, labels), 0.0)
    }
    assert refusals == {
        (("code", "FAILED_PRECONDITION"), ("method", "Sign"), ("reason", "stale")): 1.0,
        (("code", "ALREADY_EXISTS"), ("method", "Sign"), ("reason", "replay")): 1.0,
        (("code", "PERMISSION_DENIED"), ("method", "GetInfo"), ("reason", "not_allowed")): 1.0,
    }
    assert grew("ittc_node_request_seconds_count", method="Sign", outcome="ok") == 5
    assert grew("ittc_node_items_signed_total") == 1 + 2 + 3 + 5 + 1
    assert grew("ittc_node_audit_write_seconds_count") >= 1
    assert value(after, "ittc_node_serving") == 1.0
    assert value(after, "ittc_node_pending_items") == 0.0
    tls_pem = pki.load_cert(nodes.node_dir(1) / "tls.pem")
    ca_pem = pki.load_cert(nodes.node_dir(1) / "ca.pem")
    expiry = {
        dict(labels)["file"]: v
        for (name, labels), v in after.items()
        if name == "ittc_node_certificate_expiry_timestamp_seconds"
    }
    assert expiry == {
        "cert": tls_pem.not_valid_after_utc.timestamp(),
        "ca": ca_pem.not_valid_after_utc.timestamp(),
    }
    (info,) = [dict(labels) for (name, labels), _ in after.items() if name == "ittc_node_info"]
    assert (
        info["index"] == "1"
        and info["key"] == p.short_id
        and info["backend"]
        in (
            "openssl",
            "gmpy2",
        )
    )
    assert value(after, "process_cpu_seconds_total") > 0
    assert "monitoring-probe" not in text and "ittc-client" not in text
    assert replayed.request_id not in text


def test_the_combiner_metrics_through_its_collector(nodes: LocalCluster) -> None:
    """An embedder registers ``ClientCollector(client)`` in its own registry. Pass: after
    signing 12 messages the exposition counts 12 signatures, as many Sign RPCs as
    ``client.stats`` says, node events for the nodes that answered and none for nodes 5
    (down), and a latency gauge per node; nothing goes to the global registry."""
    import prometheus_client

    with SyncClusterClient(nodes.cluster, deadline=TIMEOUT) as client:
        registry = CollectorRegistry()
        registry.register(ClientCollector(client))
        for i in range(12):
            client.sign(f"collected {i}".encode())
        found = samples(generate_latest(registry).decode())
        stats = client.stats
    key = nodes.params.short_id
    assert value(found, "ittc_client_signatures_total", key=key) == 12
    assert value(found, "ittc_client_rpcs_total", key=key) == stats.rpcs > 0
    answered = {
        dict(labels)["node"]: v
        for (name, labels), v in found.items()
        if name == "ittc_client_node_events_total" and dict(labels)["kind"] == "answered"
    }
    assert answered and "5" not in answered and sum(answered.values()) >= 12 * 3 / 3
    latency = {
        dict(labels)["node"]
        for (name, labels), _ in found.items()
        if name == "ittc_client_node_latency_seconds"
    }
    assert latency == {"1", "2", "3", "4", "5"}
    assert b"ittc_client" not in generate_latest(prometheus_client.REGISTRY)


def test_json_logs_and_log_level(nodes: LocalCluster, tmp_path: pathlib.Path) -> None:
    """Pass: a node started with ``--log-format json`` writes only JSON objects, one per
    line, with time, level, logger and message (its ready line among them); ``ittc
    --log-format json --log-level debug status`` does the same for the command line's
    own records and still prints the status; a bad level is refused by argparse."""
    log = tmp_path / "node5.log"
    config = nodes.node_dir(5) / "node.toml"
    with log.open("wb") as out:
        node = subprocess.Popen(
            [sys.executable, "-m", "ittc_node", "--config", str(config), "--log-format", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            nodes.wait_serving([5], timeout=60)
        finally:
            node.terminate()
            assert node.wait(timeout=30) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(set(r) >= {"time", "level", "logger", "message"} for r in lines)
    assert any("ready" in r["message"] and r["logger"] == "ittc_node" for r in lines)
    assert all(r["time"].endswith("Z") for r in lines)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ittc",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "status",
            "--cluster",
            str(nodes.root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "nodes ready" in done.stdout
    for line in done.stderr.splitlines():
        json.loads(line)
    bad = subprocess.run(
        [sys.executable, "-m", "ittc", "--log-level", "loud", "status", "--cluster", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--log-level" in bad.stderr


def test_status_json(nodes: LocalCluster) -> None:
    """Pass: ``ittc status --json`` prints one JSON document: the key, k, n, and per node
    its health, readiness, version, epoch and certificate expiry; ``can_sign`` agrees
    with the exit status."""
    done = subprocess.run(
        [sys.executable, "-m", "ittc", "status", "--json", "--cluster", str(nodes.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    assert report["key_id"] == nodes.params.key_id and report["k"] == 3 and report["n"] == 5
    by_index = {node["index"]: node for node in report["nodes"]}
    assert set(by_index) == {1, 2, 3, 4, 5}
    for index in nodes.indices:
        entry = by_index[index]
        if nodes.running(index):
            assert entry["health"] == "SERVING" and entry["ready"] is True
            assert entry["certificate"]["not_after"].endswith("Z")
            assert entry["certificate"]["days_left"] > 700
        else:
            assert entry["health"].startswith("UNREACHABLE") and entry["ready"] is False
    assert report["can_sign"] is (done.returncode == 0)
    assert report["ready"] == sum(1 for e in report["nodes"] if e["ready"])


def test_the_ceremony_writes_monitoring_addresses_into_every_node_toml(
    tmp_path: pathlib.Path,
) -> None:
    """Pass: ``ittc keygen --health-listen --metrics-listen`` puts both addresses in every
    site's ``[monitoring]``, or, given once per node (five nodes on one host), each its
    own; given another number of times, or once for five nodes on loopback addresses, a
    one-line error before any key is made; without them the table says how to turn them
    on and sets nothing."""
    from ittc.config import NodeConfig
    from ittc.deploy.layout import CeremonyFolder

    args = ["--insecure-small-key-for-tests", "--bits", "1024", "--kdf", "fast-insecure-for-tests"]
    each: list[str] = []
    for i in range(1, 6):
        each += [
            "--health-listen",
            f"127.0.0.1:{8180 + i}",
            "--metrics-listen",
            f"[::1]:{9560 + i}",
        ]
    for out, extra in (
        (
            "on",  # five hosts (one name here, but not loopback): one address for all
            ["--host", "ittc.example", "--health-listen", "0.0.0.0:8080"]
            + ["--metrics-listen", "127.0.0.1:9464"],
        ),
        ("each", each),
        ("two", ["--health-listen", "127.0.0.1:8181", "--health-listen", "127.0.0.1:8182"]),
        ("shared", ["--metrics-listen", "127.0.0.1:9464"]),  # five loopback nodes, one port
        ("off", []),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ittc", "keygen", *args, "--out", str(tmp_path / out), *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        refusals = {
            "two": "--health-listen given 2 times: give it once for every node, or once per "
            "node (5 times)",
            "shared": "--metrics-listen: every node is on this host (loopback addresses): "
            "give each node its own metrics listen address, once per node (5 times)",
        }
        if out in refusals:  # before any key is made
            assert done.returncode == 2 and not (tmp_path / out).exists()
            assert done.stderr.strip().splitlines() == [f"ittc: error: {refusals[out]}"]
            continue
        assert done.returncode == 0, done.stderr
    for index in range(1, 6):
        on = NodeConfig.load(CeremonyFolder(tmp_path / "on").node_config(index))
        assert (on.health_listen, on.metrics_listen) == ("0.0.0.0:8080", "127.0.0.1:9464")
        own = NodeConfig.load(CeremonyFolder(tmp_path / "each").node_config(index))
        assert (own.health_listen, own.metrics_listen) == (
            f"127.0.0.1:{8180 + index}",
            f"[::1]:{9560 + index}",
        )
        path = CeremonyFolder(tmp_path / "off").node_config(index)
        off = NodeConfig.load(path)
        assert (off.health_listen, off.metrics_listen) == (None, None)
        assert '# health_listen = "0.0.0.0:8080"' in path.read_text()


def test_the_example_alerts_name_what_a_node_serves(nodes: LocalCluster) -> None:
    """nodes/monitoring/: the Prometheus example loads the alert file beside it, and every
    ``ittc_node_*`` metric an alert names is served by a real node (a histogram by its
    ``_bucket`` series), every ``file`` or ``reason`` label value it asks for is one a
    node gives. Pass: nothing named that a node does not serve."""
    import re

    import yaml
    from ittc_node.metrics import REASONS

    folder = pathlib.Path(__file__).resolve().parent.parent / "nodes" / "monitoring"
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    assert [(folder / f).is_file() for f in config["rule_files"]] == [True]
    assert config["scrape_configs"][0]["job_name"] == "ittc-nodes"
    (group,) = yaml.safe_load((folder / config["rule_files"][0]).read_text())["groups"]
    served = set()  # what a scrape declares (a labelled counter before its first count too)
    for family in text_string_to_metric_families(get(nodes.ports["metrics"], "/metrics")[2]):
        served.add(family.name)
        served.update(sample.name for sample in family.samples)
        if family.type == "counter":
            served.add(f"{family.name}_total")
        if family.type == "histogram":
            served.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    reasons = {reason for _, reason in REASONS}
    named = set()
    for rule in group["rules"]:
        expr = rule["expr"]
        for name in re.findall(r"\bittc_node_\w+", expr):
            named.add(name)
            assert name in served, (rule["alert"], name, sorted(served))
        for reason in re.findall(r'reason="(\w+)"', expr):
            assert reason in reasons, (rule["alert"], reason)
        for file in re.findall(r'file="(\w+)"', expr):
            assert file in ("cert", "ca"), (rule["alert"], file)
        assert 'job="ittc-nodes"' in expr or "ittc_node_" in expr, rule["alert"]
    assert len(named) >= 4, named

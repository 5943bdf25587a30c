"""The Kubernetes example (nodes/kubernetes), rendered by ``kubectl kustomize`` from a real
ceremony's site folders, the way its README says.

Nothing here applies it to a Kubernetes cluster (there is none on the test machines):
the test checks what an operator would apply. Skipped where ``kubectl`` is not
installed.
"""

from __future__ import annotations

import base64
import pathlib
import re
import shutil
import subprocess

import pytest

from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.scheme import dealer
from ittc.storage import KdfLimits

ROOT = pathlib.Path(__file__).resolve().parent.parent
SITE_FILES = ("node.toml", "params.json", "ca.pem", "tls.pem", "tls.key", "share.enc")


def documents(text: str) -> list[str]:
    return [doc for doc in re.split(r"(?m)^---\n", text) if doc.strip()]


def field(doc: str, name: str, indent: int = 2) -> str | None:
    """The value of the first ``name:`` at exactly ``indent`` spaces (a block scalar,
    ``name: |`` and the more indented lines under it, joined without line breaks)."""
    match = re.search(rf"(?m)^{' ' * indent}{re.escape(name)}: (.*)$", doc)
    if match is None:
        return None
    value = match.group(1).strip()
    if value not in ("|", "|-", ">", ">-"):
        return value.strip('"')
    block = []
    for line in doc[match.end() :].splitlines()[1:]:
        if not line.startswith(" " * (indent + 1)):
            break
        block.append(line.strip())
    return "".join(block)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_the_kubernetes_example_renders_five_sites_of_two_replicas(
    tmp_path: pathlib.Path,
) -> None:
    """The ceremony run as the README says (Kubernetes names, health and metrics on),
    each site's files copied into its overlay, ``kubectl kustomize``.

    Pass: five StatefulSets ``ittc-site-<i>`` of 2 replicas, each naming its own headless
    Service (clusterIP None) and its own two Secrets, whose data are exactly site i's
    files and passphrase; a volume claim per replica for var/; non-root, read-only root
    file system, no privilege escalation; readiness on /healthz, liveness on /livez; a
    PodDisruptionBudget per site; everything in the namespace ittc."""
    addresses = [f"ittc-site-{i}.ittc.svc.cluster.local:7000" for i in range(1, 6)]
    dealt = dealer.generate(1024, n=5, k=3, insecure_allow_small_modulus_for_tests=True)
    cluster = tmp_path / "cluster"
    create_cluster(
        cluster,
        dealt,
        addresses=addresses,
        health_listen="0.0.0.0:8080",
        metrics_listen="0.0.0.0:9464",
        kdf=KdfLimits.fast_for_tests(),
    )
    folder = CeremonyFolder(cluster)
    example = tmp_path / "kubernetes"
    shutil.copytree(ROOT / "nodes" / "kubernetes", example)
    for i in range(1, 6):
        shutil.copytree(folder.etc(i), example / f"site-{i}" / "etc")
        shutil.copy2(folder.passphrase(i), example / f"site-{i}" / "passphrase")
    done = subprocess.run(
        ["kubectl", "kustomize", str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    by_kind: dict[str, dict[str, str]] = {}
    for doc in docs:
        kind, name = field(doc, "kind", 0), field(doc, "name")
        assert kind is not None and name is not None
        assert field(doc, "namespace") in ("ittc", None)
        by_kind.setdefault(kind, {})[name] = doc
    assert set(by_kind["Namespace"]) == {"ittc"}
    assert set(by_kind["StatefulSet"]) == {f"ittc-site-{i}" for i in range(1, 6)}
    assert set(by_kind["Service"]) == {f"ittc-site-{i}" for i in range(1, 6)}
    assert set(by_kind["PodDisruptionBudget"]) == {f"ittc-site-{i}" for i in range(1, 6)}
    secrets = by_kind["Secret"]
    for i in range(1, 6):
        site = by_kind["StatefulSet"][f"ittc-site-{i}"]
        assert field(site, "replicas") == "2" and field(site, "serviceName") == f"ittc-site-{i}"
        assert f'ittc.example/site: "{i}"' in site
        assert "readOnlyRootFilesystem: true" in site and "runAsNonRoot: true" in site
        assert "allowPrivilegeEscalation: false" in site
        assert "path: /healthz" in site and "path: /livez" in site
        assert "volumeClaimTemplates:" in site and "storage: 1Gi" in site
        assert "clusterIP: None" in by_kind["Service"][f"ittc-site-{i}"]
        named = re.findall(r"secretName: (\S+)", site)
        etc = next(n for n in named if n.startswith(f"ittc-etc-{i}-"))
        passphrase = next(n for n in named if n.startswith(f"ittc-passphrase-{i}-"))
        for file_name in SITE_FILES:
            value = field(secrets[etc], file_name)
            assert value is not None, (etc, file_name)
            assert base64.b64decode(value) == (folder.etc(i) / file_name).read_bytes()
        value = field(secrets[passphrase], "passphrase")
        assert value is not None
        assert base64.b64decode(value) == folder.passphrase(i).read_bytes()

"""The Kubernetes example (nodes/kubernetes), rendered by ``kubectl kustomize`` from a real
ceremony's site folders, the way its README says.

Nothing here applies it to a Kubernetes cluster (there is none on the test machines):
the test checks what an operator would apply, parsed as YAML. Skipped where ``kubectl`` is not
installed.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.scheme import dealer
from ittc.storage import KdfLimits

ROOT = pathlib.Path(__file__).resolve().parent.parent
SITE_FILES = ("node.toml", "params.json", "ca.pem", "tls.pem", "tls.key", "share.enc")


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
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(done.stdout):
        assert doc["metadata"].get("namespace") in ("ittc", None), doc["metadata"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "ittc", doc["metadata"]
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    assert set(by_kind["Namespace"]) == {"ittc"}
    names = {f"ittc-site-{i}" for i in range(1, 6)}
    assert set(by_kind["StatefulSet"]) == names
    assert set(by_kind["Service"]) == names
    assert set(by_kind["PodDisruptionBudget"]) == names
    secrets = by_kind["Secret"]
    image_cmd = json.loads(
        re.search(r"(?m)^CMD (\[.*\])$", (ROOT / "nodes/container/Dockerfile").read_text())[1]  # type: ignore[index]
    )
    for i in range(1, 6):
        site = by_kind["StatefulSet"][f"ittc-site-{i}"]["spec"]
        assert site["replicas"] == 2 and site["serviceName"] == f"ittc-site-{i}"
        assert site["selector"]["matchLabels"]["ittc.example/site"] == str(i)
        pod = site["template"]["spec"]
        assert site["template"]["metadata"]["labels"]["ittc.example/site"] == str(i)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for container in pod["initContainers"] + pod["containers"]:
            hardened = container["securityContext"]
            assert hardened["readOnlyRootFilesystem"] is True
            assert hardened["allowPrivilegeEscalation"] is False
            assert hardened["capabilities"]["drop"] == ["ALL"]
        (node,) = pod["containers"]
        assert node["args"] == image_cmd  # the image's own command, the site at its path
        assert node["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert node["livenessProbe"]["httpGet"]["path"] == "/livez"
        mounts = {m["mountPath"]: m for m in node["volumeMounts"]}
        assert mounts["/srv/ittc/site"].get("readOnly") is True
        assert mounts["/srv/ittc/site/var"]["name"] == "var"
        (claim,) = site["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "var"
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        service = by_kind["Service"][f"ittc-site-{i}"]["spec"]
        assert service["clusterIP"] == "None"
        assert service["selector"]["ittc.example/site"] == str(i)
        assert service["ports"][0]["port"] == 7000
        assert by_kind["PodDisruptionBudget"][f"ittc-site-{i}"]["spec"]["minAvailable"] == 1
        volumes = {v["name"]: v for v in pod["volumes"]}
        etc = volumes["etc"]["secret"]["secretName"]
        passphrase = volumes["passphrase"]["secret"]["secretName"]
        assert etc.startswith(f"ittc-etc-{i}-") and passphrase.startswith(f"ittc-passphrase-{i}-")
        assert set(secrets[etc]["data"]) == set(SITE_FILES)
        for file_name in SITE_FILES:
            value = secrets[etc]["data"][file_name]
            assert base64.b64decode(value) == (folder.etc(i) / file_name).read_bytes()
        value = secrets[passphrase]["data"]["passphrase"]
        assert base64.b64decode(value) == folder.passphrase(i).read_bytes()

"""The container deployment (nodes/container/): its compose file checked against a real
ceremony's output, then the five nodes and the signing demo run the way the containers
would run them, as processes.

The machines this suite runs on have a Docker client but no container engine (no daemon,
and no registry to pull the base image from), so nothing here builds the image or runs
``docker compose``. What can be checked without one is:

- every path, secret, volume and port the compose file names exists in, or agrees with,
  what ``ittc keygen`` writes for the names the compose file's header gives;
- the image's entrypoint and command, unchanged, start a node from a site laid out as
  the compose file mounts it (``etc/`` read-only at ``/srv/ittc/site/etc``, the
  passphrase as a file beside it, an empty ``var/``), in a network namespace of its own
  (a container's network), under a mount namespace that puts the site at
  ``/srv/ittc/site``, as user 10001 owning the files (the image's ``USER``);
- the image's health check command reports each node healthy;
- the demo service's command, unchanged, signs through the five nodes by their service
  names (``node1`` ... ``node5`` resolved by a hosts file, as compose's DNS would).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ittc.config import ClusterFile, NodeConfig
from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.scheme import dealer
from ittc.storage import KdfLimits

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTAINER = ROOT / "nodes" / "container"
SITE = pathlib.PurePosixPath("/srv/ittc/site")
UID = 10001
TIMEOUT = 90.0


def dockerfile() -> dict[str, list[str]]:
    """The final stage's instructions: name -> the arguments of each (continuations joined)."""
    text = (CONTAINER / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    final = joined.split("\nFROM ")[-1]
    out: dict[str, list[str]] = {}
    for line in final.splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            out.setdefault(name, []).append(rest.strip())
    return out


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), value
    return argv


def compose_ceremony(folder: pathlib.Path) -> pathlib.Path:
    """The ceremony the compose file's header runs (its node names, health on :8080), with
    a small test key, in ``folder/cluster`` beside a copy of compose.yaml."""
    header = (CONTAINER / "compose.yaml").read_text()
    addresses = re.findall(r"--address (node\d:\d+)", header)
    assert addresses == [f"node{i}:700{i}" for i in range(1, 6)], addresses
    assert "--health-listen 0.0.0.0:8080" in header
    dealt = dealer.generate(1024, n=5, k=3, insecure_allow_small_modulus_for_tests=True)
    create_cluster(
        folder / "cluster",
        dealt,
        addresses=addresses,
        health_listen="0.0.0.0:8080",
        kdf=KdfLimits.fast_for_tests(),
    )
    shutil.copy2(CONTAINER / "compose.yaml", folder / "compose.yaml")
    return folder / "cluster"


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (host path or volume name, read-only) for a service's volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = (source, mode == ["ro"])
    return out


def test_the_compose_file_names_what_the_ceremony_writes(tmp_path: pathlib.Path) -> None:
    """Pass: five node services and a demo, each hardened (read-only root file system, no
    capabilities, no new privileges, user 10001 as the image's USER); node i mounts the
    ceremony's ``site-i/etc`` read-only at the config's folder, a volume of its own at
    ``var/`` (the VOLUME the image declares, where node.toml puts the audit log), and
    ``site-i/passphrase`` as a secret exactly where node.toml's passphrase_file points;
    its node.toml serves the port its cluster.toml entry dials and health on the port the
    image's HEALTHCHECK asks; the combiner bundle the demo mounts dials ``node1`` ...
    ``node5``, the services' names; the image's command names the mounted node.toml."""
    cluster = compose_ceremony(tmp_path)
    folder = CeremonyFolder(cluster)
    compose = yaml.safe_load((tmp_path / "compose.yaml").read_text())
    image = dockerfile()
    (user,) = image["USER"]
    assert user == f"{UID}:{UID}"
    command = exec_form(image["ENTRYPOINT"][0]) + exec_form(image["CMD"][0])
    config_in_image = pathlib.PurePosixPath(command[command.index("--config") + 1])
    assert config_in_image == SITE / "etc" / "node.toml"
    assert exec_form(image["VOLUME"][0]) == [str(SITE / "var")]
    (health,) = image["HEALTHCHECK"]
    health_port = int(re.search(r"127\.0\.0\.1:(\d+)/healthz", health).group(1))  # type: ignore[union-attr]

    services = compose["services"]
    assert set(services) == {f"node{i}" for i in range(1, 6)} | {"demo"}
    build = services["node1"]["build"]
    built = (CONTAINER / build["context"] / build["dockerfile"]).resolve()
    assert built == (CONTAINER / "Dockerfile").resolve()
    dialled = {e.index: e.address for e in ClusterFile.load(folder.cluster_file).nodes}
    for name, service in services.items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["user"] == user and "no-new-privileges:true" in service["security_opt"]
        assert service["image"] == "ittc:latest", name
    for i in range(1, 6):
        service = services[f"node{i}"]
        at = mounts(service)
        etc_source, etc_ro = at[str(SITE / "etc")]
        assert etc_ro and (tmp_path / etc_source).resolve() == folder.etc(i).resolve()
        var_source, var_ro = at[str(SITE / "var")]
        assert not var_ro and var_source in compose["volumes"] and var_source == f"node{i}-var"
        ((secret),) = service["secrets"]
        source = compose["secrets"][secret["source"]]["file"]
        assert (tmp_path / source).resolve() == folder.passphrase(i).resolve()
        assert (tmp_path / source).stat().st_mode & 0o077 == 0

        config = NodeConfig.load(tmp_path / etc_source / "node.toml")
        etc = (tmp_path / etc_source).resolve()

        def in_container(path: pathlib.Path, etc: pathlib.Path = etc) -> pathlib.PurePosixPath:
            relative = os.path.relpath(path.resolve(), etc)
            return pathlib.PurePosixPath(os.path.normpath(SITE / "etc" / relative))

        assert config.passphrase_file is not None
        assert in_container(config.passphrase_file) == pathlib.PurePosixPath(secret["target"])
        assert in_container(config.audit_log).parent == SITE / "var"
        for path in (config.params_file, config.share_file, config.tls_cert, config.tls_key):
            assert in_container(path).parent == SITE / "etc", path
        assert config.listen.rsplit(":", 1)[1] == dialled[i].rsplit(":", 1)[1]
        assert dialled[i] == f"node{i}:700{i}"
        assert config.health_listen is not None
        assert int(config.health_listen.rsplit(":", 1)[1]) == health_port
    demo = services["demo"]
    assert set(demo["depends_on"]) == {f"node{i}" for i in range(1, 6)}
    assert all(d["condition"] == "service_healthy" for d in demo["depends_on"].values())
    (bundle,) = [s for t, (s, ro) in mounts(demo).items() if t == "/srv/ittc/combiner" and ro]
    assert (tmp_path / bundle).resolve() == folder.combiner.resolve()
    assert (tmp_path / bundle / "cluster.toml").is_file()
    assert not (tmp_path / bundle / "ca.key").exists()


# -- the same, run ---------------------------------------------------------------------


def _netlab_reason() -> str | None:
    from tests.netns import unavailable_reason

    reason = unavailable_reason()
    if reason is None and (shutil.which("unshare") is None or shutil.which("setpriv") is None):
        reason = "no `unshare` or `setpriv` command"
    return reason


def _reachable_by_others(path: str) -> bool:
    """Whether a user other than root can reach and run ``path`` (every folder above it
    searchable by others)."""
    p = pathlib.Path(path).resolve()
    return all(parent.stat().st_mode & 0o001 for parent in p.parents) and bool(
        p.stat().st_mode & 0o001
    )


#: Where a container's mount namespace keeps the host's tree, to bind back what it hides.
_HOST = "/srv/.host"


def _hidden_by(targets: list[str]) -> list[str]:
    """The folders this Python needs (its virtualenv, the interpreter under it, the source
    tree an editable install points into) that a mount on one of ``targets`` would hide:
    a clone under /tmp, with the demo's /tmp mounted over it, is how CI may run this."""
    needed = {sys.prefix, sys.base_prefix, str(pathlib.Path(__file__).resolve().parents[1])}
    return sorted(
        path
        for path in needed
        if any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)
    )


def as_container(site: pathlib.Path | None, argv: list[str], mounts_: list[str]) -> list[str]:
    """``argv`` in a mount namespace where ``site`` is at /srv/ittc/site (``etc/`` read-only)
    and ``mounts_`` (``SOURCE:TARGET`` pairs) are bound, run as user 10001 with no
    capability but, when this machine's Python sits under a folder only root may enter
    (here: /root/.pyenv), CAP_DAC_READ_SEARCH to reach it."""
    script = ["mount -t tmpfs tmpfs /srv"]
    if site is not None:
        script += [
            f"mkdir -p {SITE}",
            f"mount --bind {shlex.quote(str(site))} {SITE}",
            f"mount --bind {SITE}/etc {SITE}/etc",
            f"mount -o remount,bind,ro {SITE}/etc",
        ]
    targets = [pair.rsplit(":", 1)[1] for pair in mounts_]
    hidden = _hidden_by(targets)
    if hidden:
        script += [f"mkdir -p {_HOST}", f"mount --rbind / {_HOST}"]
    for pair in mounts_:
        source, target = pair.rsplit(":", 1)
        script += [f"mkdir -p {shlex.quote(target)}" if target.startswith("/srv") else "true"]
        script.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
    for path in hidden:
        script += [
            f"mkdir -p {shlex.quote(path)}",
            f"mount --rbind {shlex.quote(_HOST + path)} {shlex.quote(path)}",
        ]
    caps = ["--inh-caps=-all", "--bounding-set=-all"]
    if not _reachable_by_others(sys.executable):
        caps = [
            "--inh-caps=-all,+dac_read_search",
            "--ambient-caps=+dac_read_search",
            "--bounding-set=-all,+dac_read_search",
        ]
    privileges = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", *caps]
    script.append('exec "$@"')
    return ["unshare", "--mount", "sh", "-ec", " && ".join(script), "sh", *privileges, *argv]


def image_env() -> dict[str, str]:
    """The image's ENV, the node's PATH leading to this Python's ittc (the image's pip)."""
    env = {"PATH": f"{pathlib.Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/nonexistent"}
    for line in dockerfile().get("ENV", []):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def in_image(argv: list[str]) -> list[str]:
    """The image's ``python`` is the interpreter this test runs under."""
    return [sys.executable if a == "python" else a for a in argv]


@pytest.fixture
def compose_as_processes(tmp_path: pathlib.Path) -> Iterator[dict[str, Any]]:
    reason = _netlab_reason()
    if reason is not None:
        pytest.skip(reason)
    from tests.netns import NetLab, clean_leftovers

    cluster = compose_ceremony(tmp_path)
    folder = CeremonyFolder(cluster)
    compose = yaml.safe_load((tmp_path / "compose.yaml").read_text())
    image = dockerfile()
    command = in_image(exec_form(image["ENTRYPOINT"][0]) + exec_form(image["CMD"][0]))
    clean_leftovers()
    processes: list[subprocess.Popen[bytes]] = []
    with NetLab(5) as lab:
        hosts = tmp_path / "hosts"
        hosts.write_text(
            "127.0.0.1 localhost\n" + "".join(f"{lab.address(i)} node{i}\n" for i in range(1, 6))
        )
        try:
            for i in range(1, 6):
                # The site as compose mounts it: etc/ from the ceremony, var/ a fresh
                # volume, the passphrase secret beside etc/; owned by the image's user.
                site = tmp_path / f"container-{i}"
                shutil.copytree(folder.etc(i), site / "etc")
                (site / "var").mkdir(mode=0o700)
                shutil.copy2(folder.passphrase(i), site / "passphrase")
                for path in [site, *site.rglob("*")]:
                    os.chown(path, UID, UID)
                service = compose["services"][f"node{i}"]
                assert mounts(service)[str(SITE / "etc")][1]  # read-only, as mounted here
                processes.append(
                    subprocess.Popen(
                        lab.command(i, as_container(site, command, [])),
                        env=image_env(),
                        stdout=subprocess.DEVNULL,
                        stderr=(tmp_path / f"node{i}.log").open("wb"),
                    )
                )
            yield {
                "tmp": tmp_path,
                "lab": lab,
                "hosts": hosts,
                "folder": folder,
                "compose": compose,
                "image": image,
                "processes": processes,
            }
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.mark.network
@pytest.mark.netns
def test_five_nodes_and_the_demo_run_as_the_containers_would(
    compose_as_processes: dict[str, Any],
) -> None:
    """Pass: each node, started by the image's entrypoint and command as user 10001 with
    its site mounted as compose mounts it, becomes healthy by the image's own HEALTHCHECK
    command (run in its network namespace); the demo service's command, as is, prints the
    cluster's status and writes a PKCS#1 v1.5 and a PSS signature, both valid under the
    cluster's public key; each node's audit log (in its var/ volume) records signing; each
    node exits 0 on SIGTERM (the image's STOPSIGNAL)."""
    run = compose_as_processes
    lab, tmp, folder = run["lab"], run["tmp"], run["folder"]
    (health,) = run["image"]["HEALTHCHECK"]
    check = in_image(exec_form(health.split(" CMD ", 1)[1]))
    for i in range(1, 6):
        deadline = time.monotonic() + TIMEOUT
        while (
            subprocess.run(
                lab.command(i, check), stderr=subprocess.DEVNULL, check=False, timeout=30
            ).returncode
            != 0
        ):
            assert run["processes"][i - 1].poll() is None, (tmp / f"node{i}.log").read_text()
            assert time.monotonic() < deadline, f"node{i} never healthy"
            time.sleep(0.5)

    demo = run["compose"]["services"]["demo"]
    demo_tmp = tmp / "demo-tmp"
    demo_tmp.mkdir()
    bundle = tmp / "demo-bundle"
    shutil.copytree(folder.combiner, bundle)
    for path in [demo_tmp, bundle, *bundle.rglob("*")]:
        os.chown(path, UID, UID)
    argv = [*demo["entrypoint"], *demo["command"]]
    done = subprocess.run(
        as_container(
            None,
            argv,
            # /tmp last: the other sources are under it here.
            [f"{bundle}:/srv/ittc/combiner", f"{run['hosts']}:/etc/hosts", f"{demo_tmp}:/tmp"],
        ),
        env=image_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 of 5 nodes ready: can sign" in done.stdout, done.stdout + done.stderr
    public = ClusterFile.load(folder.cluster_file).params.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    message = (demo_tmp / "message").read_bytes()
    assert message == b"signed in a container\n"
    public.verify(
        (demo_tmp / "message.sig").read_bytes(), message, padding.PKCS1v15(), hashes.SHA256()
    )
    public.verify(
        (demo_tmp / "message.pss").read_bytes(),
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
        hashes.SHA256(),
    )
    signed = 0
    for i in range(1, 6):
        log = tmp / f"container-{i}" / "var" / "audit.log"
        assert log.stat().st_uid == UID
        signed += sum(1 for line in log.read_text().splitlines() if '"signed"' in line)
    assert signed >= 2 * 3  # two signatures, three shares each at least
    for i, process in enumerate(run["processes"], start=1):
        process.terminate()
        assert process.wait(timeout=30) == 0, (tmp / f"node{i}.log").read_text()

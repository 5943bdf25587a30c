"""What a coordinator writes: a run folder per plan (public values only), the new
epoch's cluster file, and the epoch a run started from, to resume it."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ittc.config import ClusterFile, NodeEntry
from ittc.errors import ConfigError
from ittc.lifecycle import (
    Approval,
    Certificate,
    Plan,
    SiteIdentity,
)
from ittc.scheme.params import PublicParams
from ittc.storage.files import write_file_atomically

__all__ = ["RunFolder", "cluster_before", "new_cluster_file"]

# -- the run folder --------------------------------------------------------------------


def _write_json(path: pathlib.Path, data: Any) -> None:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_file_atomically(path, text.encode("ascii"), mode=0o644, overwrite=True)


@dataclass
class RunFolder:
    """Where a coordinator keeps one plan's runs (public values only)."""

    root: pathlib.Path

    @classmethod
    def of(cls, cluster: ClusterFile, plan: Plan) -> RunFolder:
        return cls(cluster.root / "reshare" / plan.digest.hex()[:16])

    def create(self) -> None:
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)

    def start(self, cluster: ClusterFile, plan: Plan, approvals: Sequence[Approval]) -> None:
        """Create the folder with what was approved and the epoch the run starts from."""
        self.create()
        _write_json(self.root / "plan.json", plan.to_dict())
        _write_json(self.root / "approvals.json", [a.to_dict() for a in approvals])
        _write_json(
            self.root / "old-nodes.json",
            {
                "params": cluster.params.to_dict(),
                "nodes": [
                    {
                        "index": e.index,
                        "address": e.address,
                        "tls_name": e.tls_name,
                        **(e.site.to_dict() if e.site is not None else {}),
                    }
                    for e in cluster.nodes
                ],
            },
        )

    def log(self, line: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        with (self.root / "log.txt").open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {line}\n")

    @property
    def certificate_path(self) -> pathlib.Path:
        return self.root / "certificate.json"

    def certificate(self) -> Certificate | None:
        if not self.certificate_path.exists():
            return None
        return Certificate.from_json(self.certificate_path.read_bytes())

    def attempts(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(
            self.root.glob("attempt-*.json"), key=lambda p: int(p.stem.split("-")[1])
        ):
            out.append(json.loads(path.read_text()))
        return out

    def outcome(self) -> dict[str, Any] | None:
        path = self.root / "outcome.json"
        return json.loads(path.read_text()) if path.exists() else None


def new_cluster_file(cluster: ClusterFile, certificate: Certificate) -> pathlib.Path:
    """Write the new epoch's parameters and certificate beside ``cluster``'s file, then the
    new cluster file over it (atomically: a running combiner reads the old or the new).
    Idempotent. Returns the cluster file's path."""
    params = certificate.params
    root = cluster.root
    params_name = f"params-{params.epoch}.json"
    certificate_name = f"certificate-{params.epoch}.json"
    write_file_atomically(root / params_name, params.to_json().encode(), mode=0o644, overwrite=True)
    write_file_atomically(
        root / certificate_name, certificate.to_json().encode("ascii"), mode=0o644, overwrite=True
    )
    nodes = [NodeEntry(m.index, m.address, m.tls_name, m.site) for m in certificate.plan.members]

    text = cluster.rendered(
        params=params, nodes=nodes, params_file=params_name, certificate=certificate_name
    )
    write_file_atomically(cluster.path, text.encode(), mode=0o644, overwrite=True)
    return cluster.path


def cluster_before(cluster: ClusterFile, plan: Plan) -> ClusterFile:
    """``cluster`` as it was when ``plan``'s run started (its run folder keeps the epoch's
    parameters and nodes): to resume a run after the cluster file moved on."""
    folder = RunFolder.of(cluster, plan)
    path = folder.root / "old-nodes.json"
    if not path.exists():
        raise ConfigError(
            f"{cluster.path} is at epoch {cluster.epoch}, and {folder.root} has no run of "
            f"this plan (which starts from epoch {plan.old_epoch})"
        )
    try:
        data = json.loads(path.read_text())
        params = PublicParams.from_dict(data["params"])
        nodes = []
        for raw in data["nodes"]:
            site = None
            if "site" in raw:
                site = SiteIdentity.from_dict({k: raw[k] for k in ("site", "sign_key", "box_key")})
            nodes.append(NodeEntry(raw["index"], raw["address"], raw["tls_name"], site))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a run record: {exc}") from None
    return dataclasses.replace(cluster, params=params, nodes=tuple(nodes), certificate=None)

"""Where everything is in the key ceremony's output, and where each part goes.

::

    OUT/README.txt              what each part is, where it goes, what to destroy here
    OUT/site-<i>/               site i's bundle, shipped as a whole (0700):
        etc/                      read-only at the site: node.toml, share.enc (0600),
                                  tls.pem, tls.key (0600), ca.pem, params.json
        var/                      writable at the site: the audit log (var/audit.log)
        passphrase                opens site i's share file and no other (0600): move it
                                  into the site's secret store (a systemd credential)
        README.txt                how to install and start it
    OUT/combiner/               for every combiner host; no CA key, no share:
                                  cluster.toml, params.json, public.pem, ca.pem,
                                  client.pem, client.key (0600)
    OUT/clients/<name>/         a further client identity, also a complete combiner bundle
    OUT/ca/                     the cluster CA: ca.pem, ca.key (0600), README.txt; to go
                                  offline

Every path a site's ``node.toml`` names is inside its ``site-<i>/`` folder, and every
path the combiner's ``cluster.toml`` names is inside ``combiner/``: each folder works
wherever it is copied, alone.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from ittc.config import CLUSTER_FILE, COMBINER_FOLDER, ClusterFile
from ittc.errors import ConfigError

__all__ = ["CeremonyFolder"]


@dataclass(frozen=True)
class CeremonyFolder:
    """The paths of one ceremony output folder (nothing is read or checked here)."""

    root: pathlib.Path

    @classmethod
    def of(cls, where: str | os.PathLike[str] | ClusterFile) -> CeremonyFolder:
        """The ceremony folder that holds ``where``: the folder itself, its
        ``combiner/`` folder, its cluster file, or that file loaded."""
        path = where.path if isinstance(where, ClusterFile) else pathlib.Path(where).absolute()
        if path.name == CLUSTER_FILE:
            path = path.parent
        if path.name == COMBINER_FOLDER:
            path = path.parent
        folder = cls(path)
        if not folder.node_config(1).exists():
            raise ConfigError(
                f"{path}: not a key ceremony's output folder (no {folder.node_config(1)}), "
                "so the nodes' configs cannot be found"
            )
        return folder

    @property
    def readme(self) -> pathlib.Path:
        return self.root / "README.txt"

    def site(self, index: int) -> pathlib.Path:
        return self.root / f"site-{index}"

    def etc(self, index: int) -> pathlib.Path:
        return self.site(index) / "etc"

    def var(self, index: int) -> pathlib.Path:
        return self.site(index) / "var"

    def node_config(self, index: int) -> pathlib.Path:
        return self.etc(index) / "node.toml"

    def passphrase(self, index: int) -> pathlib.Path:
        return self.site(index) / "passphrase"

    @property
    def combiner(self) -> pathlib.Path:
        return self.root / COMBINER_FOLDER

    @property
    def cluster_file(self) -> pathlib.Path:
        return self.combiner / CLUSTER_FILE

    def client(self, name: str) -> pathlib.Path:
        """A further client identity's bundle (the first one is :attr:`combiner`)."""
        return self.root / "clients" / name

    @property
    def ca(self) -> pathlib.Path:
        return self.root / "ca"

    def sites(self) -> list[int]:
        """The indices of the site folders present, in order."""
        found = []
        for path in self.root.glob("site-*"):
            suffix = path.name.removeprefix("site-")
            if suffix.isdigit() and path.is_dir():
                found.append(int(suffix))
        return sorted(found)

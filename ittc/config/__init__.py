"""The two files people edit: the cluster file and a node's config (both TOML).

``cluster.toml`` (public, copied to every combiner) names the key, its public parameters
and where each node listens. ``node.toml`` (one per site) names what one node daemon
needs. Relative paths in either are relative to the file's own folder, so a folder can be
moved or copied to a site as a whole.

Files are written with ``tomlkit``, with a comment on every field, and read with
``tomllib``. Reading checks everything and raises :class:`~ittc.errors.ConfigError` naming the file
and the field; nothing secret is ever written into these files.
"""

from ittc.config.cluster import CLUSTER_FILE, COMBINER_FOLDER, ClusterFile, NodeEntry
from ittc.config.node import Limits, NodeConfig, render_node_toml
from ittc.config.reader import parse_address

__all__ = [
    "CLUSTER_FILE",
    "COMBINER_FOLDER",
    "ClusterFile",
    "Limits",
    "NodeConfig",
    "NodeEntry",
    "parse_address",
    "render_node_toml",
]

"""The combiner: the embedder's client that signs through the cluster's nodes."""

from ittc.combiner.client import ClientStats, ClusterClient, SignItem, SyncClusterClient

__all__ = ["ClientStats", "ClusterClient", "SignItem", "SyncClusterClient"]

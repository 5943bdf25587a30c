"""Resharing, the operator's side: the coordinator that carries an approved plan between
the sites (:mod:`~ittc.deploy.reshare.coordinator`), its run folders and the new epoch's
cluster file (:mod:`~ittc.deploy.reshare.folder`), reaching the sites
(:mod:`~ittc.deploy.reshare.links`), and scheduled refreshes
(:mod:`~ittc.deploy.reshare.refresh`). docs/lifecycle.md §10 describes a run.
"""

from ittc.deploy.reshare.coordinator import Coordinator
from ittc.deploy.reshare.folder import RunFolder, cluster_before, new_cluster_file
from ittc.deploy.reshare.links import CRASH_VAR, RPC_TIMEOUT, ReshareFailed, Site
from ittc.deploy.reshare.refresh import gather_refresh_approvals, refresh_plan, site_statuses

__all__ = [
    "CRASH_VAR",
    "RPC_TIMEOUT",
    "Coordinator",
    "ReshareFailed",
    "RunFolder",
    "Site",
    "cluster_before",
    "gather_refresh_approvals",
    "new_cluster_file",
    "refresh_plan",
    "site_statuses",
]

"""Scheduled refreshes (a plan that changes only the shares, approved unattended by the
sites that allow it) and every site's status."""

from __future__ import annotations

import asyncio
import time

from ittc.config import ClusterFile
from ittc.deploy.reshare.links import Site, _Link, _SiteFailed
from ittc.errors import (
    ApprovalError,
    ConfigError,
)
from ittc.lifecycle import (
    Approval,
    Member,
    Plan,
    SiteIdentity,
    check_approvals,
)
from ittc.wire import tls
from ittc.wire.v1 import reshare_pb2 as rpb

__all__ = ["gather_refresh_approvals", "refresh_plan", "site_statuses"]


async def site_statuses(cluster: ClusterFile, *, timeout: float = 5.0) -> list[str]:
    """One line per node of ``cluster``: its site, epoch, index, run; or why it did not
    answer."""
    if cluster.client_cert is None or cluster.client_key is None:
        raise ConfigError(f"{cluster.path}: no client identity to reach the nodes with")
    credentials = tls.client_credentials(
        cluster.client_cert, cluster.client_key, cluster.ca, now=time.time()
    )
    lines = []
    for node in cluster.nodes:
        site = Site(
            node.site or SiteIdentity("unknown", bytes(32), bytes(32)),
            node.address,
            node.tls_name,
            node.index,
            None,
        )
        link = _Link(site, credentials)
        try:
            status: rpb.ReshareStatus = await link.call("Status", rpb.StatusRequest(), timeout)
        except _SiteFailed as exc:
            lines.append(f"node {node.index} ({node.address}): {exc.reason}")
            continue
        finally:
            await link.channel.close()
        state = "retired" if status.retired else f"index {status.index or '-'}"
        run = f", run {status.run_id.hex()[:16]} {status.run_stage}" if status.run_id else ""
        pending = (
            f", {len(status.pending_runs)} stored share(s) awaiting a commit"
            if status.pending_runs
            else ""
        )
        lines.append(
            f"node {node.index} ({node.address}): site {status.site}, epoch {status.epoch} "
            f"({status.epoch_id[:16]}), {state}{run}{pending}"
        )
    return lines


def refresh_plan(cluster: ClusterFile, *, valid_for: float = 3600.0) -> Plan:
    """A plan that only refreshes the cluster's current epoch: the same site at every
    index, the same threshold."""

    sites = cluster.sites()
    members = [Member(n.index, sites[n.index], n.address, n.tls_name) for n in cluster.nodes]
    return Plan.new(
        cluster.params, members, cluster.params.k, not_after=int(time.time() + valid_for)
    )


async def gather_refresh_approvals(
    cluster: ClusterFile, plan: Plan, *, timeout: float = 30.0
) -> tuple[list[Approval], dict[str, str]]:
    """Ask every site of the current epoch to approve a refresh plan unattended
    (``ApproveRefresh``: a site does so only if its config allows scheduled refreshes).
    Returns the approvals that verify, and why the other sites gave none."""
    if cluster.client_cert is None or cluster.client_key is None:
        raise ConfigError(f"{cluster.path}: no client identity to reach the nodes with")
    credentials = tls.client_credentials(
        cluster.client_cert, cluster.client_key, cluster.ca, now=time.time()
    )
    sites = cluster.sites()
    request = rpb.ApproveRefreshRequest(plan=plan.canonical())
    links = [
        _Link(Site(sites[n.index], n.address, n.tls_name, n.index, n.index), credentials)
        for n in cluster.nodes
    ]
    try:
        answers = await asyncio.gather(
            *(link.call("ApproveRefresh", request, timeout) for link in links),
            return_exceptions=True,
        )
    finally:
        for link in links:
            await link.channel.close()
    approvals, refused = [], {}
    for link, answer in zip(links, answers, strict=True):
        name = link.site.name
        if isinstance(answer, rpb.Approval):
            approval = Approval(answer.site, bytes(answer.signature))
            try:
                check_approvals(plan, [approval], {1: link.site.identity}, 1, now=time.time())
            except ApprovalError as exc:
                refused[name] = f"an approval that does not verify: {exc}"
                continue
            approvals.append(approval)
        else:
            refused[name] = getattr(answer, "reason", str(answer))
    return approvals, refused

"""Unattended approval of a refresh: which plans a site signs without a person.

A site that sets ``[reshare] auto_approve_refresh_days`` approves, on request, a plan that
only refreshes its epoch: the same sites at the same indices, reached where they are
now, the same threshold, expiring within two days; and at most one every so many days,
counted from the last one approved here that may have committed.
"""

from __future__ import annotations

import grpc

from ittc.errors import ParameterError
from ittc.lifecycle import Plan
from ittc_node.reshare.state import Epoch, refuse

__all__ = ["REFRESH_PLAN_LIFETIME", "check_refresh"]

#: An unattended refresh approval is only for a plan that expires within this long.
REFRESH_PLAN_LIFETIME = 2 * 86400


def check_refresh(
    plan: Plan,
    epoch: Epoch,
    now: float,
    last: tuple[float, str, str] | None,
    days: int,
) -> bool:
    """Refuse (:class:`~ittc_node.service.Refusal`) unless ``plan`` may be approved
    unattended, given the ``last`` unattended approval (time, plan digest, epoch id) and
    the allowance of one every ``days``. True if ``plan`` is the one approved last (it
    is approved again, and counts once)."""
    extra = {"plan": plan.digest.hex()}
    try:
        plan.check_against(epoch.params)
    except ParameterError as exc:
        refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **extra)
    # The same site at every index, reached where it is now: a plan that moves a site
    # would send the combiners that follow its certificate elsewhere.
    same = plan.n == epoch.params.n and plan.k == epoch.params.k
    same = same and all(
        m.site == epoch.sites.get(m.index) and (m.address, m.tls_name) == epoch.reached_at(m.index)
        for m in plan.members
    )
    if not same:
        refuse(
            grpc.StatusCode.PERMISSION_DENIED,
            "not a refresh (another site, address, index or threshold): approve it by hand",
            **extra,
        )
    if not now < plan.not_after <= now + REFRESH_PLAN_LIFETIME:
        refuse(
            grpc.StatusCode.FAILED_PRECONDITION,
            "a refresh plan for unattended approval expires within two days",
            **extra,
        )
    # At most one refresh every N days, counted from the last one approved here that
    # may have committed: a plan approved for the epoch still current never ran, and
    # does not hold back the next (else anyone who can connect could ask for one and
    # never run it, and no scheduled refresh would ever be approved).
    again = last is not None and last[1] == plan.digest.hex()
    unused = last is not None and last[2] == epoch.params.epoch_id
    recent = last is not None and now - last[0] < days * 86400
    if last is not None and not again and not unused and recent:
        refuse(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this site approved a refresh {(now - last[0]) / 86400:.1f} days ago; it "
            f"approves one every {days} days unattended",
            **extra,
        )
    return again

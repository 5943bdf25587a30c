"""Around the reshare arithmetic: site keys, plans and approvals, and the signed and
sealed messages sites exchange through the coordinator (docs/lifecycle.md, §10).

No network and no files here: the node and coordinator layers move these values, the
storage layer keeps site keys.
"""

from ittc.lifecycle.certificate import ACK, Certificate
from ittc.lifecycle.envelope import (
    Evidence,
    Opened,
    Sealed,
    Statement,
    judge,
    open_sealed,
    reveal_ephemeral,
    seal,
    state,
    verify_evidence,
)
from ittc.lifecycle.plan import (
    Approval,
    Member,
    Plan,
    approve,
    check_approvals,
    run_id,
    scheme_plan,
)
from ittc.lifecycle.sites import SiteIdentity, SiteKey

__all__ = [
    "ACK",
    "Approval",
    "Certificate",
    "Evidence",
    "Member",
    "Opened",
    "Plan",
    "Sealed",
    "SiteIdentity",
    "SiteKey",
    "Statement",
    "approve",
    "check_approvals",
    "judge",
    "open_sealed",
    "reveal_ephemeral",
    "run_id",
    "scheme_plan",
    "seal",
    "state",
    "verify_evidence",
]

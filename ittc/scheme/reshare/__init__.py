"""Resharing a key to a new epoch: the arithmetic of one run, without I/O.

``k`` holders of the current epoch deal a fresh sharing of the same key to a new
membership ``(n', k')``: refresh, recovery of a lost share, replacing, adding or removing
sites and changing ``k`` are all this one operation. Shares stay below
``|N| + 128 + O(log n'!)`` bits at every epoch, however many there are. The design and
its security argument are in docs/lifecycle.md; the message flow around these steps is
the node and coordinator layers' business.

Steps, in order:

1. :class:`ResharePlan` — the run: old epoch, holders, new ``(n', k')``, a fresh run id.
2. :meth:`Holder.send_masks` (round 1), :meth:`Holder.receive_mask`,
   :meth:`Holder.contribute` (round 2) — each holder, with its own share.
3. :func:`verify_contributions` — every public check, by everyone; the new epoch's
   :class:`~ittc.scheme.params.PublicParams`.
4. :func:`assemble_share` — each new member, from its sub-shares.
5. :func:`acceptance_share` and :func:`check_acceptance` — the new shares sign before
   anything commits.

Failed checks raise :class:`~ittc.errors.ReshareError` naming the participants the
evidence convicts; complaints are settled by :func:`judge_mask_complaint` and
:func:`judge_sub_share_complaint`.
"""

from ittc.scheme.reshare.holder import Holder
from ittc.scheme.reshare.messages import Contribution, MaskCommitment, PrivateValue
from ittc.scheme.reshare.plan import RUN_ID_BYTES, Bounds, ResharePlan
from ittc.scheme.reshare.verify import (
    Outcome,
    acceptance_digest,
    acceptance_representative,
    acceptance_share,
    assemble_share,
    check_acceptance,
    check_contribution,
    check_epoch_acceptance,
    check_mask,
    check_sub_share,
    epoch_acceptance_digest,
    judge_mask_complaint,
    judge_sub_share_complaint,
    mask_table,
    verify_contributions,
)

__all__ = [
    "RUN_ID_BYTES",
    "Bounds",
    "Contribution",
    "Holder",
    "MaskCommitment",
    "Outcome",
    "PrivateValue",
    "ResharePlan",
    "acceptance_digest",
    "acceptance_representative",
    "acceptance_share",
    "assemble_share",
    "check_acceptance",
    "check_contribution",
    "check_epoch_acceptance",
    "check_mask",
    "check_sub_share",
    "epoch_acceptance_digest",
    "judge_mask_complaint",
    "judge_sub_share_complaint",
    "mask_table",
    "verify_contributions",
]

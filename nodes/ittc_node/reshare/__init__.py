"""The ``ittc.v1.Reshare`` service: this node's side of moving the key to a new epoch.

Authorization is the plan, not the caller. Any holder of a certificate of the cluster CA
can connect (the TLS handshake checks that much), but nothing happens without a plan
that ``k`` sites of the current epoch approved with their own site keys: ``Prepare``
checks the approvals before the node sends anything, every later step belongs to a
prepared run, and ``Commit`` takes only a certificate that proves itself. A signing
client's identity gives it nothing here. Every step is audited: the plan, the approvals
that counted, the outcome, and the caller.

One run at a time. A holder's secrets (its masks, its additive share, its dealing
polynomial) live in memory only, in :class:`~ittc.scheme.reshare.Holder`: a holder that
crashes mid-run is simply not there any more, and the coordinator tries other holders.
A new member stores its share (encrypted, beside the old one) and a record of the run
before it acknowledges; the share waits there until a certificate commits it.

The steps (docs/lifecycle.md §3, §10):

* ``Prepare`` — check the approvals; a holder makes its round-1 masks.
* ``Deal`` — a holder checks the masks sealed to it against their commitments, then
  publishes its contribution and seals one sub-share to each new member; a wrong mask is
  answered with a complaint that reveals it (signed by its sender) instead.
* ``Accept`` — a new member runs every public check itself, checks its sub-shares,
  assembles and stores its share, and acknowledges (or complains, revealing only the
  wrong sub-share).
* ``Commit`` — on a valid certificate: the new epoch becomes current, the old share is
  destroyed, and the node refuses the old epoch from then on; a site that is not a member
  of the new epoch retires.

The modules: :mod:`~ittc_node.reshare.service` (the wire, ``Prepare``, ``Abort``,
``Status``, ``ApproveRefresh``), :mod:`~ittc_node.reshare.holder` (``Deal``,
``RevealEphemeral``), :mod:`~ittc_node.reshare.member` (``Accept``, ``Commit``),
:mod:`~ittc_node.reshare.state` (the site, its epoch and run, the checks every step
makes), :mod:`~ittc_node.reshare.faults` (test faults).
"""

from ittc_node.reshare.service import SERVICE_NAME, ReshareService
from ittc_node.reshare.state import Epoch

__all__ = ["SERVICE_NAME", "Epoch", "ReshareService"]

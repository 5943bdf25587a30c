"""The exceptions ittc raises.

Everything derives from :class:`IttcError`, so a caller can catch the whole family in one
clause; input errors also derive from :class:`ValueError`, as the standard library would
raise. Messages name nodes, indices and reasons, never secret values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class IttcError(Exception):
    """Base class of every error ittc raises on purpose."""


class ParameterError(IttcError, ValueError):
    """Key or cluster parameters that are malformed or inconsistent."""


class EncodingError(IttcError, ValueError):
    """A message that cannot be encoded: unknown hash, wrong digest length, bad salt..."""


class InvalidShare(IttcError, ValueError):
    """A signature share that is malformed or does not belong to this key and message."""

    def __init__(self, index: int | None, reason: str) -> None:
        self.index = index
        self.reason = reason
        who = f"share from node {index}" if index is not None else "share"
        super().__init__(f"invalid {who}: {reason}")


class InvalidProof(InvalidShare):
    """A share whose proof of correctness does not verify."""


class NotEnoughShares(IttcError):
    """Fewer than ``k`` valid shares: no signature can be made (and none is returned).

    ``bad`` maps each node index that was excluded to the reason it was excluded.
    """

    def __init__(self, needed: int, valid: int, bad: Mapping[int, str] | None = None) -> None:
        self.needed = needed
        self.valid = valid
        self.bad = dict(bad or {})
        detail = "; ".join(f"node {i}: {r}" for i, r in sorted(self.bad.items()))
        msg = f"need {needed} valid shares, have {valid}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class CombineError(IttcError):
    """``k`` shares combined to a value that is not a signature: one of them is wrong."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = tuple(indices)
        super().__init__(
            f"shares from nodes {list(self.indices)} do not combine to a valid "
            "signature (at least one is wrong)"
        )


class BackendError(IttcError):
    """The exponentiation backend asked for cannot be used: missing, or it answers wrongly."""


class InvalidSignature(IttcError):
    """A signature that does not verify under the key's public key."""


class ShareFileError(IttcError):
    """A share file that cannot be used. Nothing on disk is changed when this is raised."""


class ShareFileFormatError(ShareFileError, ValueError):
    """Not a share file, an unsupported version, or a damaged header."""


class ShareFileCorrupt(ShareFileError):
    """The share file was damaged or altered (it fails its checksum or authentication)."""


class WrongPassphrase(ShareFileError):
    """The passphrase does not open this share file (or the file was altered)."""


class ShareFileMismatch(ShareFileError):
    """The share file belongs to another node or another key."""


class InsecureFileMode(ShareFileError):
    """The share file can be read or written by users other than its owner."""


class SigningError(IttcError):
    """Signing through the cluster failed. ``nodes`` maps node index to the reason."""

    def __init__(self, message: str, nodes: Mapping[int, str] | None = None) -> None:
        self.nodes = dict(nodes or {})
        detail = "; ".join(f"node {i}: {r}" for i, r in sorted(self.nodes.items()))
        super().__init__(f"{message} ({detail})" if detail else message)


class NodeError(IttcError):
    """One node failed to answer as it should."""

    def __init__(self, node: int, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"node {node}: {reason}")


class NodeUnavailable(NodeError):
    """The node could not be reached or did not answer within the deadline."""


class NodeRefused(NodeError):
    """The node answered and refused the request (the reason is the node's)."""


class AuditLogError(IttcError):
    """The audit log cannot be written, or its hash chain does not verify."""


class ConfigError(IttcError, ValueError):
    """A configuration or cluster file that is missing, malformed or inconsistent."""


class ReshareError(IttcError):
    """A reshare run failed one of its checks; nothing of that run was committed.

    ``check`` names the check that failed. ``holders`` (old-epoch indices) and
    ``members`` (new-epoch indices) name the participants the evidence convicts; both are
    empty when it convicts nobody (a missing message, or an inconsistency no single
    participant can be shown to have caused). An honest participant is never named.
    """

    def __init__(
        self, check: str, reason: str, *, holders: Sequence[int] = (), members: Sequence[int] = ()
    ) -> None:
        self.check = check
        self.reason = reason
        self.holders = tuple(sorted(set(holders)))
        self.members = tuple(sorted(set(members)))
        who = [f"holder {i}" for i in self.holders] + [f"member {j}" for j in self.members]
        blame = f" (at fault: {', '.join(who)})" if who else ""
        super().__init__(f"reshare check {check!r} failed: {reason}{blame}")

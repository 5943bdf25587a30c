"""The exceptions ittc raises.

Everything derives from :class:`IttcError`, so a caller can catch the whole family in one
clause; input errors also derive from :class:`ValueError`, as the standard library would
raise. Messages name nodes, indices and reasons, never secret values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _CryptographyUnsupportedAlgorithm


def _rebuild(cls: type[IttcError], args: tuple[Any, ...], state: dict[str, Any]) -> IttcError:
    """An error as it was pickled: its ``args`` and attributes, without calling the
    class's ``__init__`` (whose parameters are not its ``args``)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class IttcError(Exception):
    """Base class of every error ittc raises on purpose.

    Every one pickles whole (its message and attributes): an error raised in a worker
    process reaches the process that waits for it as itself.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls ``cls(*args)``, which breaks every class whose
        # ``__init__`` takes other parameters than the message it passes on.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


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
        super().__init__(self._with_detail(f"need {needed} valid shares, have {valid}"))

    def _with_detail(self, message: str) -> str:
        detail = "; ".join(f"node {i}: {r}" for i, r in sorted(self.bad.items()))
        return f"{message} ({detail})" if detail else message


class SearchStopped(NotEnoughShares):
    """A robust combine was stopped (deadline or cancellation) before it found ``k``
    shares that make a signature. Not proof that fewer than ``k`` shares are good: some
    ``k``-subsets were not tried; ``tried`` says how many were.
    """

    def __init__(self, needed: int, tried: int, bad: Mapping[int, str] | None = None) -> None:
        super().__init__(needed, 0, bad)
        self.tried = tried
        self.args = (
            self._with_detail(
                f"stopped before finding {needed} shares that combine to a signature "
                f"({tried} subsets of {needed} tried, not all)"
            ),
        )


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


class InvalidSignature(IttcError, _CryptographyInvalidSignature):
    """A signature that does not verify under the key's public key.

    Also a ``cryptography.exceptions.InvalidSignature``, so code written against
    ``cryptography``'s verify catches it unchanged.
    """


class UnsupportedHash(IttcError, _CryptographyUnsupportedAlgorithm):
    """A hash the cluster does not sign with (it signs with SHA-256, SHA-384 and SHA-512).

    Also ``cryptography``'s ``UnsupportedAlgorithm``, which is what ``cryptography``'s own
    keys raise for the same request.
    """


class ShareFileError(IttcError):
    """A share file that cannot be used. Nothing on disk is changed when this is raised."""


class ShareFileFormatError(ShareFileError, ValueError):
    """Not a share file, an unsupported version, or a damaged header."""


class ShareFileCorrupt(ShareFileError):
    """The share file was damaged or altered (it fails its checksum or authentication)."""


class WrongPassphrase(ShareFileError):
    """The passphrase does not open this share file or site-key file (or the file was
    altered)."""


class ShareFileMismatch(ShareFileError):
    """The share file belongs to another node or another key."""


class InsecureFileMode(ShareFileError):
    """A secret file (share, site key, passphrase) that users other than its owner can
    read or write."""


class SiteKeyFileError(IttcError):
    """A site-key file that cannot be used: not one, damaged, or of another version.
    Nothing on disk is changed when this is raised."""


class NodeError(IttcError):
    """One node failed to answer as it should: ``node`` (its index), ``reason``, and
    ``code``, the gRPC status name when the node (or gRPC) gave one."""

    def __init__(self, node: int, reason: str, code: str | None = None) -> None:
        self.node = node
        self.reason = reason
        self.code = code
        super().__init__(f"node {node}: {reason}")

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(node={self.node}, reason={self.reason!r}, code={self.code!r})"


class NodeUnavailable(NodeError):
    """The node could not be reached, did not answer in time, or was not asked (known
    to be down, or no time left); or it answered while too few other nodes did."""


class NodeRefused(NodeError):
    """The node answered and refused the request (the reason is the node's)."""


class NodeInOtherEpoch(NodeRefused):
    """The node refused because it signs in another epoch than the request named;
    ``epoch`` is the node's (None if it did not say). A combiner that sees a newer epoch
    re-reads its cluster file."""

    def __init__(self, node: int, reason: str, epoch: int | None) -> None:
        super().__init__(node, reason, "FAILED_PRECONDITION")
        self.epoch = epoch


class NodeMisbehaved(NodeError):
    """The node sent something wrong: a share that does not combine or fails its proof,
    a malformed answer, another node's index. Such a node is quarantined."""


class SigningError(IttcError):
    """Signing through the cluster failed.

    ``nodes`` maps each node index involved to a :class:`NodeError` saying what happened
    to it (:class:`NodeUnavailable`, :class:`NodeRefused` or :class:`NodeMisbehaved`).
    """

    def __init__(self, message: str, nodes: Mapping[int, NodeError] | None = None) -> None:
        self.message = message
        self.nodes: dict[int, NodeError] = dict(nodes or {})
        detail = "; ".join(f"node {i}: {e.reason}" for i, e in sorted(self.nodes.items()))
        super().__init__(f"{message} ({detail})" if detail else message)


class CombinerClosed(SigningError):
    """The client was closed (or is closing): it signs nothing more."""


class WireError(IttcError, ValueError):
    """A protocol message that is malformed: an unknown enum, a wrong length, a missing
    field. ``reason`` is fit to send back to the peer or log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AuditLogError(IttcError):
    """The audit log cannot be written, or its hash chain does not verify."""


class ConfigError(IttcError, ValueError):
    """A configuration or cluster file that is missing, malformed or inconsistent."""


class ClientIdentityError(ConfigError):
    """The combiner's own TLS identity cannot work, found before dialling any node: a
    certificate that expired or is not valid yet, a key that is not the certificate's, a
    certificate another CA issued or one not meant for clients, a file that cannot be read.
    The message names the file and what is wrong."""


class CertificateNotValid(IttcError):
    """A TLS certificate of the cluster's own PKI that is not valid now (expired, or not
    valid yet by this host's clock); the message names the file and the dates."""


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


class CAError(IttcError, ValueError):
    """A request the CA refuses (bad CSR signature, wrong issuer, malformed input...)."""


class OperationRefused(IttcError, TypeError):
    """The threshold key does not do this (decrypt, export): no one holds the key."""


class NodeStartError(IttcError):
    """A local node process exited or did not become healthy in time."""


class StartupError(IttcError):
    """A node cannot start; the message names the file and the problem."""


class ComputeError(IttcError):
    """A node's compute pool cannot work any more (a worker process died)."""


class EnvelopeError(IttcError):
    """A signed or sealed reshare message that cannot be used.

    ``site`` is the site the message claims to come from. Whether that site is at fault
    depends on the check: a signature that does not verify means the message is not
    that site's (the transport is at fault), never that the site lied.
    """

    def __init__(self, site: str, reason: str) -> None:
        self.site = site
        self.reason = reason
        super().__init__(f"message from site {site}: {reason}")


class Undecryptable(EnvelopeError):
    """A sealed value, validly signed outside by its sender, that does not open.

    The recipient can complain; the sender then reveals the message's ephemeral key and
    anyone can tell which of the two is lying (:func:`ittc.lifecycle.envelope.judge`).
    """


class ApprovalError(IttcError):
    """A reshare plan without enough valid approvals from current sites, or expired.

    ``invalid`` maps site names to why their approval was not counted.
    """

    def __init__(self, reason: str, invalid: Mapping[str, str] | None = None) -> None:
        self.reason = reason
        self.invalid = dict(invalid or {})
        detail = "; ".join(f"{s}: {r}" for s, r in sorted(self.invalid.items()))
        super().__init__(f"{reason} ({detail})" if detail else reason)


class CertificateError(IttcError, ValueError):
    """A commit certificate that does not prove its epoch: malformed, not for the epoch it
    is checked against, short of approvals or acknowledgements, or failing the
    acceptance test. Nothing is committed on it."""

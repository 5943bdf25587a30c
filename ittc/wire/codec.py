"""The one translation between the scheme's (and the reshare messages') values and
``ittc.v1`` messages.

Client and node both go through here, so each enum mapping, each byte length and each
size bound exists once. Decoding checks every length and enum before anything is built
from it and raises :class:`~ittc.errors.WireError` with a reason fit to send back or log;
it never does arithmetic with the values (the scheme layer range-checks them).

Share encoding on the wire: ``value`` is ``x_i`` big-endian at the modulus length; with a
proof, ``proof_c`` is the challenge at :data:`CHALLENGE_BYTES` and ``proof_z`` the
response, minimal big-endian, at most :func:`response_bytes` long.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ittc.errors import ParameterError, WireError
from ittc.lifecycle import Approval, Plan, Sealed, Statement
from ittc.lifecycle.envelope import MAX_PAYLOAD
from ittc.lifecycle.plan import ATTEMPT_BYTES
from ittc.scheme.encoding import HASHES, MAX_SALT_BYTES, Scheme, SignItem
from ittc.scheme.params import MAX_NODES, PublicParams
from ittc.scheme.proofs import L1, Proof, SignatureShare, nonce_bits
from ittc.scheme.reshare import RUN_ID_BYTES
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc.wire.v1 import signer_pb2 as pb

__all__ = [
    "CHALLENGE_BYTES",
    "EPOCH_METADATA",
    "MAX_PLAN_BYTES",
    "MAX_RESHARE_VALUES",
    "approvals_from_wire",
    "approvals_to_wire",
    "holders_from_wire",
    "plan_from_wire",
    "run_id_from_wire",
    "sealed_from_wire",
    "sealed_list_from_wire",
    "sealed_to_wire",
    "statement_from_wire",
    "statement_to_wire",
    "statements_from_wire",
    "MAX_CLIENT_MESSAGE_BYTES",
    "ShareBytes",
    "hash_from_wire",
    "hash_to_wire",
    "item_from_wire",
    "item_to_wire",
    "node_epoch",
    "padding_from_wire",
    "padding_to_wire",
    "response_bytes",
    "share_to_wire",
    "shares_from_wire",
    "sign_response_bound",
    "wire_name",
]

#: ``(scheme, wire enum)``: the paddings the protocol knows.
_PADDINGS: tuple[tuple[Scheme, pb.Padding], ...] = (
    (Scheme.PKCS1V15, pb.PADDING_PKCS1V15),
    (Scheme.PSS, pb.PADDING_PSS),
)
#: ``(hash name, wire enum)``: every hash of :data:`ittc.scheme.encoding.HASHES`.
_HASHES: tuple[tuple[str, pb.Hash], ...] = (
    ("sha256", pb.HASH_SHA256),
    ("sha384", pb.HASH_SHA384),
    ("sha512", pb.HASH_SHA512),
)
assert {name for name, _ in _HASHES} == set(HASHES), "wire hash table out of date"

_PADDING_TO_WIRE = dict(_PADDINGS)
_PADDING_FROM_WIRE: dict[int, Scheme] = {wire: scheme for scheme, wire in _PADDINGS}
_HASH_TO_WIRE = dict(_HASHES)
_HASH_FROM_WIRE: dict[int, str] = {wire: name for name, wire in _HASHES}

#: Bytes of a proof's challenge ``c`` on the wire.
CHALLENGE_BYTES = L1 // 8
#: Largest message a combiner sends or accepts.
MAX_CLIENT_MESSAGE_BYTES = 4 << 20
#: Per-share overhead of protobuf framing (tags and lengths), generously.
_SHARE_FRAMING = 16
#: Framing of a SignResponse around its shares (index, key id, epoch...).
_RESPONSE_FRAMING = 1024

#: Trailing metadata of a node's refusal of a request for another epoch: the epoch (a
#: decimal number) the node signs in.
EPOCH_METADATA = "ittc-epoch"

#: One share as it goes on the wire: (value, proof c, proof z); c, z empty without a proof.
ShareBytes = tuple[bytes, bytes, bytes]


def wire_name(enum: object, value: int) -> str:
    """The protocol's name of an enum value, or the bare number for unknown ones."""
    try:
        return str(enum.Name(value))  # type: ignore[attr-defined]
    except ValueError:
        return str(value)


def padding_to_wire(scheme: Scheme) -> pb.Padding:
    return _PADDING_TO_WIRE[scheme]


def padding_from_wire(value: int) -> Scheme:
    try:
        return _PADDING_FROM_WIRE[value]
    except KeyError:
        raise WireError(f"unknown padding {wire_name(pb.Padding, value)}") from None


def hash_to_wire(name: str) -> pb.Hash:
    return _HASH_TO_WIRE[name]


def hash_from_wire(value: int) -> str:
    try:
        return _HASH_FROM_WIRE[value]
    except KeyError:
        raise WireError(f"unknown hash {wire_name(pb.Hash, value)}") from None


def item_to_wire(item: SignItem) -> pb.SignItem:
    return pb.SignItem(
        padding=padding_to_wire(item.padding),
        hash=hash_to_wire(item.hash_name),
        digest=item.digest,
        salt=item.salt,
    )


def item_from_wire(message: pb.SignItem) -> SignItem:
    """A :class:`SignItem` from the wire, every field checked (cheapest first)."""
    scheme = padding_from_wire(message.padding)
    hash_name = hash_from_wire(message.hash)
    size = HASHES[hash_name].digest_size
    if len(message.digest) != size:
        raise WireError(f"a {hash_name} digest is {size} bytes, not {len(message.digest)}")
    if scheme is Scheme.PKCS1V15 and message.salt:
        raise WireError("PKCS#1 v1.5 takes no salt")
    if len(message.salt) > MAX_SALT_BYTES:
        raise WireError(f"PSS salt longer than {MAX_SALT_BYTES} bytes")
    return SignItem(scheme, hash_name, bytes(message.digest), bytes(message.salt))


def response_bytes(params: PublicParams) -> int:
    """The longest ``proof_z`` an honest node sends: ``z < 2^(nonce_bits + 1)``."""
    return (nonce_bits(params) + 1 + 7) // 8


def sign_response_bound(params: PublicParams, max_batch: int) -> int:
    """An upper bound on the size of a SignResponse for ``max_batch`` shares with proofs."""
    per_share = params.size_bytes + CHALLENGE_BYTES + response_bytes(params) + _SHARE_FRAMING
    return max_batch * per_share + _RESPONSE_FRAMING


def share_to_wire(share: SignatureShare, params: PublicParams) -> ShareBytes:
    """``(value, c, z)`` bytes of one share: value at the modulus length, c fixed, z minimal."""
    value = share.value.to_bytes(params.size_bytes, "big")
    if share.proof is None:
        return value, b"", b""
    z = share.proof.z
    return (
        value,
        share.proof.c.to_bytes(CHALLENGE_BYTES, "big"),
        z.to_bytes((z.bit_length() + 7) // 8 or 1, "big"),
    )


def shares_from_wire(
    shares: Sequence[pb.Share], *, index: int, params: PublicParams, count: int, with_proofs: bool
) -> list[SignatureShare]:
    """Node ``index``'s shares, checked for shape (count and lengths) before any is built.

    ``index`` is the node the transport authenticated, never a field of the answer.
    """
    if len(shares) != count:
        raise WireError(f"returned {len(shares)} shares for {count} items")
    size, z_max = params.size_bytes, response_bytes(params)
    out = []
    for share in shares:
        if len(share.value) != size:
            raise WireError("share of the wrong length")
        proof = None
        if with_proofs:
            if not 0 < len(share.proof_c) <= CHALLENGE_BYTES or not 0 < len(share.proof_z) <= z_max:
                raise WireError("proof missing or of the wrong size")
            c, z = int.from_bytes(share.proof_c, "big"), int.from_bytes(share.proof_z, "big")
            proof = Proof(c, z)
        out.append(SignatureShare(index, int.from_bytes(share.value, "big"), proof))
    return out


def node_epoch(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The epoch a refusing node named in its trailing metadata, or None (absent or not
    a plain decimal number)."""
    for key, value in metadata or ():
        if key == EPOCH_METADATA:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            if text.isdigit() and len(text) <= 20:
                return int(text)
    return None


# -- the Reshare service's messages -------------------------------------------------------

#: Largest plan (JSON) a node parses: 64 members with their keys and addresses.
MAX_PLAN_BYTES = 64 << 10
#: Most statements or sealed values one reshare request carries (holders x members).
MAX_RESHARE_VALUES = 64 * 64
_SIGNATURE = 64
_KEY = 32
_NONCE = 24
_BOX_OVERHEAD = 16 + _SIGNATURE


def _text(value: str, what: str, most: int) -> str:
    if not value or len(value) > most or not value.isascii():
        raise WireError(f"{what}: 1..{most} ASCII characters")
    return value


def _exact(value: bytes, what: str, size: int) -> bytes:
    if len(value) != size:
        raise WireError(f"{what} is {size} bytes, not {len(value)}")
    return bytes(value)


def statement_to_wire(s: Statement) -> rpb.Statement:
    return rpb.Statement(
        kind=s.kind, run_id=s.run_id, sender=s.sender, body=s.body, signature=s.signature
    )


def statement_from_wire(m: rpb.Statement) -> Statement:
    """A statement with every length checked (its signature is checked where it is used)."""
    if len(m.body) > MAX_PAYLOAD:
        raise WireError(f"a statement body is at most {MAX_PAYLOAD} bytes")
    return Statement(
        _text(m.kind, "statement kind", 64),
        _exact(m.run_id, "a run id", RUN_ID_BYTES),
        _text(m.sender, "statement sender", 63),
        bytes(m.body),
        _exact(m.signature, "a signature", _SIGNATURE),
    )


def statements_from_wire(messages: Sequence[rpb.Statement]) -> list[Statement]:
    if len(messages) > MAX_RESHARE_VALUES:
        raise WireError(f"at most {MAX_RESHARE_VALUES} statements")
    return [statement_from_wire(m) for m in messages]


def sealed_to_wire(s: Sealed) -> rpb.Sealed:
    return rpb.Sealed(
        kind=s.kind,
        run_id=s.run_id,
        sender=s.sender,
        recipient=s.recipient,
        ephemeral=s.ephemeral,
        nonce=s.nonce,
        ciphertext=s.ciphertext,
        signature=s.signature,
    )


def sealed_from_wire(m: rpb.Sealed) -> Sealed:
    """A sealed value with every length checked."""
    if len(m.ciphertext) > MAX_PAYLOAD + _BOX_OVERHEAD:
        raise WireError("a sealed value's ciphertext is too long")
    return Sealed(
        _text(m.kind, "sealed kind", 64),
        _exact(m.run_id, "a run id", RUN_ID_BYTES),
        _text(m.sender, "sealed sender", 63),
        _text(m.recipient, "sealed recipient", 63),
        _exact(m.ephemeral, "an ephemeral key", _KEY),
        _exact(m.nonce, "a nonce", _NONCE),
        bytes(m.ciphertext),
        _exact(m.signature, "a signature", _SIGNATURE),
    )


def sealed_list_from_wire(messages: Sequence[rpb.Sealed]) -> list[Sealed]:
    if len(messages) > MAX_RESHARE_VALUES:
        raise WireError(f"at most {MAX_RESHARE_VALUES} sealed values")
    return [sealed_from_wire(m) for m in messages]


def approvals_to_wire(approvals: Sequence[Approval]) -> list[rpb.Approval]:
    return [rpb.Approval(site=a.site, signature=a.signature) for a in approvals]


def approvals_from_wire(messages: Sequence[rpb.Approval]) -> list[Approval]:
    if len(messages) > 2 * MAX_NODES:
        raise WireError(f"at most {2 * MAX_NODES} approvals")
    return [
        Approval(_text(m.site, "approving site", 63), _exact(m.signature, "a signature", 64))
        for m in messages
    ]


def plan_from_wire(data: bytes) -> Plan:
    if len(data) > MAX_PLAN_BYTES:
        raise WireError(f"a plan is at most {MAX_PLAN_BYTES} bytes")
    try:
        return Plan.from_json(bytes(data))
    except ParameterError as exc:
        raise WireError(f"not a valid plan: {exc}") from None


def holders_from_wire(values: Sequence[int]) -> tuple[int, ...]:
    if not 1 <= len(values) <= MAX_NODES:
        raise WireError(f"1..{MAX_NODES} holders")
    return tuple(int(v) for v in values)


def run_id_from_wire(value: bytes) -> bytes:
    return _exact(value, "a run id", RUN_ID_BYTES)


def attempt_from_wire(value: bytes) -> bytes:
    return _exact(value, "an attempt nonce", ATTEMPT_BYTES)

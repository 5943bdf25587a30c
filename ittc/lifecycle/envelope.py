"""Messages between sites in a reshare, which travel only through the coordinator.

* A :class:`Statement` is a public value signed by its sender's site key, bound to its
  kind and run: mask commitments, a contribution, an acknowledgement, a complaint.
* A :class:`Sealed` value is private (a mask for one holder, a sub-share for one new
  member): the sender signs the plaintext *inside* (so the recipient can later prove what
  it received), seals it to the recipient's box key with a fresh ephemeral key, and signs
  the sealed bytes *outside* (so the coordinator can neither alter nor swap it).

What each check proves:

* an outer signature that does not verify: the message is not the sender's; drop it,
  the transport is at fault, never the named sender;
* a sealed value that opens and carries a valid inner signature: the recipient can
  reveal it (:meth:`Opened.evidence`), and anyone can check it came from the sender
  (:func:`verify_evidence`), then judge the value itself;
* a sealed value, validly signed outside, that does not open or whose inside is not
  signed: the recipient complains; the sender reveals that one message's ephemeral key
  (:func:`reveal_ephemeral`, derived from its box key and the message's context, so
  nothing else is revealed), and :func:`judge` says which of the two lies.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.public

from ittc.errors import EnvelopeError, ParameterError, Undecryptable
from ittc.lifecycle.sites import SIGNATURE_BYTES, SiteIdentity, SiteKey, encode_fields

__all__ = [
    "MAX_PAYLOAD",
    "Evidence",
    "Opened",
    "Sealed",
    "Statement",
    "judge",
    "open_sealed",
    "reveal_ephemeral",
    "seal",
    "state",
    "verify_evidence",
]

_STATEMENT = b"ittc/v1/reshare/statement\x00"
_INNER = b"ittc/v1/reshare/sealed-inner\x00"
_OUTER = b"ittc/v1/reshare/sealed-outer\x00"
_EPHEMERAL = b"ittc/eph"  # BLAKE2b personalisation (at most 16 bytes)
#: Largest payload sealed or stated (a sub-share of a 16384-bit key is far below this).
MAX_PAYLOAD = 1 << 16
_NONCE = nacl.public.Box.NONCE_SIZE
_KEY = nacl.public.PublicKey.SIZE
#: Poly1305 tag of a box (crypto_box_MACBYTES).
_MAC = 16


#: Field names of each message's dictionary form, in constructor order; True for bytes
#: (written as hex), False for text.
_STATEMENT_FIELDS = (
    ("kind", False),
    ("run_id", True),
    ("sender", False),
    ("body", True),
    ("signature", True),
)
_SEALED_FIELDS = (
    ("kind", False),
    ("run_id", True),
    ("sender", False),
    ("recipient", False),
    ("ephemeral", True),
    ("nonce", True),
    ("ciphertext", True),
    ("signature", True),
)
_EVIDENCE_FIELDS = (
    ("kind", False),
    ("run_id", True),
    ("sender", False),
    ("recipient", False),
    ("payload", True),
    ("signature", True),
)
#: Longest text or byte field accepted in a message's dictionary form.
_MAX_FIELD = 2 * MAX_PAYLOAD + 256


def _to_dict(message: Any) -> dict[str, str]:
    out = {}
    for name, value in vars(message).items():
        out[name] = value.hex() if isinstance(value, bytes) else str(value)
    return out


def _from_dict(data: Any, fields: tuple[tuple[str, bool], ...]) -> list[Any]:
    """Constructor arguments from a dictionary form, every field present, typed and
    bounded (values are checked again where they are used)."""
    names = {name for name, _ in fields}
    if not isinstance(data, dict) or set(data) != names:
        raise ParameterError(f"a message has exactly the fields {sorted(names)}")
    values: list[Any] = []
    for name, is_bytes in fields:
        value = data[name]
        if not isinstance(value, str) or len(value) > _MAX_FIELD:
            raise ParameterError(f"message field {name} is not a bounded string")
        if is_bytes:
            try:
                values.append(bytes.fromhex(value))
            except ValueError:
                raise ParameterError(f"message field {name} is not hex") from None
        else:
            values.append(value)
    return values


def _check_header(kind: str, run_id: bytes, payload: bytes) -> None:
    if not isinstance(kind, str) or not kind.isascii() or not 0 < len(kind) <= 64:
        raise ParameterError("a message kind is 1-64 ASCII characters")
    if not isinstance(run_id, bytes) or len(run_id) != 32:
        raise ParameterError("a run id is 32 bytes")
    if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD:
        raise ParameterError(f"a payload is bytes, at most {MAX_PAYLOAD}")


# -- public statements ---------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """``body``, said by site ``sender`` in run ``run_id`` as a ``kind``; signed."""

    kind: str
    run_id: bytes
    sender: str
    body: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return _STATEMENT + encode_fields(self.kind, self.run_id, self.sender, self.body)

    def verify(self, sender: SiteIdentity) -> bytes:
        """The body, if ``sender`` signed it; raises :class:`EnvelopeError` otherwise."""
        if sender.name != self.sender:
            raise EnvelopeError(self.sender, f"checked against site {sender.name}'s key")
        _check_header(self.kind, self.run_id, self.body)
        sender.verify(self.signed_bytes(), self.signature)
        return self.body

    def to_dict(self) -> dict[str, str]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Statement:
        return cls(*_from_dict(data, _STATEMENT_FIELDS))


def state(key: SiteKey, kind: str, run_id: bytes, body: bytes) -> Statement:
    """Sign ``body`` as this site's ``kind`` statement in run ``run_id``."""
    _check_header(kind, run_id, body)
    unsigned = Statement(kind, run_id, key.name, body, b"")
    return Statement(kind, run_id, key.name, body, key.sign(unsigned.signed_bytes()))


# -- sealed private values -------------------------------------------------------------


@dataclass(frozen=True)
class Sealed:
    """A private value from ``sender`` to ``recipient``: ephemeral public key, nonce and
    ciphertext, and the sender's signature over all of it."""

    kind: str
    run_id: bytes
    sender: str
    recipient: str
    ephemeral: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Sealed:
        return cls(*_from_dict(data, _SEALED_FIELDS))

    def outer_bytes(self) -> bytes:
        return _OUTER + encode_fields(
            self.kind,
            self.run_id,
            self.sender,
            self.recipient,
            self.ephemeral,
            self.nonce,
            self.ciphertext,
        )


def _inner_bytes(kind: str, run_id: bytes, sender: str, recipient: str, payload: bytes) -> bytes:
    return _INNER + encode_fields(kind, run_id, sender, recipient, payload)


def _ephemeral_key(
    key: SiteKey, kind: str, run_id: bytes, recipient: str
) -> nacl.public.PrivateKey:
    """One X25519 key per (run, kind, recipient), derived from the sender's box key: it can
    be revealed for that one message without revealing anything else."""
    seed = hashlib.blake2b(
        encode_fields(kind, run_id, recipient),
        key=bytes(key.box_secret()),
        digest_size=32,
        person=_EPHEMERAL,
    ).digest()
    return nacl.public.PrivateKey(seed)


def seal(key: SiteKey, recipient: SiteIdentity, kind: str, run_id: bytes, payload: bytes) -> Sealed:
    """Sign ``payload`` inside, seal it to ``recipient``, sign the result outside."""
    _check_header(kind, run_id, payload)
    inner = key.sign(_inner_bytes(kind, run_id, key.name, recipient.name, payload))
    ephemeral = _ephemeral_key(key, kind, run_id, recipient.name)
    nonce = secrets.token_bytes(_NONCE)
    box = nacl.public.Box(ephemeral, nacl.public.PublicKey(recipient.box_key))
    ciphertext = bytes(box.encrypt(payload + inner, nonce).ciphertext)
    unsigned = Sealed(
        kind, run_id, key.name, recipient.name, bytes(ephemeral.public_key), nonce, ciphertext, b""
    )
    return Sealed(
        kind,
        run_id,
        key.name,
        recipient.name,
        unsigned.ephemeral,
        nonce,
        ciphertext,
        key.sign(unsigned.outer_bytes()),
    )


@dataclass(frozen=True)
class Evidence:
    """What a recipient reveals to prove what it received: the header, the payload and the
    sender's inner signature over them."""

    kind: str
    run_id: bytes
    sender: str
    recipient: str
    payload: bytes
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Evidence:
        return cls(*_from_dict(data, _EVIDENCE_FIELDS))


@dataclass(frozen=True)
class Opened:
    """An opened sealed value. The payload is secret: keep it, or reveal it as evidence."""

    evidence: Evidence

    @property
    def payload(self) -> bytes:
        return self.evidence.payload

    def __repr__(self) -> str:
        e = self.evidence
        return f"<Opened {e.kind} from {e.sender} to {e.recipient}>"


def _check_sealed_shape(sealed: Sealed) -> None:
    _check_header(sealed.kind, sealed.run_id, b"")
    if (
        not isinstance(sealed.ephemeral, bytes)
        or len(sealed.ephemeral) != _KEY
        or not isinstance(sealed.nonce, bytes)
        or len(sealed.nonce) != _NONCE
        or not isinstance(sealed.ciphertext, bytes)
        or len(sealed.ciphertext) > MAX_PAYLOAD + SIGNATURE_BYTES + _MAC
    ):
        raise EnvelopeError(sealed.sender, "malformed sealed value")


def _open_with(box: nacl.public.Box, sealed: Sealed, sender: SiteIdentity) -> Evidence:
    """Decrypt and check the inner signature; raises :class:`Undecryptable`."""
    try:
        plain = box.decrypt(sealed.ciphertext, sealed.nonce)
    except nacl.exceptions.CryptoError:
        raise Undecryptable(sealed.sender, "sealed value does not open") from None
    if len(plain) < SIGNATURE_BYTES:
        raise Undecryptable(sealed.sender, "sealed value is too short to be signed")
    payload, signature = plain[:-SIGNATURE_BYTES], plain[-SIGNATURE_BYTES:]
    evidence = Evidence(
        sealed.kind, sealed.run_id, sealed.sender, sealed.recipient, payload, signature
    )
    try:
        verify_evidence(evidence, sender)
    except EnvelopeError:
        raise Undecryptable(sealed.sender, "sealed value is not signed inside") from None
    return evidence


def open_sealed(key: SiteKey, sealed: Sealed, sender: SiteIdentity) -> Opened:
    """Open a value sealed to this site by ``sender``.

    Raises :class:`EnvelopeError` if it is not the sender's (outer signature: drop it,
    blame the transport) or not for this site, and :class:`Undecryptable` if the sender
    signed something that does not open properly (complain; see :func:`judge`).
    """
    if sealed.recipient != key.name:
        raise ParameterError(f"sealed for site {sealed.recipient}, not {key.name}")
    if sealed.sender != sender.name:
        raise ParameterError(f"sealed by site {sealed.sender}, checked against {sender.name}")
    _check_sealed_shape(sealed)
    sender.verify(sealed.outer_bytes(), sealed.signature)
    box = nacl.public.Box(key.box_secret(), nacl.public.PublicKey(sealed.ephemeral))
    return Opened(_open_with(box, sealed, sender))


def verify_evidence(evidence: Evidence, sender: SiteIdentity) -> bytes:
    """The revealed payload, if ``sender`` signed it for that run, kind and recipient."""
    if evidence.sender != sender.name:
        raise EnvelopeError(evidence.sender, f"checked against site {sender.name}'s key")
    _check_header(evidence.kind, evidence.run_id, evidence.payload)
    sender.verify(
        _inner_bytes(
            evidence.kind, evidence.run_id, evidence.sender, evidence.recipient, evidence.payload
        ),
        evidence.signature,
    )
    return evidence.payload


def reveal_ephemeral(key: SiteKey, sealed: Sealed) -> bytes:
    """The sender's answer to a complaint that ``sealed`` does not open: that one
    message's ephemeral secret key (which opens that message and nothing else)."""
    if sealed.sender != key.name:
        raise ParameterError("only the sender can reveal a message's ephemeral key")
    ephemeral = _ephemeral_key(key, sealed.kind, sealed.run_id, sealed.recipient)
    if bytes(ephemeral.public_key) != sealed.ephemeral:
        raise ParameterError("this site did not seal that message")
    return bytes(ephemeral)


def judge(
    sealed: Sealed, ephemeral_secret: bytes, sender: SiteIdentity, recipient: SiteIdentity
) -> tuple[str, Evidence | None]:
    """Who lies about a sealed value the recipient says does not open.

    Returns ``("sender", None)`` if the revealed key does not belong to the message or the
    message does not open with it properly (the sender signed garbage), or
    ``("recipient", evidence)`` if it opens to a properly signed payload (the recipient
    complained falsely; the payload, now public, can be judged on its own).
    ``sealed`` must carry the sender's valid outer signature (checked here).
    """
    _check_sealed_shape(sealed)
    sender.verify(sealed.outer_bytes(), sealed.signature)
    if recipient.name != sealed.recipient:
        raise ParameterError("the recipient does not match the sealed value")
    if not isinstance(ephemeral_secret, bytes) or len(ephemeral_secret) != _KEY:
        return "sender", None
    ephemeral = nacl.public.PrivateKey(ephemeral_secret)
    if bytes(ephemeral.public_key) != sealed.ephemeral:
        return "sender", None
    box = nacl.public.Box(ephemeral, nacl.public.PublicKey(recipient.box_key))
    try:
        evidence = _open_with(box, sealed, sender)
    except Undecryptable:
        return "sender", None
    return "recipient", evidence

"""Test-only fault injection: make a node lie or stall so the combiner's defences can be tested.

Nothing here is active unless *both* environment variables are set::

    ITTC_TEST_FAULTS_ENABLE=I-UNDERSTAND-THIS-BREAKS-SECURITY
    ITTC_TEST_FAULT=random-share            (a comma-separated list of the faults below)

``ITTC_TEST_FAULT`` alone is ignored (with a warning), so a stray variable on a production
host cannot turn a node into a liar. The daemon logs a loud warning when faults are on.

Faults (a lying node still answers with its own index unless told ``wrong-index``):

``random-share``   each share value is a random unit mod N (proofs, if asked, are the
                   honest ones, so they do not verify against the value sent)
``other-message``  shares (and valid proofs) for a different digest than the one asked
``replay-old``     every share (with a valid proof) is for one fixed old message
``wrong-index``    SignResponse.index claims to be another node
``bad-proof``      honest shares, but every proof's ``z`` is off by one
``slow:<ms>``      answer ``<ms>`` milliseconds late
``refuse``         refuse every Sign with UNAVAILABLE
``dodge:<how>``    a liar that dodges blame: random shares when no proof is asked for;
                   when one is, ``refuse`` (FAILED_PRECONDITION), ``stall`` (no answer
                   until the caller's deadline) or ``honest`` (the true share, proven)
``hold-start:<path>``  stay NOT_SERVING until ``<path>`` exists (lets a test watch startup)

Reshare faults (a liar in every role of a run; docs/lifecycle.md §7):

``reshare:bad-mask``           as a holder, seal each mask off by one (its commitment honest)
``reshare:bad-contribution``   as a holder, publish a masked value off by one
``reshare:bad-sub-share:<j>``  as a holder, seal member ``j`` a sub-share off by one
``reshare:unopenable:<j>``     as a holder, send member ``j`` a sealed value that does not
                               open (signed outside all the same)
``reshare:false-complaint``    as a member, complain about a correct sub-share
``reshare:bad-acceptance``     as a member, acknowledge with a wrong acceptance share
``reshare:crash:<step>``       SIGKILL itself right after ``<step>`` (prepare, deal, accept,
                               commit) has done its work, before answering; ``commit-midway``:
                               inside the commit, the new share in place and the epoch
                               pointer not yet moved
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import secrets
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from ittc.errors import ConfigError
from ittc.scheme.encoding import Scheme
from ittc.wire.codec import ShareBytes

__all__ = ["ENABLE_VALUE", "ENABLE_VAR", "FAULT_VAR", "Faults", "environment"]

ENABLE_VAR = "ITTC_TEST_FAULTS_ENABLE"
ENABLE_VALUE = "I-UNDERSTAND-THIS-BREAKS-SECURITY"
FAULT_VAR = "ITTC_TEST_FAULT"


def environment(spec: str) -> dict[str, str]:
    """The environment variables that make a node process run with fault ``spec``."""
    return {ENABLE_VAR: ENABLE_VALUE, FAULT_VAR: spec}


#: The message ``replay-old`` keeps answering for.
_OLD_DIGEST = hashlib.sha256(b"ittc test fault: an old message").digest()

_FLAGS = {"random-share", "other-message", "replay-old", "wrong-index", "bad-proof", "refuse"}
_RESHARE = {"bad-mask", "bad-contribution", "false-complaint", "bad-acceptance"}
_CRASH_STEPS = {"prepare", "deal", "accept", "commit", "commit-midway"}


@dataclass(frozen=True)
class Faults:
    """The faults one node injects; the default is none."""

    random_share: bool = False
    other_message: bool = False
    replay_old: bool = False
    wrong_index: bool = False
    bad_proof: bool = False
    refuse: bool = False
    slow_ms: int = 0
    #: ``refuse``, ``stall`` or ``honest``: how a ``dodge`` liar answers a request for proof.
    dodge: str = ""
    hold_start: pathlib.Path | None = None
    #: A reshare fault (``bad-mask``, ``bad-sub-share:<j>``...), without the prefix.
    reshare: str = ""
    #: The reshare step after which the node SIGKILLs itself.
    crash_after: str = ""
    #: ``ITTC_TEST_FAULT`` was set without the enabling variable (and is ignored).
    ignored: str = ""

    @property
    def active(self) -> bool:
        return bool(self.describe())

    def describe(self) -> str:
        names = [name for name in sorted(_FLAGS) if getattr(self, name.replace("-", "_"))]
        if self.slow_ms:
            names.append(f"slow:{self.slow_ms}")
        if self.dodge:
            names.append(f"dodge:{self.dodge}")
        if self.hold_start is not None:
            names.append(f"hold-start:{self.hold_start}")
        if self.reshare:
            names.append(f"reshare:{self.reshare}")
        if self.crash_after:
            names.append(f"reshare:crash:{self.crash_after}")
        return ",".join(names)

    def crash(self, step: str) -> None:
        """``reshare:crash:<step>``: die here, as SIGKILL would kill the node."""
        if self.crash_after == step:
            os.kill(os.getpid(), signal.SIGKILL)

    @classmethod
    def parse(cls, text: str) -> Faults:
        """Faults from ``ITTC_TEST_FAULT``'s syntax; unknown names are a config error."""
        flags: set[str] = set()
        slow_ms = 0
        dodge = ""
        hold: pathlib.Path | None = None
        reshare = crash = ""
        for raw in text.split(","):
            name = raw.strip()
            if not name:
                continue
            if name in _FLAGS:
                flags.add(name)
            elif name.startswith("slow:") and name[5:].isdigit() and int(name[5:]) <= 600_000:
                slow_ms = int(name[5:])
            elif name in ("dodge:refuse", "dodge:stall", "dodge:honest"):
                dodge = name.removeprefix("dodge:")
            elif name.startswith("hold-start:") and len(name) > len("hold-start:"):
                hold = pathlib.Path(name[len("hold-start:") :])
            elif name.removeprefix("reshare:") in _RESHARE:
                reshare = name.removeprefix("reshare:")
            elif (
                name.startswith(("reshare:bad-sub-share:", "reshare:unopenable:"))
                and name.rsplit(":", 1)[1].isdigit()
            ):
                reshare = name.removeprefix("reshare:")
            elif name.startswith("reshare:crash:") and name.rsplit(":", 1)[1] in _CRASH_STEPS:
                crash = name.rsplit(":", 1)[1]
            else:
                raise ConfigError(f"{FAULT_VAR}: unknown test fault {name!r}")
        return cls(
            random_share="random-share" in flags,
            other_message="other-message" in flags,
            replay_old="replay-old" in flags,
            wrong_index="wrong-index" in flags,
            bad_proof="bad-proof" in flags,
            refuse="refuse" in flags,
            slow_ms=slow_ms,
            dodge=dodge,
            hold_start=hold,
            reshare=reshare,
            crash_after=crash,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        """The faults the environment asks for, honoured only with the enabling variable."""
        env = os.environ if environ is None else environ
        text = env.get(FAULT_VAR, "")
        if not text:
            return cls()
        if env.get(ENABLE_VAR) != ENABLE_VALUE:
            return cls(ignored=text[:200])
        return cls.parse(text)

    # -- hooks the service calls ---------------------------------------------------------

    def item(
        self, scheme: Scheme, hash_name: str, digest: bytes, salt: bytes
    ) -> tuple[Scheme, str, bytes, bytes]:
        """The item the node really signs (a lie for ``other-message`` and ``replay-old``)."""
        if self.replay_old:
            return Scheme.PKCS1V15, "sha256", _OLD_DIGEST, b""
        if self.other_message:
            return scheme, hash_name, bytes([digest[0] ^ 1]) + digest[1:], salt
        return scheme, hash_name, digest, salt

    def shares(
        self, shares: list[ShareBytes], modulus: int, with_proofs: bool = False
    ) -> list[ShareBytes]:
        """The shares the node sends (altered for ``random-share``, ``bad-proof`` and a
        ``dodge`` liar's unproven answers)."""
        random = self.random_share or (bool(self.dodge) and not with_proofs)
        if not (random or self.bad_proof):
            return shares
        size = (modulus.bit_length() + 7) // 8
        out = []
        for value, c, z in shares:
            if random:
                value = (secrets.randbelow(modulus - 2) + 2).to_bytes(size, "big")
            if self.bad_proof and z:
                bumped = int.from_bytes(z, "big") + 1
                z = bumped.to_bytes((bumped.bit_length() + 7) // 8, "big")
            out.append((value, c, z))
        return out

    def index(self, index: int, n: int) -> int:
        """The index the node claims in its answer."""
        if not self.wrong_index:
            return index
        return index % n + 1 if n > 1 else index + 1

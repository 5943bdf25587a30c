"""Commit certificates prove their epoch, and nothing else does.

A certificate from a real run (one process, each site with its own key) verifies against
the epoch it starts from; every change an attacker could make — fewer or foreign
approvals, another plan, other holders, altered parameters, a missing, foreign,
duplicated or altered acknowledgement, a wrong acceptance share — is refused with a
typed error, as is checking it against another epoch.
"""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from ittc.errors import CertificateError
from ittc.lifecycle import ACK, Certificate, Member, Plan, SiteKey, approve, scheme_plan, state
from ittc.lifecycle.codec import (
    Acknowledgement,
    decode_acknowledgement,
    encode_acknowledgement,
)
from ittc.scheme.proofs import SignatureShare
from ittc.scheme.reshare import acceptance_share, assemble_share, verify_contributions
from ittc.scheme.reshare.local import deal_round
from tests.reshare_keys import every_subset_signs, generated_key, split_key

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]


@pytest.fixture(scope="module")
def sites() -> dict[str, SiteKey]:
    return {name: SiteKey.generate(name) for name in NAMES}


def make(kind: str, sites: dict[str, SiteKey], *, n_new: int = 7, k_new: int = 4):
    """A certificate of a real 5 -> n_new run, and what it was checked against."""
    key = generated_key() if kind == "generated" else split_key()
    params = key.dealt.params
    old_sites = {i: sites[NAMES[i - 1]].identity for i in range(1, 6)}
    members = [
        Member(j, sites[NAMES[j - 1]].identity, f"{NAMES[j - 1]}.example:7000", f"n{j}")
        for j in range(1, n_new + 1)
    ]
    plan = Plan.new(params, members, k_new, not_after=2_000_000_000)
    approvals = tuple(approve(sites[name], plan) for name in ("alpha", "charlie", "echo"))
    holders, attempt = (2, 3, 5), secrets.token_bytes(16)
    sp = scheme_plan(plan, params, holders, attempt)
    commitments, contributions, subs = deal_round(sp, key.shares)
    outcome = verify_contributions(sp, contributions, commitments)
    new = [assemble_share(outcome, j, subs[j].values()) for j in range(1, n_new + 1)]
    acks = tuple(
        state(
            sites[NAMES[j - 1]],
            ACK,
            sp.run_id,
            encode_acknowledgement(
                outcome.params,
                Acknowledgement(
                    sp.run_id,
                    outcome.transcript,
                    outcome.params.epoch_id_bytes,
                    acceptance_share(outcome, new[j - 1]),
                ),
            ),
        )
        for j in range(1, n_new + 1)
    )
    certificate = Certificate(plan, approvals, holders, attempt, outcome.params, acks)
    return key, certificate, params, old_sites, new


@pytest.mark.parametrize("kind", ["generated", "split"])
def test_a_certificate_of_a_real_run_verifies_and_round_trips(sites, kind: str) -> None:
    key, certificate, params, old_sites, new = make(kind, sites)
    transcript = certificate.verify(params, old_sites)
    assert len(transcript) == 32
    again = Certificate.from_json(certificate.to_json())
    assert again == certificate and again.digest == certificate.digest
    again.verify(params, old_sites)
    assert certificate.member_index(sites["golf"].identity) == 7
    assert certificate.member_index(SiteKey.generate("alpha").identity) is None
    assert certificate.sites()[6] == sites["foxtrot"].identity
    every_subset_signs(key, new, b"after the certificate", limit=6)


def test_every_alteration_is_refused(sites) -> None:
    _, good, params, old_sites, new = make("generated", sites)
    other_plan = dataclasses.replace(good.plan, k=5)
    stranger = SiteKey.generate("mallory")
    ack3 = decode_acknowledgement(good.params, 3, good.acks[2].body)
    wrong_share = Acknowledgement(
        ack3.run_id,
        ack3.transcript,
        ack3.epoch_id,
        SignatureShare(3, ack3.share.value * 4 % good.params.modulus, ack3.share.proof),
    )
    forged_ack = state(
        sites["charlie"], ACK, good.run_id, encode_acknowledgement(good.params, wrong_share)
    )
    altered = {
        "too few approvals": dataclasses.replace(good, approvals=good.approvals[:2]),
        "approvals of another plan": dataclasses.replace(
            good,
            approvals=tuple(approve(sites[s], other_plan) for s in ("alpha", "bravo", "delta")),
        ),
        "an approval by a stranger": dataclasses.replace(
            good, approvals=good.approvals[:2] + (approve(stranger, good.plan),)
        ),
        "another plan": dataclasses.replace(good, plan=other_plan),
        "other holders": dataclasses.replace(good, holders=(1, 3, 5)),
        "another attempt": dataclasses.replace(good, attempt=bytes(16)),
        "altered parameters": dataclasses.replace(
            good, params=dataclasses.replace(good.params, share_bits=good.params.share_bits + 1)
        ),
        "a missing acknowledgement": dataclasses.replace(good, acks=good.acks[:-1]),
        "a duplicated acknowledgement": dataclasses.replace(
            good, acks=good.acks[:-1] + (good.acks[0],)
        ),
        "acknowledgements out of order": dataclasses.replace(
            good, acks=(good.acks[1], good.acks[0], *good.acks[2:])
        ),
        "an altered acknowledgement": dataclasses.replace(
            good,
            acks=good.acks[:2]
            + (dataclasses.replace(good.acks[2], body=good.acks[2].body[:-1] + b"\x00"),)
            + good.acks[3:],
        ),
        "a wrong acceptance share, signed": dataclasses.replace(
            good, acks=good.acks[:2] + (forged_ack,) + good.acks[3:]
        ),
    }
    for what, certificate in altered.items():
        with pytest.raises(CertificateError):
            certificate.verify(params, old_sites)
        assert what
    # The right certificate, checked against another epoch or other sites.
    with pytest.raises(CertificateError):
        good.verify(good.params, good.sites())
    impostors = {i: SiteKey.generate(NAMES[i - 1]).identity for i in old_sites}
    with pytest.raises(CertificateError):
        good.verify(params, impostors)
    for text in ("", "{}", good.to_json().replace('"version": 1', '"version": 2'), "[1]"):
        with pytest.raises(CertificateError):
            Certificate.from_json(text)


def test_malformed_documents_from_the_wire_are_refused_with_typed_errors(sites) -> None:
    """A certificate (Commit, or a node's Status to a combiner), a plan (Prepare,
    ApproveRefresh), a complaint (RevealEphemeral) and public parameters: nested too deep
    for the JSON parser, or naming holders no epoch has, each is a typed error (they were a
    RecursionError and an OverflowError: a traceback and an unaudited call at the node)."""
    import json

    from ittc.errors import ParameterError
    from ittc.lifecycle.codec import Complaint
    from ittc.scheme.params import PublicParams

    good = make("split", sites, n_new=5, k_new=3)[1]
    for deep in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(CertificateError):
            Certificate.from_json(deep)
        for parse in (Plan.from_json, Complaint.from_body, PublicParams.from_json):
            with pytest.raises(ParameterError):
                parse(deep)
    for holders in ([-1, 2, 3], [2**64, 2, 3], [0, 2, 3]):
        doc = {**json.loads(good.to_json()), "holders": holders}
        with pytest.raises(CertificateError):
            Certificate.from_json(json.dumps(doc)).run_id  # noqa: B018

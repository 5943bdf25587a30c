"""Site keys, plans and approvals, signed and sealed messages (ittc.lifecycle), and a whole
reshare run carried by them, each site with its own key, the coordinator seeing only
statements and sealed bytes."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import secrets

import pytest

from ittc.errors import ApprovalError, EnvelopeError, ParameterError, ReshareError, Undecryptable
from ittc.lifecycle import (
    Approval,
    Member,
    Plan,
    SiteIdentity,
    SiteKey,
    approve,
    check_approvals,
    judge,
    open_sealed,
    reveal_ephemeral,
    run_id,
    scheme_plan,
    seal,
    state,
    verify_evidence,
)
from ittc.lifecycle.codec import (
    decode_contribution,
    decode_mask_commitments,
    encode_contribution,
    encode_mask_commitments,
)
from ittc.scheme.reshare import (
    Holder,
    PrivateValue,
    acceptance_share,
    assemble_share,
    check_acceptance,
    judge_sub_share_complaint,
    verify_contributions,
)
from tests.reshare_keys import every_subset_signs, split_key

RUN = bytes(range(32))
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def sites():
    return {
        name: SiteKey.generate(name)
        for name in ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    }


def members_of(sites, names):
    return [
        Member(j, sites[name].identity, f"{name}.example:7000", f"ittc-node-{j}")
        for j, name in enumerate(names, 1)
    ]


def current_of(sites, names):
    return {i: sites[name].identity for i, name in enumerate(names, 1)}


# -- site keys -----------------------------------------------------------------------------


def test_site_keys_keep_their_secrets_and_round_trip(sites):
    key = sites["alpha"]
    seeds = key.dangerously_export_seeds()
    assert len(seeds) == 64 and seeds.hex() not in repr(key) and seeds[:8].hex() not in str(key)
    for bad in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            bad(key)
    again = SiteKey.from_seeds("alpha", seeds)
    assert again.identity == key.identity
    assert SiteIdentity.from_dict(key.identity.to_dict()) == key.identity
    assert len(key.identity.fingerprint) == 64
    for bad_name in ["", "Alpha", "-x", "a" * 64, "a b", None]:
        with pytest.raises(ParameterError):
            SiteKey.generate(bad_name)
    with pytest.raises(ParameterError):
        SiteIdentity("alpha", b"\x00" * 31, bytes(32))
    with pytest.raises(ParameterError):
        SiteKey.from_seeds("alpha", seeds[:-1])


# -- statements ----------------------------------------------------------------------------


def test_statements_verify_and_any_change_is_refused(sites):
    alpha, bravo = sites["alpha"], sites["bravo"]
    said = state(alpha, "contribution", RUN, b"body")
    assert said.verify(alpha.identity) == b"body"
    for change in [
        dict(body=b"bodz"),
        dict(kind="ack"),
        dict(run_id=bytes(32)),
        dict(signature=bytes(64)),
        dict(signature=b"short"),
    ]:
        with pytest.raises(EnvelopeError) as err:
            dataclasses.replace(said, **change).verify(alpha.identity)
        assert err.value.site == "alpha"
    with pytest.raises(EnvelopeError):  # bravo's key does not make alpha's statement
        dataclasses.replace(said, sender="bravo").verify(bravo.identity)
    with pytest.raises(EnvelopeError):
        said.verify(bravo.identity)


# -- sealed values -------------------------------------------------------------------------


def test_sealed_values_open_only_for_their_recipient(sites):
    alpha, bravo, charlie = sites["alpha"], sites["bravo"], sites["charlie"]
    sealed = seal(alpha, bravo.identity, "sub-share", RUN, b"secret value")
    assert b"secret value" not in sealed.ciphertext
    opened = open_sealed(bravo, sealed, alpha.identity)
    assert opened.payload == b"secret value" and "secret" not in repr(opened)
    assert verify_evidence(opened.evidence, alpha.identity) == b"secret value"
    with pytest.raises(ParameterError):
        open_sealed(charlie, sealed, alpha.identity)
    # Same length whatever the value (fixed-width payloads stay fixed-width).
    assert len(seal(alpha, bravo.identity, "sub-share", RUN, b"x" * 12).ciphertext) == len(
        sealed.ciphertext
    )


def test_a_relay_that_alters_or_swaps_sealed_bytes_is_caught_and_no_site_is_blamed(sites):
    alpha, bravo = sites["alpha"], sites["bravo"]
    sealed = seal(alpha, bravo.identity, "mask", RUN, b"m" * 40)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    for forged in [
        dataclasses.replace(sealed, ciphertext=flipped),
        dataclasses.replace(sealed, nonce=bytes(24)),
        dataclasses.replace(sealed, kind="sub-share"),
        dataclasses.replace(sealed, run_id=bytes(32)),
    ]:
        with pytest.raises(EnvelopeError) as err:
            open_sealed(bravo, forged, alpha.identity)
        assert not isinstance(err.value, Undecryptable)  # not the sender's: drop it


def test_garbage_sealed_by_its_sender_is_judged_against_the_sender(sites):
    alpha, bravo = sites["alpha"], sites["bravo"]
    honest = seal(alpha, bravo.identity, "mask", RUN, b"m" * 40)
    # alpha signs (outside) a ciphertext that is not a box for bravo.
    garbage = dataclasses.replace(honest, ciphertext=secrets.token_bytes(len(honest.ciphertext)))
    garbage = dataclasses.replace(garbage, signature=alpha.sign(garbage.outer_bytes()))
    with pytest.raises(Undecryptable):
        open_sealed(bravo, garbage, alpha.identity)
    assert judge(garbage, reveal_ephemeral(alpha, garbage), alpha.identity, bravo.identity) == (
        "sender",
        None,
    )
    # Refusing to reveal, or revealing another key, convicts the sender too.
    assert judge(garbage, bytes(32), alpha.identity, bravo.identity)[0] == "sender"
    assert judge(garbage, b"", alpha.identity, bravo.identity)[0] == "sender"


def test_a_payload_signed_for_someone_else_is_judged_against_the_sender(sites):
    alpha, bravo, charlie = sites["alpha"], sites["bravo"], sites["charlie"]
    for_charlie = seal(alpha, charlie.identity, "mask", RUN, b"m" * 40)
    opened = open_sealed(charlie, for_charlie, alpha.identity)
    # alpha re-seals charlie's signed plaintext to bravo (a replayed inner signature).
    import nacl.public

    eph = nacl.public.PrivateKey.generate()
    box = nacl.public.Box(eph, nacl.public.PublicKey(bravo.identity.box_key))
    nonce = bytes(24)
    ct = bytes(box.encrypt(opened.payload + opened.evidence.signature, nonce).ciphertext)
    bad = dataclasses.replace(
        for_charlie, recipient="bravo", ephemeral=bytes(eph.public_key), nonce=nonce, ciphertext=ct
    )
    bad = dataclasses.replace(bad, signature=alpha.sign(bad.outer_bytes()))
    with pytest.raises(Undecryptable):
        open_sealed(bravo, bad, alpha.identity)
    assert judge(bad, bytes(eph), alpha.identity, bravo.identity) == ("sender", None)


def test_a_false_complaint_is_judged_against_the_recipient(sites):
    alpha, bravo = sites["alpha"], sites["bravo"]
    sealed = seal(alpha, bravo.identity, "sub-share", RUN, b"y" * 40)
    verdict, evidence = judge(
        sealed, reveal_ephemeral(alpha, sealed), alpha.identity, bravo.identity
    )
    assert verdict == "recipient" and evidence is not None and evidence.payload == b"y" * 40
    # One message's ephemeral key opens that message only.
    other = seal(alpha, bravo.identity, "mask", RUN, b"z" * 40)
    assert (
        judge(other, reveal_ephemeral(alpha, sealed), alpha.identity, bravo.identity)[0] == "sender"
    )
    with pytest.raises(ParameterError):
        reveal_ephemeral(bravo, sealed)


def test_revealed_evidence_cannot_be_moved_to_another_run_kind_or_recipient(sites):
    alpha, bravo = sites["alpha"], sites["bravo"]
    opened = open_sealed(bravo, seal(alpha, bravo.identity, "mask", RUN, b"m" * 40), alpha.identity)
    e = opened.evidence
    for change in [
        dict(run_id=bytes(32)),
        dict(kind="sub-share"),
        dict(recipient="charlie"),
        dict(payload=b"n" * 40),
    ]:
        with pytest.raises(EnvelopeError):
            verify_evidence(dataclasses.replace(e, **change), alpha.identity)


# -- plans and approvals -------------------------------------------------------------------


def test_plans_round_trip_and_every_field_changes_the_digest(sites):
    key = split_key()
    params = key.dealt.params
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    plan = Plan.new(params, members_of(sites, names), 4, not_after=NOW + 3600)
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.digest == plan.digest
    variants = [
        dataclasses.replace(plan, k=3),
        dataclasses.replace(plan, not_after=NOW + 1),
        dataclasses.replace(plan, nonce=bytes(16)),
        dataclasses.replace(plan, members=tuple(members_of(sites, names[:6]))),
        dataclasses.replace(plan, members=tuple(members_of(sites, names[::-1]))),
    ]
    assert len({v.digest for v in [plan, *variants]}) == len(variants) + 1
    with pytest.raises(ParameterError):
        dataclasses.replace(plan, old_epoch=1).check_against(params)


@pytest.mark.parametrize(
    "change",
    [
        "duplicate site",
        "k too large",
        "k of one",
        "index gap",
        "bad address",
        "bad key id",
    ],
)
def test_malformed_plans_are_refused(sites, change):
    key = split_key()
    params = key.dealt.params
    names = ["alpha", "bravo", "charlie"]
    members = members_of(sites, names)
    with pytest.raises(ParameterError):
        if change == "duplicate site":
            members[2] = dataclasses.replace(members[2], site=sites["alpha"].identity)
            Plan.new(params, members, 2, not_after=NOW)
        elif change == "k too large":
            Plan.new(params, members, 4, not_after=NOW)
        elif change == "k of one":
            Plan.new(params, members, 1, not_after=NOW)
        elif change == "index gap":
            members[1] = dataclasses.replace(members[1], index=5)
            Plan.new(params, members, 2, not_after=NOW)
        elif change == "bad address":
            members[0] = dataclasses.replace(members[0], address="a b")
            Plan.new(params, members, 2, not_after=NOW)
        else:
            dataclasses.replace(Plan.new(params, members, 2, not_after=NOW), key_id="XY")
    doc = Plan.new(params, members_of(sites, names), 2, not_after=NOW).to_dict()
    for broken in [
        {**doc, "version": 2},
        {**doc, "extra": 1},
        {**doc, "k": "2"},
        {**doc, "nonce": "zz"},
        {**doc, "members": "none"},
    ]:
        with pytest.raises(ParameterError):
            Plan.from_dict(broken)


def test_approvals_need_k_current_sites_on_this_very_plan(sites):
    key = split_key()
    params = key.dealt.params
    current = current_of(sites, ["alpha", "bravo", "charlie", "delta", "echo"])
    plan = Plan.new(
        params,
        members_of(sites, ["alpha", "bravo", "charlie", "delta", "echo"]),
        3,
        not_after=NOW + 60,
    )
    other = Plan.new(
        params,
        members_of(sites, ["alpha", "bravo", "charlie", "delta", "echo"]),
        3,
        not_after=NOW + 60,
    )
    good = [approve(sites[s], plan) for s in ("alpha", "charlie", "echo")]
    assert check_approvals(plan, good, current, 3, now=NOW) == ("alpha", "charlie", "echo")
    # Twice the same site counts once; a site outside the epoch and an approval of
    # another plan do not count, and are named.
    tries = [
        good[0],
        good[0],
        approve(sites["foxtrot"], plan),
        approve(sites["bravo"], other),
        good[1],
    ]
    with pytest.raises(ApprovalError) as err:
        check_approvals(plan, tries, current, 3, now=NOW)
    assert set(err.value.invalid) == {"foxtrot", "bravo"}
    forged = Approval("delta", good[2].signature)
    with pytest.raises(ApprovalError) as err:
        check_approvals(plan, good[:2] + [forged], current, 3, now=NOW)
    assert set(err.value.invalid) == {"delta"}
    with pytest.raises(ApprovalError, match="expired"):
        check_approvals(plan, good, current, 3, now=NOW + 61)
    assert Approval.from_dict(good[0].to_dict()) == good[0]


def test_run_ids_bind_the_plan_the_holders_and_the_attempt(sites):
    key = split_key()
    params = key.dealt.params
    plan = Plan.new(params, members_of(sites, ["alpha", "bravo", "charlie"]), 2, not_after=NOW)
    a, b = bytes(16), b"\x01" * 16
    ids = {
        run_id(plan, (1, 2, 3), a),
        run_id(plan, (1, 2, 4), a),
        run_id(plan, (1, 2, 3), b),
        run_id(dataclasses.replace(plan, k=3), (1, 2, 3), a),
    }
    assert len(ids) == 4
    sp = scheme_plan(plan, params, (1, 2, 3), a)
    assert sp.run_id == run_id(plan, (1, 2, 3), a) and (sp.n, sp.k) == (3, 2)
    with pytest.raises(ParameterError):
        run_id(plan, (1, 2, 3), b"short")


# -- a whole run through envelopes ---------------------------------------------------------


def test_a_whole_run_through_signed_and_sealed_messages(sites):
    """5 sites -> 7 sites (k 3 -> 4). The coordinator relays statements and sealed values
    only; every site checks everything itself; the new shares sign like the whole key."""
    key = split_key()
    params = key.dealt.params
    old_names = ["alpha", "bravo", "charlie", "delta", "echo"]
    new_names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    current = current_of(sites, old_names)
    plan = Plan.new(params, members_of(sites, new_names), 4, not_after=NOW + 60)
    approvals = [approve(sites[s], plan) for s in ("bravo", "delta", "echo")]
    holders = (1, 3, 4)
    attempt = secrets.token_bytes(16)
    sp = scheme_plan(plan, params, holders, attempt)

    # Each holder site, on its own: approvals first, then round 1.
    engines, relay1 = {}, []
    for i in holders:
        check_approvals(plan, approvals, current, params.k, now=NOW)
        site = sites[old_names[i - 1]]
        engines[i] = Holder(sp, key.shares[i - 1])
        commitments, masks = engines[i].send_masks()
        relay1.append(
            state(site, "mask-commitments", sp.run_id, encode_mask_commitments(sp, i, commitments))
        )
        for peer, value in masks.items():
            relay1.append(seal(site, current[peer], "mask", sp.run_id, value.to_bytes(sp)))

    # The coordinator relays round 1; each holder checks and opens what is for it.
    public_commitments = []
    for message in relay1:
        if hasattr(message, "body"):
            sender = [i for i, s in current.items() if s.name == message.sender][0]
            public_commitments += decode_mask_commitments(
                sp, sender, message.verify(current[sender])
            )
    relay2 = []
    for i in holders:
        site = sites[old_names[i - 1]]
        for message in relay1:
            if getattr(message, "recipient", None) == site.name:
                sender = [h for h, s in current.items() if s.name == message.sender][0]
                opened = open_sealed(site, message, current[sender])
                value = PrivateValue.from_bytes(sp, "mask", sender, i, opened.payload)
                commitment = [
                    c for c in public_commitments if (c.sender, c.recipient) == (sender, i)
                ][0]
                engines[i].receive_mask(commitment, value)
        contribution, subs = engines[i].contribute()
        relay2.append(state(site, "contribution", sp.run_id, encode_contribution(sp, contribution)))
        for j, value in subs.items():
            relay2.append(
                seal(site, plan.member(j).site, "sub-share", sp.run_id, value.to_bytes(sp))
            )

    # Each new member, on its own: the public checks, then its own sealed sub-shares.
    contributions = []
    for message in relay2:
        if hasattr(message, "body"):
            sender = [i for i, s in current.items() if s.name == message.sender][0]
            contributions.append(decode_contribution(sp, sender, message.verify(current[sender])))
    new = []
    for member in plan.members:
        site = sites[member.site.name]
        outcome = verify_contributions(sp, contributions, public_commitments)
        mine = []
        for message in relay2:
            if getattr(message, "recipient", None) == site.name:
                sender = [h for h, s in current.items() if s.name == message.sender][0]
                opened = open_sealed(site, message, current[sender])
                mine.append(
                    PrivateValue.from_bytes(sp, "sub-share", sender, member.index, opened.payload)
                )
        new.append(assemble_share(outcome, member.index, mine))
    check_acceptance(outcome, [acceptance_share(outcome, s) for s in new])
    assert outcome.params.n == 7 and outcome.params.k == 4
    every_subset_signs(key, new, b"through envelopes", limit=12)


def test_a_bad_sub_share_complaint_through_envelopes_convicts_the_holder(sites):
    """The member reveals the holder-signed sub-share; anyone verifies the signature and
    then judges the value with the run's public commitments."""
    key = split_key()
    params = key.dealt.params
    names = ["alpha", "bravo", "charlie", "delta", "echo"]
    current = current_of(sites, names)
    plan = Plan.new(params, members_of(sites, names), 3, not_after=NOW)
    sp = scheme_plan(plan, params, (1, 2, 3), bytes(16))
    engines = {i: Holder(sp, key.shares[i - 1]) for i in (1, 2, 3)}
    commitments, masks = [], {}
    for i, h in engines.items():
        made, private = h.send_masks()
        commitments += made
        masks.update({(i, r): v for r, v in private.items()})
    for (s, r), v in masks.items():
        engines[r].receive_mask([c for c in commitments if (c.sender, c.recipient) == (s, r)][0], v)
    contributions, subs = [], {}
    for i, h in engines.items():
        c, s = h.contribute()
        contributions.append(c)
        subs[i] = s
    outcome = verify_contributions(sp, contributions, commitments)
    # Holder 2 (bravo) seals a wrong sub-share for member 4 (delta), signed by itself.
    y = subs[2][4].dangerously_export() + 1
    bad = PrivateValue("sub-share", 2, 4, y)
    sealed = seal(sites["bravo"], current[4], "sub-share", sp.run_id, bad.to_bytes(sp))
    opened = open_sealed(sites["delta"], sealed, current[2])
    received = PrivateValue.from_bytes(sp, "sub-share", 2, 4, opened.payload)
    with pytest.raises(ReshareError) as err:
        assemble_share(outcome, 4, [subs[1][4], received, subs[3][4]])
    assert err.value.holders == (2,)
    # Anyone: the evidence is bravo's, and the value fails its commitments.
    payload = verify_evidence(opened.evidence, current[2])
    revealed = PrivateValue.from_bytes(sp, "sub-share", 2, 4, payload)
    verdict = judge_sub_share_complaint(outcome, revealed)
    assert (verdict.holders, verdict.members) == ((2,), ())


def test_malformed_statement_bodies_convict_their_holder(sites):
    key = split_key()
    plan = Plan.new(
        key.dealt.params, members_of(sites, ["alpha", "bravo", "charlie"]), 2, not_after=NOW
    )
    sp = scheme_plan(plan, key.dealt.params, (1, 2, 3), bytes(16))
    h = Holder(sp, key.shares[0])
    made, _ = h.send_masks()
    body = encode_mask_commitments(sp, 1, made)
    assert decode_mask_commitments(sp, 1, body) == made
    for bad in [body[:-1], body + b"\x00", b"", (2).to_bytes(2, "big") + body[2:]]:
        with pytest.raises(ReshareError) as err:
            decode_mask_commitments(sp, 1, bad)
        assert err.value.holders == (1,)


def test_contribution_bodies_round_trip_and_malformed_ones_convict_their_holder(sites):
    key = split_key()
    plan = Plan.new(
        key.dealt.params, members_of(sites, ["alpha", "bravo", "charlie"]), 2, not_after=NOW
    )
    sp = scheme_plan(plan, key.dealt.params, (1, 2, 3), bytes(16))
    engines = {i: Holder(sp, key.shares[i - 1]) for i in (1, 2, 3)}
    commitments, masks = [], {}
    for i, h in engines.items():
        made, private = h.send_masks()
        commitments += made
        masks.update({(i, r): v for r, v in private.items()})
    for (s, r), v in masks.items():
        engines[r].receive_mask([c for c in commitments if (c.sender, c.recipient) == (s, r)][0], v)
    for i, h in engines.items():
        c, _ = h.contribute()
        body = encode_contribution(sp, c)
        assert decode_contribution(sp, i, body) == c
        negative_zero = body[:2] + b"\x01" + bytes(len(body) - 3)
        for bad in [body[:-1], body + b"\x00", body[:2] + b"\x02" + body[3:], negative_zero]:
            with pytest.raises(ReshareError) as err:
                decode_contribution(sp, i, bad)
            assert err.value.holders == (i,)
        with pytest.raises(ReshareError):
            decode_contribution(sp, i % 3 + 1, body)  # another holder's signed body

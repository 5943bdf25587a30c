"""The key/epoch split of the public parameters: what names the key, what names an epoch,
and reading documents written before epochs existed."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from ittc.errors import ParameterError
from ittc.scheme import dealer
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams


@pytest.fixture(scope="module")
def fresh():
    """A key made by this version (format 2, no legacy id): 512-bit, 3 of 5."""
    return dealer.generate(512, n=5, k=3, insecure_allow_small_modulus_for_tests=True)


def _next_epoch(params: PublicParams, **changes) -> PublicParams:
    """The same key at a later epoch (values need only be well formed here)."""
    base = dict(
        sharing="integer",
        kind=params.kind,
        epoch=params.epoch + 1,
        share_bits=params.bits + 300,
        legacy_key_id=params.legacy_key_id,
    )
    base.update(changes)
    n = base.get("n", params.n)
    base.setdefault(
        "verification_keys", tuple(pow(params.v, i + 7, params.modulus) for i in range(n))
    )
    return dataclasses.replace(params, **base)


def test_key_id_names_only_what_never_changes(fresh):
    p = fresh.params
    assert p.legacy_key_id is None and p.kind == "generated" and p.epoch == 0
    later = [
        _next_epoch(p),
        _next_epoch(p, n=7, k=4),
        _next_epoch(p, epoch=99, k=2),
        _next_epoch(p, secret_multiplier=math.factorial(5), secret_bits=p.bits + 12),
    ]
    assert {q.key_id for q in later} == {p.key_id}
    ids = {q.epoch_id for q in [p, *later]}
    assert len(ids) == len(later) + 1
    # ...and the key id does change with N, e, v or the kind.
    other_v = dataclasses.replace(p, v=pow(p.v, 3, p.modulus))
    other_e = dataclasses.replace(p, e=65539)
    split = _next_epoch(p, kind="split")
    assert len({p.key_id, other_v.key_id, other_e.key_id, split.key_id}) == 4


@pytest.mark.parametrize(
    "field,value",
    [
        ("k", 2),
        ("share_bits", 900),
        ("secret_bits", 600),
        ("secret_multiplier", 120),
        ("epoch", 2),
        ("n", 6),
    ],
)
def test_every_epoch_value_changes_the_epoch_id(fresh, field, value):
    p = _next_epoch(fresh.params)
    changed = _next_epoch(fresh.params, **{field: value})
    assert changed.key_id == p.key_id and changed.epoch_id != p.epoch_id


def test_round_trip_and_tamper_at_a_later_epoch(fresh):
    p = _next_epoch(fresh.params, n=7, k=4, secret_multiplier=120, secret_bits=530)
    again = PublicParams.from_json(p.to_json())
    assert again == p and again.epoch_id == p.epoch_id and again.proofs_sound
    doc = json.loads(p.to_json())
    assert doc["version"] == 2 and doc["epoch"] == 1 and doc["legacy_key_id"] is False
    for field, value in [
        ("k", 3),
        ("epoch", 2),
        ("secret_multiplier", 1),
        ("verification_keys", doc["verification_keys"][::-1]),
    ]:
        with pytest.raises(ParameterError, match="epoch id does not match"):
            PublicParams.from_dict({**doc, field: value})
    with pytest.raises(ParameterError, match="key id does not match"):
        PublicParams.from_dict({**doc, "key_id": "ab" * 32})
    with pytest.raises(ParameterError, match="key id does not match"):
        PublicParams.from_dict({**doc, "v": format(pow(p.v, 3, p.modulus), "x")})


def test_combine_exponent_and_proofs_follow_sharing_and_kind(fresh):
    p = fresh.params
    assert p.combine_exponent == 4 * 120**2
    q = _next_epoch(p, n=7, k=4, secret_multiplier=120)
    assert q.combine_exponent == 4 * math.factorial(7) ** 3 * 120
    assert q.proofs_sound  # safe primes stay safe when the shares become integers
    assert not _next_epoch(p, kind="split").proofs_sound


@pytest.mark.parametrize(
    "changes",
    [
        dict(sharing="shoup"),  # Z_m shares only at epoch 0
        dict(kind=None),  # the kind must be stated after epoch 0
        dict(secret_multiplier=0),
        dict(secret_multiplier=65537),  # must be coprime to e
        dict(secret_multiplier=1 << 301),
        dict(secret_bits=100),
        dict(secret_bits=10_000),
        dict(epoch=-1),
        dict(epoch=1 << 63),
        dict(legacy_key_id="AB" * 32),
    ],
)
def test_bad_epoch_values_are_refused(fresh, changes):
    with pytest.raises(ParameterError):
        _next_epoch(fresh.params, **changes)


def test_shoup_sharing_refuses_a_multiplier(fresh):
    with pytest.raises(ParameterError):
        dataclasses.replace(fresh.params, secret_multiplier=7)


def test_version_1_document_keeps_its_key_id(vkey):
    """Keys made before epochs existed: same key id, so their share files still open."""
    doc = vkey.doc["params"]
    assert doc["version"] == 1
    p = PublicParams.from_dict(doc)
    assert p.key_id == doc["key_id"] == p.legacy_key_id
    assert p.epoch == 0 and p.kind == "generated" and p.sharing == "shoup"
    written = json.loads(p.to_json())
    assert written["version"] == 2 and written["legacy_key_id"] is True
    assert PublicParams.from_dict(written) == p
    # At epoch 0 the old id is still checked against every value it covered...
    tampered = {**doc, "k": 2}
    with pytest.raises(ParameterError, match="key id does not match"):
        PublicParams.from_dict(tampered)
    with pytest.raises(ParameterError, match="key id does not match"):
        PublicParams.from_dict({**written, "k": 2})
    with pytest.raises(ParameterError):
        PublicParams.from_dict({**doc, "key_id": doc["key_id"].upper()})
    # ...and later epochs carry it unchanged.
    later = _next_epoch(p, n=7, k=4)
    assert later.key_id == doc["key_id"] and later.epoch_id != p.epoch_id
    assert PublicParams.from_json(later.to_json()) == later


def test_shares_of_different_epochs_never_compare_equal(fresh):
    p = fresh.params
    secret = fresh.shares[0].dangerously_export_secret()
    later = _next_epoch(p)
    assert KeyShare(p, 1, secret) == fresh.shares[0]
    assert KeyShare(later, 1, secret) != fresh.shares[0]

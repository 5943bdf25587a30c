"""Hostile requests straight to a node, replays against an injected clock, and a fuzzer.

Four parts:

1. **Hand-made hostile requests**, as raw bytes through a generic gRPC method (no
   protobuf on our side: garbage, cut-short and oversized messages, enum values no
   client library would send, a 10 000-item batch, int64 timestamps...). Each one is
   refused with the status the operator guide names, is audited as refused when the
   node's code saw it at all, produces no share, and leaves the node SERVING and
   signing correctly.
2. **Replay and freshness with time as a parameter**: :func:`ittc_node.daemon.serve`
   in this process with a :class:`FakeClock`. Exactly what ``replay.py`` promises: an
   id accepted at ``t`` is refused up to and including ``t + 2·window``, which outlives
   every fresh copy of the request.
3. **In-process fuzzing** of the node's pure request checks
   (:func:`ittc_node.service.validate_sign_request` and :func:`parse_message`) against a
   model written from the operator guide's refusal table, with an RSA oracle for every
   accepted item: the value the node would exponentiate is a standard RFC 8017 encoding
   of exactly the digest asked for. Time-bounded: ``ITTC_FUZZ_SECONDS`` (default 12).
4. **Live fuzzing** of a real node process with the same generators and model, checking
   every answer, every audit line and every share. ``ITTC_FUZZ_LIVE_SECONDS`` (default 6).

Both fuzzers print how many inputs they tried (``pytest -s``) and write it to
``fuzz-*.txt`` in the test's tmp dir. Already in tests/test_node.py (not repeated): one
refusal per validation rule with a well-formed message, the exact freshness edges, a
reused id, the replay memory ending after ``2·window``.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import math
import os
import pathlib
import string
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gmpy2
import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ittc_node import compute as compute_mod
from ittc_node.audit import verify_audit_log
from ittc_node.replay import ReplayCache
from ittc_node.service import Refusal, parse_message, validate_sign_request

from ittc import storage
from ittc.config import Limits
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.wire.v1 import signer_pb2 as pb
from ittc.wire.v1 import signer_pb2_grpc
from tests.cluster import (
    CLIENT,
    EmbeddedNode,
    FakeClock,
    LocalCluster,
    issue_client,
    make_cluster,
    pkcs1_item,
    pss_item,
    raw_method,
    sign_request,
    site_passphrase,
)

TIMEOUT = 20.0
Code = grpc.StatusCode
ID_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
HASH_SIZES = {pb.HASH_SHA256: 32, pb.HASH_SHA384: 48, pb.HASH_SHA512: 64}
HASH_NAMES = {pb.HASH_SHA256: "sha256", pb.HASH_SHA384: "sha384", pb.HASH_SHA512: "sha512"}
CRYPTO_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
DIGEST_INFO_LEN = 19  # the DER DigestInfo prefix of SHA-256/384/512 (RFC 8017 section 9.2)


def fuzz_seconds(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    assert value > 0, f"{name} must be positive"
    return value


# -- the node under attack -----------------------------------------------------------------


@dataclass
class Target:
    cluster: LocalCluster
    share: KeyShare
    #: Where node 1's audit log ended when we last looked.
    offset: int = 0

    @property
    def params(self) -> PublicParams:
        return self.cluster.params

    def new_audit_records(self) -> list[dict[str, Any]]:
        """Audit lines node 1 wrote since the last call."""
        data = self.cluster.audit_log(1).read_bytes()
        new, self.offset = data[self.offset :], len(data)
        assert new == b"" or new.endswith(b"\n")
        return [json.loads(line) for line in new.splitlines()]

    def expected_share(self, item: pb.SignItem) -> bytes:
        return self.share.signature_share(representative(self.params, item)).value.to_bytes(
            self.params.size_bytes, "big"
        )

    def assert_healthy_and_signing(self) -> None:
        """SERVING, and a good request gets the right share (and one signed audit line)."""
        assert self.cluster.health(1, timeout=5) == "SERVING"
        self.new_audit_records()
        item = pss_item(b"after the attack", "sha384")
        response = self.cluster.stub(1).Sign(sign_request(self.params, [item]), timeout=TIMEOUT)
        assert [s.value for s in response.shares] == [self.expected_share(item)]
        assert [r["outcome"] for r in self.new_audit_records()] == ["signed"]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = make_cluster(tmp_path_factory.mktemp("hostile"))
    with LocalCluster(root) as cluster:
        cluster.start([1], timeout=120)
        config = cluster.config(1)
        passphrase = site_passphrase(root, 1)
        share = storage.read_share_file(config.share_file, cluster.params, 1, passphrase)
        t = Target(cluster, share)
        t.new_audit_records()
        yield t


def representative(params: PublicParams, item: pb.SignItem) -> int:
    scheme = Scheme.PKCS1V15 if item.padding == pb.PADDING_PKCS1V15 else Scheme.PSS
    return encode(scheme, HASH_NAMES[item.hash], item.digest, params.bits, item.salt)


# -- the protobuf wire format, by hand ---------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 go on the wire as 10-byte two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def wire_item(padding: int, hash_: int, digest: bytes, salt: bytes = b"") -> bytes:
    return (
        field(1, padding) + field(2, hash_) + field(3, digest) + (field(4, salt) if salt else b"")
    )


def wire_request(
    params: PublicParams,
    items: list[bytes],
    *,
    request_id: bytes | None = None,
    timestamp_ms: int | None = None,
    key_id: bytes | None = None,
) -> bytes:
    rid = request_id if request_id is not None else os.urandom(12).hex().encode()
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    kid = key_id if key_id is not None else params.key_id.encode()
    epoch = (field(6, params.epoch) if params.epoch else b"") + field(7, params.epoch_id.encode())
    return (
        field(1, rid)
        + field(2, ts)
        + field(3, kid)
        + b"".join(field(5, item) for item in items)
        + epoch
    )


def good_item() -> bytes:
    return wire_item(pb.PADDING_PKCS1V15, pb.HASH_SHA256, hashlib.sha256(b"hi").digest())


# -- 1. hand-made hostile requests -------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    method: str
    make: Callable[[PublicParams], bytes]
    code: grpc.StatusCode
    words: str
    #: False when gRPC refuses before the node's code runs (so there is nothing to audit).
    audited: bool = True


def _ten_thousand_items(p: PublicParams) -> bytes:
    return wire_request(p, [good_item()] * 10_000)


HOSTILE: dict[str, Hostile] = {
    "random garbage": Hostile(
        "Sign",
        lambda p: b"\xff" * 7 + os.urandom(57),
        Code.INVALID_ARGUMENT,
        "not a valid ittc.v1.SignRequest message (64 bytes)",
    ),
    "a good request cut short": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()])[:-7],
        Code.INVALID_ARGUMENT,
        "not a valid ittc.v1.SignRequest",
    ),
    "request_id that is not UTF-8": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], request_id=b"\xff\xfe" * 10),
        Code.INVALID_ARGUMENT,
        "not a valid ittc.v1.SignRequest",
    ),
    "unknown groups nested 5000 deep": Hostile(
        "Sign", lambda p: b"\x33" * 5000, Code.INVALID_ARGUMENT, "not a valid ittc.v1.SignRequest"
    ),
    "an empty message": Hostile("Sign", lambda p: b"", Code.INVALID_ARGUMENT, "request_id"),
    "a field with the wrong wire type only": Hostile(
        "Sign", lambda p: field(2, b"not a varint"), Code.INVALID_ARGUMENT, "request_id"
    ),
    "padding -1 on the wire": Hostile(
        "Sign",
        lambda p: wire_request(p, [wire_item(-1, pb.HASH_SHA256, b"d" * 32)]),
        Code.INVALID_ARGUMENT,
        "items[0]: unknown padding -1",
    ),
    "padding 7 on the wire": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item(), wire_item(7, pb.HASH_SHA256, b"d" * 32)]),
        Code.INVALID_ARGUMENT,
        "items[1]: unknown padding 7",
    ),
    "hash 7 on the wire": Hostile(
        "Sign",
        lambda p: wire_request(p, [wire_item(pb.PADDING_PSS, 7, b"d" * 32)]),
        Code.INVALID_ARGUMENT,
        "items[0]: unknown hash 7",
    ),
    "hash -1 on the wire": Hostile(
        "Sign",
        lambda p: wire_request(p, [wire_item(pb.PADDING_PKCS1V15, -1, b"d" * 32)]),
        Code.INVALID_ARGUMENT,
        "items[0]: unknown hash -1",
    ),
    "hash 2^31-1 on the wire": Hostile(
        "Sign",
        lambda p: wire_request(p, [wire_item(pb.PADDING_PKCS1V15, 2**31 - 1, b"d" * 32)]),
        Code.INVALID_ARGUMENT,
        "items[0]: unknown hash 2147483647",
    ),
    "a batch of 10 000 items": Hostile(
        "Sign", _ten_thousand_items, Code.INVALID_ARGUMENT, "a request holds 1..64 items, not 10000"
    ),
    "a 900 kB digest": Hostile(
        "Sign",
        lambda p: wire_request(p, [wire_item(1, 1, b"\x01" * 900_000)]),
        Code.INVALID_ARGUMENT,
        "items[0]: a sha256 digest is 32 bytes, not 900000",
    ),
    "timestamp -2^63": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], timestamp_ms=-(2**63)),
        Code.FAILED_PRECONDITION,
        "stale request",
    ),
    "timestamp 2^63-1": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], timestamp_ms=2**63 - 1),
        Code.FAILED_PRECONDITION,
        "request from the future",
    ),
    "request_id with a newline and a quote": Hostile(
        "Sign",
        lambda p: wire_request(
            p, [good_item()], request_id=b'abcdefghijklmnop"\n{"outcome":"signed"}'
        ),
        Code.INVALID_ARGUMENT,
        "request_id",
    ),
    "request_id with a NUL": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], request_id=b"abcdefgh\x00ijklmnop"),
        Code.INVALID_ARGUMENT,
        "request_id",
    ),
    "request_id of 17 non-ASCII letters": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], request_id="é".encode() * 17),
        Code.INVALID_ARGUMENT,
        "request_id",
    ),
    "key_id of 100 000 characters": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], key_id=b"k" * 100_000),
        Code.NOT_FOUND,
        "unknown key id",
    ),
    "key_id in capitals": Hostile(
        "Sign",
        lambda p: wire_request(p, [good_item()], key_id=p.key_id.upper().encode()),
        Code.NOT_FOUND,
        "unknown key id",
    ),
    "GetInfo with garbage": Hostile(
        "GetInfo",
        lambda p: b"\xff\xff\xff",
        Code.INVALID_ARGUMENT,
        "not a valid ittc.v1.GetInfoRequest message (3 bytes)",
    ),
    "a message over the size limit": Hostile(
        "Sign",
        lambda p: os.urandom((1 << 20) + 1),
        Code.RESOURCE_EXHAUSTED,
        "larger than max",
        audited=False,
    ),
    "a method that does not exist": Hostile(
        "Decrypt", lambda p: wire_request(p, [good_item()]), Code.UNIMPLEMENTED, "", audited=False
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.network
def test_hostile_request(target: Target, case: str) -> None:
    hostile = HOSTILE[case]
    data = hostile.make(target.params)
    target.new_audit_records()
    call = raw_method(target.cluster.channel(1), hostile.method)
    with pytest.raises(grpc.RpcError) as info:
        answer = call(data, timeout=TIMEOUT)
        # Never reached on a refusal; if it is, the answer must hold no share at all.
        assert not pb.SignResponse.FromString(answer).shares
    error = info.value
    assert error.code() == hostile.code, error.details()
    assert hostile.words in (error.details() or "")
    records = target.new_audit_records()
    if hostile.audited:
        assert len(records) == 1
        record = records[0]
        assert (record["method"], record["outcome"], record["client"]) == (
            hostile.method,
            "refused",
            "ittc-client",
        )
        assert record["reason"] == error.details()
        assert len(json.dumps(record)) < 200_000  # caller's fields are cut, not copied
    else:
        assert records == []  # refused by gRPC itself: the node's code never saw it
    target.assert_healthy_and_signing()


@pytest.mark.network
def test_hostile_audit_records_are_bounded_and_chained(target: Target) -> None:
    """The refusals above left a log that still verifies, one line per request, with the
    caller's strings cut to size (no line injection through a request_id)."""
    path = target.cluster.audit_log(1)
    call = raw_method(target.cluster.channel(1), "Sign")
    for hostile in (
        "request_id with a newline and a quote",
        "a batch of 10 000 items",
        "key_id of 100 000 characters",
        "random garbage",
    ):
        with pytest.raises(grpc.RpcError):
            call(HOSTILE[hostile].make(target.params), timeout=TIMEOUT)
    lines = path.read_bytes().splitlines()
    assert verify_audit_log(path) == len(lines)
    records = [json.loads(line) for line in lines[-4:]]
    assert [r["outcome"] for r in records] == ["refused"] * 4
    assert records[0]["request_id"].endswith('"\n{"outcome":"signed"}')
    assert (len(records[1]["items"]), records[1]["items_total"]) == (64, 10_000)
    assert len(records[2]["key_id"]) == 128
    assert records[3]["request_bytes"] == 64 and "request_id" not in records[3]
    assert all(b"\n" not in line for line in lines)


@pytest.mark.network
def test_unknown_fields_change_nothing(target: Target) -> None:
    """Control: a good request with unknown fields appended is served exactly as without
    them (forward compatibility), and the extra bytes cannot smuggle in another item."""
    p = target.params
    digest = hashlib.sha256(b"plain").digest()
    item = wire_item(pb.PADDING_PKCS1V15, pb.HASH_SHA256, digest)
    extra = field(99, b"\x00" * 100) + field(20, 12345) + field(15, item)
    target.new_audit_records()
    answer = raw_method(target.cluster.channel(1), "Sign")(
        wire_request(p, [item]) + extra, timeout=TIMEOUT
    )
    response = pb.SignResponse.FromString(answer)
    expected = target.expected_share(pb.SignItem(padding=1, hash=1, digest=digest))
    assert [s.value for s in response.shares] == [expected]
    assert [r["outcome"] for r in target.new_audit_records()] == ["signed"]


# -- callers that are not allowed: refused unparsed, audited within a rate ---------------


def empty_items(p: PublicParams, size: int) -> bytes:
    """A request of ``size`` bytes at most: a header and empty items (two bytes each)."""
    header = wire_request(p, [])
    return header + field(5, b"") * ((size - len(header)) // 2)


@pytest.mark.network
def test_a_caller_not_allowed_is_refused_unparsed_and_rate_limited(
    target: Target, embedded: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder of a cluster-CA certificate whose name is not allowed, sending 1 MB of
    empty items (which used to cost a second of the node's event loop each): the node
    never parses its messages, records each by size and hash, writes one line each only
    up to its identity's rate and counts the rest into a summary line; every refusal is
    accounted for, and an allowed client's requests each keep their own line."""
    from ittc_node import service as service_mod
    from ittc_node.refusals import RefusalLimiter

    parsed: list[int] = []
    real_parse = service_mod.parse_message

    def counting_parse(message_type: Any, data: bytes) -> Any:
        parsed.append(len(data))
        return real_parse(message_type, data)

    monkeypatch.setattr(service_mod, "parse_message", counting_parse)
    clock = FakeClock()
    node = embedded(clock)
    burst = RefusalLimiter().burst
    cert, key = issue_client(target.cluster.root, "mallory", tmp_path)
    channel = target.cluster.channel_at(node.config.listen, "ittc-node-3", cert, key)
    flood = empty_items(target.params, 1_000_000)
    sent = {"Sign": 0, "GetInfo": 0}

    def refused(method: str, data: bytes) -> None:
        with pytest.raises(grpc.RpcError) as info:
            raw_method(channel, method)(data, timeout=TIMEOUT)
        assert info.value.code() == Code.PERMISSION_DENIED
        assert "'mallory' is not allowed" in (info.value.details() or "")
        sent[method] += 1

    for n in range(burst + 15):
        refused("Sign", flood)
        if n % 5 == 0:  # an allowed client keeps being served, one line per request
            assert (
                outcome(
                    node,
                    sign_request(target.params, [pkcs1_item(b"%d" % n)], timestamp_ms=clock.ms),
                )
                == Code.OK
            )
    refused("GetInfo", b"")
    clock.advance(3)  # three more refusals may have lines of their own, then counted again
    for _ in range(5):
        refused("Sign", flood)
    assert all(size < 1000 for size in parsed)  # only the allowed client's requests
    assert len(parsed) == 5
    node.close()

    records = [json.loads(line) for line in node.config.audit_log.read_text().splitlines()]
    own = [r for r in records if r.get("client") == "mallory" and r["type"] == "request"]
    summaries = [r for r in records if r.get("client") == "mallory" and r["type"] == "refusals"]
    assert len(own) == burst + 3
    digest = hashlib.sha256(flood).hexdigest()
    for line in own:
        assert (line["method"], line["outcome"], line["request_bytes"], line["request_sha256"]) == (
            "Sign",
            "refused",
            len(flood),
            digest,
        )
        assert "request_id" not in line and "items" not in line
    counted = sum(r["count"] for r in summaries)
    assert len(own) + counted == sum(sent.values())  # every refusal accounted for
    assert sum(r["methods"].get("Sign", 0) for r in summaries) + len(own) == sent["Sign"]
    assert sum(r["methods"].get("GetInfo", 0) for r in summaries) == sent["GetInfo"]
    assert sum(r["request_bytes"] for r in summaries) == (sent["Sign"] - len(own)) * len(flood)
    assert all(r["peers"] and r["outcome"] == "refused" for r in summaries)
    assert records[-1]["type"] == "stop" and records.index(summaries[-1]) < len(records) - 1
    assert [r["outcome"] for r in records if r.get("client") == CLIENT] == ["signed"] * 5
    assert verify_audit_log(node.config.audit_log) == len(records)


# -- 2. replay and freshness with an injected clock --------------------------------------


@pytest.fixture
def embedded(target: Target, tmp_path: pathlib.Path) -> Iterator[Callable[..., EmbeddedNode]]:
    started: list[EmbeddedNode] = []

    def start(clock: FakeClock, faults: Any = None, **limits: Any) -> EmbeddedNode:
        node = EmbeddedNode.start(
            target.cluster,
            3,
            f"embedded-{tmp_path.name}-{len(started)}",
            clock=clock,
            faults=faults,
            **limits,
        )
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


def outcome(node: EmbeddedNode, request: pb.SignRequest) -> grpc.StatusCode:
    try:
        response = node.stub.Sign(request, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    assert len(response.shares) == len(request.items)
    return Code.OK


def node_audit(node: EmbeddedNode, request_id: str) -> list[str]:
    records = [json.loads(line) for line in node.config.audit_log.read_text().splitlines()]
    return [r["outcome"] for r in records if r.get("request_id") == request_id]


@pytest.mark.network
def test_a_used_id_is_refused_whatever_else_changes(target: Target, embedded: Any) -> None:
    clock = FakeClock()
    node = embedded(clock)
    p = target.params
    rid = "replayed-id-0123456789"
    first = sign_request(p, [pkcs1_item(b"original")], request_id=rid, timestamp_ms=clock.ms)
    assert outcome(node, first) == Code.OK
    clock.advance(30)
    variants = [
        first,  # a copy
        sign_request(
            p, [pkcs1_item(b"original")], request_id=rid, timestamp_ms=clock.ms
        ),  # re-dated
        sign_request(
            p, [pss_item(b"something else")], request_id=rid, timestamp_ms=clock.ms
        ),  # new content
        sign_request(
            p, [pkcs1_item(b"original")], request_id=rid, timestamp_ms=clock.ms, with_proofs=True
        ),  # with proofs
    ]
    assert [outcome(node, v) for v in variants] == [Code.ALREADY_EXISTS] * 4
    assert node_audit(node, rid) == ["signed"] + ["refused"] * 4


@pytest.mark.network
def test_an_id_is_spent_only_once_the_request_is_valid(
    target: Target, embedded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As documented: a refusal before validation ends leaves the id unused; a request
    that passed validation spends its id even if signing then fails."""
    clock = FakeClock()
    node = embedded(clock, max_deadline_seconds=0.2)
    p = target.params
    rid = "spent-after-validation-01"
    bad = [
        sign_request(
            p, [pkcs1_item(b"x")], request_id=rid, timestamp_ms=clock.ms, key_id="00" * 32
        ),
        sign_request(p, [pkcs1_item(b"x")], request_id=rid, timestamp_ms=clock.ms - 10**6),
        sign_request(p, [pss_item(b"x", salt=b"s" * 513)], request_id=rid, timestamp_ms=clock.ms),
    ]
    assert [outcome(node, r) for r in bad] == [
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.INVALID_ARGUMENT,
    ]
    good = sign_request(p, [pkcs1_item(b"x")], request_id=rid, timestamp_ms=clock.ms)
    assert outcome(node, good) == Code.OK

    release = threading.Event()
    real = compute_mod.sign_chunk

    def stuck(*args: Any) -> Any:
        release.wait(TIMEOUT)
        return real(*args)

    monkeypatch.setattr(compute_mod, "sign_chunk", stuck)
    late = sign_request(
        p, [pkcs1_item(b"y")], request_id="spent-but-never-signed", timestamp_ms=clock.ms
    )
    try:
        assert outcome(node, late) == Code.DEADLINE_EXCEEDED
    finally:
        release.set()
    monkeypatch.setattr(compute_mod, "sign_chunk", real)
    assert outcome(node, late) == Code.ALREADY_EXISTS
    assert node_audit(node, late.request_id) == ["refused", "refused"]


@pytest.mark.network
@pytest.mark.parametrize("when", ["while computing", "after computing"])
def test_a_cancelled_request_is_audited_and_its_id_stays_spent(
    target: Target, embedded: Any, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A caller that cancels after its request passed validation: the id is spent (and
    shares may have been computed), so the request has its line, saying so."""
    from ittc_node.faults import Faults

    clock = FakeClock()
    # After computing, the node holds the answer (as a slow disk or a busy loop would).
    node = embedded(clock, faults=Faults.parse("slow:20000") if when == "after computing" else None)
    p = target.params
    reached, release = threading.Event(), threading.Event()
    real = compute_mod.sign_chunk

    def chunk(*args: Any) -> Any:
        if when == "while computing":
            reached.set()
            release.wait(TIMEOUT)
            return real(*args)
        shares = real(*args)
        reached.set()
        return shares

    monkeypatch.setattr(compute_mod, "sign_chunk", chunk)
    request = sign_request(p, [pkcs1_item(b"cancel me")], timestamp_ms=clock.ms)
    call = node.stub.Sign.future(request, timeout=TIMEOUT)
    assert reached.wait(TIMEOUT)
    time.sleep(0.1)
    call.cancel()
    time.sleep(0.2)  # the node sees the cancellation before the work is released
    release.set()
    for _ in range(250):
        if node_audit(node, request.request_id):
            break
        time.sleep(0.02)
    monkeypatch.undo()
    records = [
        record
        for record in map(json.loads, node.config.audit_log.read_text().splitlines())
        if record.get("request_id") == request.request_id
    ]
    assert [r["outcome"] for r in records] == ["cancelled"]
    computed = {
        "while computing": "while its shares were being computed",
        "after computing": "after its shares were computed",
    }[when]
    assert records[0]["reason"] == f"cancelled by the caller {computed} (none was sent)"
    assert outcome(node, request) == Code.ALREADY_EXISTS
    assert node_audit(node, request.request_id) == ["cancelled", "refused"]


@pytest.mark.network
def test_clock_skew_inside_the_window_is_accepted(target: Target, embedded: Any) -> None:
    clock = FakeClock()
    node = embedded(clock, freshness_seconds=60)
    p = target.params
    w = 60_000
    clock.advance(3600)  # well after the start, so only the window matters
    for skew in (-w, -w + 1, -w // 2, -1, 0, 1, w // 2, w - 1, w):
        request = sign_request(p, [pkcs1_item(b"skewed")], timestamp_ms=clock.ms + skew)
        assert outcome(node, request) == Code.OK, skew
    for skew in (-w - 1, w + 1, -86_400_000, 86_400_000):
        request = sign_request(p, [pkcs1_item(b"skewed")], timestamp_ms=clock.ms + skew)
        assert outcome(node, request) == Code.FAILED_PRECONDITION, skew


@pytest.mark.network
def test_an_id_is_remembered_up_to_and_including_the_window_edge(
    target: Target, embedded: Any
) -> None:
    """replay.py: remembered for 2·window after acceptance, which outlives any fresh copy.
    The hardest copy to stop is the one dated window ahead: fresh until exactly
    t + 2·window. (Before a fix, that last instant let the copy through.)"""
    clock = FakeClock()
    node = embedded(clock, freshness_seconds=60)
    p = target.params
    w_ms = 60_000
    clock.advance(10)
    t_ms = clock.ms
    ahead = sign_request(
        p,
        [pkcs1_item(b"dated ahead")],
        timestamp_ms=t_ms + w_ms,
        request_id="dated-ahead-0123456789",
    )
    behind = sign_request(
        p,
        [pkcs1_item(b"dated behind")],
        timestamp_ms=t_ms - 5_000,
        request_id="dated-behind-0123456789",
    )
    assert outcome(node, ahead) == Code.OK and outcome(node, behind) == Code.OK
    for later_ms in (0, 1, w_ms // 2, w_ms, 3 * w_ms // 2, 2 * w_ms - 1, 2 * w_ms):
        clock.set((t_ms + later_ms) / 1000)
        assert outcome(node, ahead) == Code.ALREADY_EXISTS, later_ms
    # One millisecond later no copy is fresh any more: refused as stale, not as a replay...
    clock.set((t_ms + 2 * w_ms + 1) / 1000)
    assert outcome(node, ahead) == Code.FAILED_PRECONDITION
    assert outcome(node, behind) == Code.FAILED_PRECONDITION
    # ...and the id itself may be used again, by a new request (nothing to replay).
    again = sign_request(
        p, [pkcs1_item(b"new")], timestamp_ms=clock.ms, request_id=ahead.request_id
    )
    assert outcome(node, again) == Code.OK


@pytest.mark.network
def test_a_clock_stepped_back_forgets_nothing(target: Target, embedded: Any) -> None:
    clock = FakeClock()
    node = embedded(clock, freshness_seconds=60)
    p = target.params
    clock.advance(100)
    first = sign_request(p, [pkcs1_item(b"a")], timestamp_ms=clock.ms)
    assert outcome(node, first) == Code.OK
    clock.advance(-45)  # NTP steps the clock back: the copy is now from the future, but fresh
    assert outcome(node, first) == Code.ALREADY_EXISTS
    second = sign_request(p, [pkcs1_item(b"b")], timestamp_ms=clock.ms)
    assert outcome(node, second) == Code.OK
    # The ids are now stored out of expiry order; forward again, both copies still fresh:
    clock.advance(55)
    assert outcome(node, first) == Code.ALREADY_EXISTS
    assert outcome(node, second) == Code.ALREADY_EXISTS
    clock.advance(49)  # the second copy is stale now, the first still fresh and refused
    assert outcome(node, first) == Code.ALREADY_EXISTS
    assert outcome(node, second) == Code.FAILED_PRECONDITION


@pytest.mark.network
def test_a_restart_does_not_reopen_replays_nor_lock_anyone_out(
    target: Target, embedded: Any, tmp_path: pathlib.Path
) -> None:
    """The replay memory is lost in a restart, and rebuilt from the audit log: every id
    whose shares were computed and that may still be fresh is remembered again, so no
    copy of a request an earlier run signed is served, whoever sends it and however it
    was dated (one dated a whole window ahead included). And nothing else is refused:
    a client whose clock ran ahead does not lock out the others, nor itself. (Before a
    fix, everything dated up to the newest timestamp signed was refused for up to a
    window after a restart.)"""
    clock = FakeClock()
    node = embedded(clock, allowed_clients=[CLIENT, "bob"], freshness_seconds=60)
    cert, key = issue_client(target.cluster.root, "bob", tmp_path)
    p = target.params
    clock.advance(40)  # (a node on a new log refuses what is dated before its start)
    ahead = sign_request(p, [pkcs1_item(b"dated ahead")], timestamp_ms=clock.ms + 60_000)
    behind = sign_request(p, [pkcs1_item(b"dated behind")], timestamp_ms=clock.ms - 30_000)
    assert outcome(node, ahead) == Code.OK and outcome(node, behind) == Code.OK
    clock.advance(1)
    node = node.restart()
    try:
        bob = signer_pb2_grpc.SignerStub(  # type: ignore[no-untyped-call]
            target.cluster.channel_at(node.config.listen, "ittc-node-3", cert, key)
        )

        def as_bob(request: pb.SignRequest) -> grpc.StatusCode:
            try:
                bob.Sign(request, timeout=TIMEOUT)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
            return Code.OK

        # No copy is served again, by its client or another, dated ahead or behind.
        assert outcome(node, ahead) == Code.ALREADY_EXISTS
        assert as_bob(ahead) == Code.ALREADY_EXISTS
        assert outcome(node, behind) == Code.ALREADY_EXISTS
        # Nobody is locked out: bob's fresh request, dated now (before `ahead`), is
        # served; so is the first client's, and one dated before the restart.
        assert as_bob(sign_request(p, [pkcs1_item(b"bob")], timestamp_ms=clock.ms)) == Code.OK
        now_request = sign_request(p, [pkcs1_item(b"now")], timestamp_ms=clock.ms)
        assert outcome(node, now_request) == Code.OK
        before_restart = sign_request(p, [pkcs1_item(b"b")], timestamp_ms=clock.ms - 5_000)
        assert outcome(node, before_restart) == Code.OK
        node = node.restart()  # the same across any number of restarts
        for request in (ahead, behind, now_request, before_restart):
            assert outcome(node, request) == Code.ALREADY_EXISTS
        # The last instant a copy of `ahead` is fresh: still refused as a replay.
        clock.set((ahead.timestamp_ms + 60_000) / 1000)
        node = node.restart()
        assert outcome(node, ahead) == Code.ALREADY_EXISTS
        assert verify_audit_log(node.config.audit_log) > 0
    finally:
        node.close()


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "copy", "reuse-id"]),
            st.integers(0, 1_200).map(lambda n: n * 125),  # ms, on a grid
            st.integers(-90_000, 90_000),
            st.integers(0, 1_000),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_no_request_is_ever_served_twice(vkey: Any, steps: list[tuple[str, int, int, int]]) -> None:
    """The replay guarantee over random schedules, through the node's own checks and
    replay cache, with a clock that only moves forward (window 60 s): no copy of an
    accepted request is accepted again; an id is never accepted twice within 2·window.
    (The clock moves on a 1/8 s grid so that seconds are exact binary fractions.)"""
    params, limits = vkey.params, Limits(freshness_seconds=60)
    replay = ReplayCache(limits.freshness_seconds)
    now_ms, started_ms = 1_900_000_000_000, 1_900_000_000_000
    accepted: list[pb.SignRequest] = []
    when: dict[str, list[int]] = collections.defaultdict(list)
    ids = [f"id-{n:02d}-0123456789abcdef" for n in range(6)]
    for kind, advance_ms, offset_ms, pick in steps:
        now_ms += advance_ms
        if kind == "copy" and accepted:
            request = accepted[pick % len(accepted)]
        else:
            rid = (
                ids[pick % len(ids)]
                if kind == "reuse-id"
                else f"fresh-{len(accepted):04d}-{pick:04d}-xyz"
            )
            request = sign_request(
                params, [pkcs1_item(b"m")], request_id=rid, timestamp_ms=now_ms + offset_ms
            )
        try:
            validate_sign_request(
                request,
                params=params,
                limits=limits,
                now=now_ms / 1000,
                started_ms=started_ms,
                replay=replay,
            )
        except Refusal as refusal:
            if any(request is a for a in accepted) and refusal.code != Code.ALREADY_EXISTS:
                assert refusal.code == Code.FAILED_PRECONDITION  # a copy gone stale
            continue
        assert not any(request is a for a in accepted), "a copy was served twice"
        assert all(now_ms > t + 120_000 for t in when[request.request_id])
        replay.remember(request.request_id, now_ms / 1000)
        accepted.append(request)
        when[request.request_id].append(now_ms)


# -- 3. the model: what the operator guide says a node refuses, in its order ---------------


@dataclass
class Situation:
    """Everything besides the request that decides a node's answer."""

    params: PublicParams
    limits: Limits
    now_ms: int
    started_ms: int
    #: (request_id, accepted at ms), ascending in time, all before now.
    remembered: list[tuple[str, int]]
    max_entries: int
    pending: int

    def replay_cache(self) -> ReplayCache:
        cache = ReplayCache(self.limits.freshness_seconds, self.max_entries)
        for request_id, at_ms in self.remembered:
            cache.remember(request_id, at_ms / 1000)
        return cache


def expected(request: pb.SignRequest, s: Situation) -> tuple[grpc.StatusCode, str] | None:
    """The refusal (status, words in the reason) the guide's table gives, or None."""
    rid, w = request.request_id, int(s.limits.freshness_seconds * 1000)
    if not (16 <= len(rid) <= 64 and set(rid) <= ID_CHARS):
        return Code.INVALID_ARGUMENT, "request_id must be 16..64 characters"
    if request.key_id != s.params.key_id:
        return Code.NOT_FOUND, "unknown key id"
    if request.epoch != s.params.epoch or request.epoch_id != s.params.epoch_id:
        return Code.FAILED_PRECONDITION, "wrong epoch"
    if request.timestamp_ms < s.now_ms - w:
        return Code.FAILED_PRECONDITION, "stale request"
    if request.timestamp_ms > s.now_ms + w:
        return Code.FAILED_PRECONDITION, "request from the future"
    if request.timestamp_ms < s.started_ms:
        return Code.FAILED_PRECONDITION, "dated before this node started on a new audit log"
    live = [r for r, at in s.remembered if at + 2 * w >= s.now_ms]
    if rid in live:
        return Code.ALREADY_EXISTS, "request_id already used"
    if len(live) >= s.max_entries:
        return Code.RESOURCE_EXHAUSTED, "its share of the replay memory is full"
    count = len(request.items)
    if not 1 <= count <= s.limits.max_batch:
        return Code.INVALID_ARGUMENT, f"1..{s.limits.max_batch} items, not {count}"
    bits = s.params.bits
    for i, item in enumerate(request.items):
        where = f"items[{i}]: "
        if item.padding not in (pb.PADDING_PKCS1V15, pb.PADDING_PSS):
            return Code.INVALID_ARGUMENT, where + "unknown padding"
        if item.hash not in HASH_SIZES:
            return Code.INVALID_ARGUMENT, where + "unknown hash"
        size = HASH_SIZES[item.hash]
        if len(item.digest) != size:
            return Code.INVALID_ARGUMENT, where + f"a {HASH_NAMES[item.hash]} digest is {size}"
        if item.padding == pb.PADDING_PKCS1V15:
            if item.salt:
                return Code.INVALID_ARGUMENT, where + "PKCS#1 v1.5 takes no salt"
            if math.ceil(bits / 8) < DIGEST_INFO_LEN + size + 11:
                return Code.INVALID_ARGUMENT, where + "modulus too short"
        else:
            if len(item.salt) > 512:
                return Code.INVALID_ARGUMENT, where + "PSS salt longer than 512"
            if math.ceil((bits - 1) / 8) < size + len(item.salt) + 2:
                return Code.INVALID_ARGUMENT, where + "modulus too short"
    if s.pending + count > s.limits.max_pending_items:
        return Code.RESOURCE_EXHAUSTED, "node busy"
    return None


def check_encoding(params: PublicParams, private_exponent: int, item: pb.SignItem, x: int) -> None:
    """RSA oracle: x^d verifies, with ``cryptography``, as a signature of exactly this
    digest (and salt length) under the key: x is a standard RFC 8017 encoding of it."""
    assert 0 < x < params.modulus
    signature = int(gmpy2.powmod(x, private_exponent, params.modulus)).to_bytes(
        params.size_bytes, "big"
    )
    algorithm = CRYPTO_HASHES[HASH_NAMES[item.hash]]()
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if item.padding == pb.PADDING_PKCS1V15
        else padding.PSS(padding.MGF1(algorithm), salt_length=len(item.salt))
    )
    params.public_key().verify(signature, item.digest, pad, Prehashed(algorithm))


# -- generators --------------------------------------------------------------------------

ENUMS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 7, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1)
)
VALID_IDS = st.text(alphabet=sorted(ID_CHARS), min_size=16, max_size=64)
IDS = st.one_of(
    VALID_IDS,
    st.text(max_size=80),
    st.text(alphabet=sorted(ID_CHARS), min_size=0, max_size=15),
    st.text(alphabet=sorted(ID_CHARS), min_size=65, max_size=70),
    VALID_IDS.flatmap(
        lambda v: st.sampled_from([v + "\n", " " + v, v[:-1] + "=", v + "\x00", v[:-1] + "\u0661"])
    ),
)
SALTS = st.one_of(
    st.just(b""),
    st.binary(max_size=70),
    st.integers(90, 170).map(bytes),
    st.integers(500, 530).map(bytes),
)


@st.composite
def valid_items(draw: st.DrawFn, bits: int) -> pb.SignItem:
    pad = draw(st.sampled_from([pb.PADDING_PKCS1V15, pb.PADDING_PSS]))
    hash_ = draw(st.sampled_from(sorted(HASH_SIZES)))
    size = HASH_SIZES[hash_]
    longest_salt = min(64, math.ceil((bits - 1) / 8) - size - 2)
    return pb.SignItem(
        padding=pad,
        hash=hash_,
        digest=draw(st.binary(min_size=size, max_size=size)),
        salt=draw(st.binary(max_size=longest_salt)) if pad == pb.PADDING_PSS else b"",
    )


@st.composite
def items(draw: st.DrawFn, bits: int) -> pb.SignItem:
    """Mostly valid items; some with one field made wild; some wild throughout."""
    kind = draw(st.sampled_from(["valid"] * 6 + ["one-field", "one-field", "wild"]))
    if kind == "wild":
        return pb.SignItem(
            padding=draw(ENUMS),
            hash=draw(ENUMS),
            digest=draw(st.binary(max_size=80)),
            salt=draw(SALTS),
        )
    item = draw(valid_items(bits))
    if kind == "one-field":
        which = draw(st.sampled_from(["padding", "hash", "digest", "salt"]))
        if which in ("padding", "hash"):
            setattr(item, which, draw(ENUMS))
        elif which == "digest":
            item.digest = draw(st.binary(max_size=80))
        else:
            item.salt = draw(SALTS)
    return item


@st.composite
def situations(draw: st.DrawFn, params: PublicParams) -> Situation:
    limits = Limits(
        max_batch=draw(st.sampled_from([1, 4, 64])),
        freshness_seconds=draw(st.sampled_from([0.5, 60.0, 120.0])),
        max_pending_items=draw(st.sampled_from([1, 16, 4096])),
    )
    w = int(limits.freshness_seconds * 1000)
    # The node's clock is in seconds (a float): keep its times on a 1/8 s grid, exact in
    # binary, so the model's millisecond arithmetic and the node's agree at the edges.
    now_ms = 1_900_000_000_000 + 125 * draw(st.integers(0, 10**7))
    started_ms = now_ms - draw(st.one_of(st.integers(0, 3 * w), st.just(10**7)))
    ids = draw(st.lists(VALID_IDS, max_size=5, unique=True))
    ages = sorted(
        draw(
            st.lists(
                st.integers(0, 2 * w // 125 + 2).map(lambda n: 125 * n),
                min_size=len(ids),
                max_size=len(ids),
            )
        ),
        reverse=True,
    )
    remembered = [(rid, now_ms - age) for rid, age in zip(ids, ages, strict=True)]
    return Situation(
        params,
        limits,
        now_ms,
        started_ms,
        remembered,
        max_entries=draw(st.sampled_from([1, 3, 300_000, 300_000])),
        pending=draw(st.sampled_from([0, 0, 0, 3, 4096])),
    )


@st.composite
def requests(draw: st.DrawFn, s: Situation) -> pb.SignRequest:
    """A request that passes every check, with none, one or a few fields then made wild.

    Draws the same way whatever the situation's replay memory holds (the live fuzzer's
    grows between examples, and hypothesis needs generation to be repeatable).
    """
    w, bits = int(s.limits.freshness_seconds * 1000), s.params.bits
    pristine = draw(st.sampled_from([True, False, False]))
    count = draw(st.integers(1, min(4, s.limits.max_batch)))
    request = pb.SignRequest(
        request_id=draw(VALID_IDS),
        key_id=s.params.key_id,
        epoch=s.params.epoch,
        epoch_id=s.params.epoch_id,
        timestamp_ms=max(s.started_ms, s.now_ms + draw(st.integers(-w, w))),
        with_proofs=draw(st.booleans()),
        items=draw(
            st.lists(valid_items(bits) if pristine else items(bits), min_size=count, max_size=count)
        ),
    )
    if pristine:
        return request
    wild = draw(
        st.lists(
            st.sampled_from(["id", "replay", "key", "epoch", "time", "many"]),
            max_size=3,
            unique=True,
        )
    )
    if "id" in wild:
        request.request_id = draw(IDS)
    if "replay" in wild:
        known = [rid for rid, _ in s.remembered]
        which = draw(st.integers(0, 10**6))
        if known:
            request.request_id = known[which % len(known)]
    if "key" in wild:
        request.key_id = draw(
            st.one_of(
                st.just(s.params.key_id.upper()),
                st.text(max_size=70),
                st.just(s.params.key_id[:-1]),
                st.just(s.params.key_id + " "),
            )
        )
    if "epoch" in wild:
        request.epoch = draw(st.sampled_from([s.params.epoch + 1, 2**64 - 1, s.params.epoch]))
        request.epoch_id = draw(
            st.one_of(
                st.just(s.params.epoch_id),
                st.just(""),
                st.just(s.params.epoch_id.upper()),
                st.text(max_size=70),
            )
        )
    if "time" in wild:
        request.timestamp_ms = draw(
            st.one_of(
                st.integers(-w - 2, w + 2).map(lambda d: s.now_ms + d),
                st.sampled_from([-w - 1, -w, w, w + 1]).map(lambda d: s.now_ms + d),
                st.integers(-2, 2).map(lambda d: s.started_ms + d),
                st.integers(-(2**63), 2**63 - 1),
            )
        )
    if "many" in wild:  # none, or far too many: repeat a few, as a big batch usually does
        few = list(request.items)
        count = draw(
            st.sampled_from(
                [0, s.limits.max_batch, s.limits.max_batch + 1, draw(st.integers(60, 70))]
            )
        )
        del request.items[:]
        request.items.extend(few[i % len(few)] for i in range(count))
    return request


@st.composite
def raw_bytes(draw: st.DrawFn, s: Situation) -> bytes:
    """Bytes on the wire: noise, or a real request's bytes mutated."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(requests(s)).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif at < len(data):
            del data[at : at + draw(st.integers(1, 12))]
    return bytes(data)


#: A fuzz run that has not reached every kind of answer yet goes on up to this many
#: times its budget.
OVERTIME = 5


class Budget:
    """Run a hypothesis test function in rounds until the time budget is spent."""

    def __init__(self, seconds: float, name: str) -> None:
        self.seconds, self.name = seconds, name
        self.counts: collections.Counter[str] = collections.Counter()
        self.rounds = 0
        self.elapsed = 0.0

    def run(self, round_: Callable[[], None], *, until: Callable[[], bool] | None = None) -> None:
        """Rounds until the budget is spent and ``until()`` holds (the generators reached
        what the test asserts they reach: on a loaded machine a budget buys fewer
        inputs), but never past :data:`OVERTIME` budgets."""
        started = time.monotonic()
        while True:
            round_()
            self.rounds += 1
            self.elapsed = time.monotonic() - started
            if self.elapsed >= OVERTIME * self.seconds:
                return
            if self.elapsed >= self.seconds and (until is None or until()):
                return

    def report(self, tmp_path: pathlib.Path) -> str:
        total = self.counts["inputs"]
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if k != "inputs")
        line = (
            f"{self.name}: {total} inputs tried in {self.elapsed:.1f} s "
            f"({self.rounds} rounds; budget {self.seconds:g} s): {detail}"
        )
        print(f"\n{line}")
        (tmp_path / f"fuzz-{self.name}.txt").write_text(line + "\n")
        return line


FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    phases=[Phase.generate, Phase.shrink],
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


# -- 3. fuzzing the pure checks in this process ------------------------------------------


def test_fuzz_request_validation_in_process(vkey: Any, tmp_path: pathlib.Path) -> None:
    params = vkey.params
    d = vkey.whole.private_numbers().d
    budget = Budget(fuzz_seconds("ITTC_FUZZ_SECONDS", 12), "in-process")

    def check(s: Situation, request: pb.SignRequest) -> None:
        replay = s.replay_cache()
        want = expected(request, s)
        try:
            xs = validate_sign_request(
                request,
                params=params,
                limits=s.limits,
                now=s.now_ms / 1000,
                started_ms=s.started_ms,
                replay=replay,
                pending=s.pending,
            )
        except Refusal as refusal:
            assert want is not None, f"refused a request the guide accepts: {refusal.reason}"
            assert refusal.code == want[0], (refusal.code, refusal.reason, want)
            assert want[1] in refusal.reason, (refusal.reason, want)
            budget.counts[refusal.code.name] += 1
        else:
            assert want is None, f"accepted a request the guide refuses: {want}"
            assert len(xs) == len(request.items)
            for item, x in zip(request.items, xs, strict=True):
                check_encoding(params, d, item, x)
            budget.counts["OK"] += 1
        # Checking never spends the id: only the caller records it, once it commits.
        assert replay.seen(request.request_id, s.now_ms / 1000) == any(
            r == request.request_id and at + 2 * s.limits.freshness_seconds * 1000 >= s.now_ms
            for r, at in s.remembered
        )

    @FUZZ_SETTINGS
    @given(st.data())
    def round_(data: st.DataObject) -> None:
        s = data.draw(situations(params), label="situation")
        budget.counts["inputs"] += 1
        if data.draw(st.integers(0, 3), label="raw?") == 0:
            wire = data.draw(raw_bytes(s), label="bytes")
            budget.counts["raw bytes"] += 1
            try:
                request = parse_message(pb.SignRequest, wire)
            except Refusal as refusal:
                assert refusal.code == Code.INVALID_ARGUMENT
                assert refusal.reason.startswith("not a valid ittc.v1.SignRequest message")
                budget.counts["unparsable"] += 1
                return
        else:
            request = data.draw(requests(s), label="request")
        check(s, request)

    kinds = (
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "RESOURCE_EXHAUSTED",
    )
    budget.run(round_, until=lambda: all(budget.counts[name] for name in kinds))
    budget.report(tmp_path)
    assert budget.counts["inputs"] >= 200
    # The generators reach every kind of answer, not just the first check.
    for name in kinds:
        assert budget.counts[name] > 0, (name, budget.counts)


# -- 4. fuzzing a live node ----------------------------------------------------------------


@pytest.mark.network
def test_fuzz_live_node(target: Target, tmp_path: pathlib.Path) -> None:
    """The same generators against the real node 1 over mutual TLS: every answer as the
    model says, exactly one audit line per request with the same outcome and reason, and
    every share the right one."""
    p = target.params
    budget = Budget(fuzz_seconds("ITTC_FUZZ_LIVE_SECONDS", 6), "live")
    call = raw_method(target.cluster.channel(1), "Sign")
    spent: dict[str, int] = {}  # request ids the node accepted, and when (our clock, ms)
    w = 120_000
    starts = [
        r
        for r in map(json.loads, target.cluster.audit_log(1).read_text().splitlines())
        if r["type"] == "start"
    ]
    started_ms = round(datetime.datetime.fromisoformat(starts[-1]["time"]).timestamp() * 1000)
    edge = 10_000  # stay this far (ms) from every edge: the real clock moves meanwhile

    @FUZZ_SETTINGS
    @given(st.data())
    def round_(data: st.DataObject) -> None:
        now_ms = int(time.time() * 1000)
        # Away from the window's edges (the real clock moves while we talk to the node):
        # fresh requests are dated between now and window - 10 s ahead.
        when = data.draw(st.sampled_from(["fresh"] * 5 + ["future", "stale", "absurd"]))
        offset = data.draw(
            {
                "fresh": st.integers(0, w - edge),
                "future": st.integers(w + edge, 10 * w),
                "stale": st.integers(-10 * w, -w - edge),
                "absurd": st.sampled_from([-(2**62), 2**62]),
            }[when],
            label="offset",
        )
        remembered = sorted(((r, at) for r, at in spent.items()), key=lambda e: e[1])
        s = Situation(p, Limits(), now_ms, started_ms, remembered, max_entries=300_000, pending=0)
        if data.draw(st.integers(0, 4), label="raw?") == 0:
            wire = data.draw(raw_bytes(s), label="bytes")
            budget.counts["raw bytes"] += 1
        else:
            request = data.draw(requests(s), label="request")
            request.timestamp_ms = max(-(2**63), min(2**63 - 1, now_ms + offset))
            if data.draw(st.booleans(), label="new id?") and request.request_id not in spent:
                # Generated ids repeat a lot (hypothesis likes simple values); a random one
                # keeps some requests new, so that the node signs often enough.
                request.request_id = os.urandom(12).hex()
            wire = request.SerializeToString()
        budget.counts["inputs"] += 1
        try:
            parsed: pb.SignRequest | None = pb.SignRequest.FromString(wire)
        except Exception:  # noqa: BLE001 - the node must say INVALID_ARGUMENT
            parsed = None
        if parsed is not None:
            # Mutated bytes may land near an edge the real clock blurs: move them off it.
            ts, age = parsed.timestamp_ms, now_ms - spent.get(parsed.request_id, -(10**15))
            if min(abs(ts - now_ms - w), abs(ts - now_ms + w), abs(ts - started_ms)) < edge:
                parsed.timestamp_ms = now_ms
            if abs(age - 2 * w) < edge:
                parsed.request_id = os.urandom(12).hex()
            wire = parsed.SerializeToString()
        want = (
            (Code.INVALID_ARGUMENT, "not a valid ittc.v1.SignRequest message")
            if parsed is None
            else expected(parsed, s)
        )
        try:
            answer: bytes | None = call(wire, timeout=TIMEOUT)
            code, details = Code.OK, ""
        except grpc.RpcError as exc:
            answer, code, details = None, exc.code(), exc.details() or ""
        budget.counts[code.name] += 1
        records = target.new_audit_records()
        assert len(records) == 1, records
        if want is None:
            assert parsed is not None and answer is not None, (code, details)
            response = pb.SignResponse.FromString(answer)
            assert (response.index, response.key_id) == (1, p.key_id)
            assert [s.value for s in response.shares] == [
                target.expected_share(item) for item in parsed.items
            ]
            assert records[0]["outcome"] == "signed"
            spent[parsed.request_id] = now_ms
        else:
            assert (code, answer) == (want[0], None), (code, details, want)
            assert want[1] in details, (details, want)
            assert (records[0]["outcome"], records[0]["reason"]) == ("refused", details)

    budget.run(round_)
    budget.report(tmp_path)
    assert budget.counts["inputs"] >= 200
    assert budget.counts["OK"] > 0 and budget.counts["INVALID_ARGUMENT"] > 0
    target.assert_healthy_and_signing()
    assert verify_audit_log(target.cluster.audit_log(1)) > budget.counts["inputs"]

"""Epochs on the wire: requests name the epoch, nodes refuse every other, and a running
combiner follows its cluster file to a new epoch without a restart, never mixing two.

The new epoch here is made by the one-process reshare (tests only) and installed by hand;
the reshare protocol itself is tested in tests/test_reshare_*.py.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.combiner import ClusterClient
from ittc.config import ClusterFile
from ittc.errors import NodeInOtherEpoch, SigningError
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.reshare.local import reshare_in_one_process
from ittc.storage import KdfLimits, read_share_file, write_share_file
from ittc.storage.files import write_file_atomically
from ittc.wire import codec
from tests.cluster import LocalCluster, make_cluster, site_passphrase


def test_a_refusals_epoch_is_read_only_from_plain_numbers() -> None:
    assert codec.node_epoch([("ittc-epoch", "7")]) == 7
    assert codec.node_epoch([("other", "1"), ("ittc-epoch", b"12")]) == 12
    for bad in ([], None, [("ittc-epoch", "-1")], [("ittc-epoch", "1e3")], [("x", "3")]):
        assert codec.node_epoch(bad) is None
    assert codec.node_epoch([("ittc-epoch", "9" * 21)]) is None


def _install_epoch(nodes: LocalCluster, index: int, share: KeyShare, passphrase: bytes) -> None:
    """Give node ``index`` its share of the new epoch (by hand) and restart it."""
    config = nodes.config(index)
    write_file_atomically(
        config.params_file, share.params.to_json().encode(), mode=0o644, overwrite=True
    )
    write_share_file(
        config.share_file, share, passphrase, kdf=KdfLimits.fast_for_tests(), overwrite=True
    )
    nodes.restart(index)


def _publish_epoch(root: pathlib.Path, cluster: ClusterFile, new: KeyShare) -> None:
    """What a reshare's coordinator does at the end: new parameters beside the cluster
    file, then the cluster file, replaced atomically."""
    name = f"params-{new.params.epoch}.json"
    write_file_atomically(cluster.root / name, new.params.to_json().encode(), mode=0o644)
    text = ClusterFile.render(new.params, list(cluster.nodes), params_file=name)
    write_file_atomically(cluster.path, text.encode(), mode=0o644, overwrite=True)


def _verify(cluster: ClusterFile, signature: bytes, message: bytes) -> None:
    cluster.params.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.network
def test_a_running_combiner_follows_the_cluster_file_to_a_new_epoch(
    tmp_path: pathlib.Path,
) -> None:
    root = make_cluster(tmp_path, bits=1024, split_existing_key=True)
    cluster = ClusterFile.load(root)
    params = cluster.params
    seen: set[str] = set()
    passphrases = {i: site_passphrase(root, i) for i in range(1, 6)}
    with LocalCluster(root) as nodes:
        nodes.start(timeout=120)

        async def scenario() -> None:
            async with ClusterClient(root, deadline=8.0, node_timeout=3.0) as client:
                before = await client.sign(b"epoch 0")
                _verify(cluster, before, b"epoch 0")
                assert client.epoch == 0

                shares = [
                    read_share_file(nodes.config(i).share_file, params, i, passphrases[i])
                    for i in range(1, 6)
                ]
                _, new = reshare_in_one_process(shares, 5, 3)
                assert new[0].params.epoch == 1
                seen.add(new[0].params.epoch_id)

                # Three nodes move to epoch 1, two stay at 0: neither epoch has k nodes
                # the client's epoch-0 requests can use, and no combine mixes them.
                for i in (1, 2, 3):
                    await asyncio.to_thread(_install_epoch, nodes, i, new[i - 1], passphrases[i])
                with pytest.raises(SigningError) as failed:
                    await client.sign(b"between epochs")
                refused = [
                    e for e in failed.value.nodes.values() if isinstance(e, NodeInOtherEpoch)
                ]
                assert refused and all(e.epoch == 1 for e in refused)
                assert "wrong epoch" in refused[0].reason
                assert client.epoch == 0

                # The cluster file now names epoch 1: the same client follows it.
                _publish_epoch(root, cluster, new[0])
                after = await client.sign(b"epoch 1")
                assert client.epoch == 1 and client.params == new[0].params
                _verify(cluster, after, b"epoch 1")
                # Nodes 4 and 5 still sign in epoch 0: they refuse, the others sign.
                for n in range(4):
                    _verify(cluster, await client.sign(b"%d" % n), b"%d" % n)

                # An older or unrelated cluster file is never followed back.
                old = ClusterFile.render(params, list(cluster.nodes))
                write_file_atomically(cluster.path, old.encode(), mode=0o644, overwrite=True)
                assert not client.follow(force=True) and client.epoch == 1
                _verify(cluster, await client.sign(b"still 1"), b"still 1")

        asyncio.run(scenario())

        # Every request's audit line names the epoch it asked for.
        records = [json.loads(line) for line in nodes.audit_log(1).read_text().splitlines()]
        requests = [r for r in records if r.get("type") == "request"]
        assert {(r["epoch"], r["outcome"]) for r in requests} >= {(1, "signed")}
        assert {r["epoch_id"] for r in requests} <= {params.epoch_id, *seen}

"""What the config files say about epochs and sites: the cluster file's epoch and each
node's site identity, and a node's ``[reshare]`` table."""

from __future__ import annotations

import pathlib

import pytest

from ittc.config import ClusterFile, NodeConfig, NodeEntry
from ittc.errors import ConfigError
from ittc.lifecycle import SiteKey
from ittc.scheme.reshare.local import reshare_in_one_process
from tests.reshare_keys import split_key

SITES = [SiteKey.generate(name).identity for name in ("alpha", "bravo", "charlie", "delta", "echo")]


def _cluster(tmp_path: pathlib.Path, *, with_sites: bool = True) -> pathlib.Path:
    params = split_key().dealt.params
    (tmp_path / "params.json").write_text(params.to_json())
    nodes = [
        NodeEntry(
            i, f"127.0.0.1:{7000 + i}", f"ittc-node-{i}", SITES[i - 1] if with_sites else None
        )
        for i in range(1, 6)
    ]
    path = tmp_path / "cluster.toml"
    path.write_text(ClusterFile.render(params, nodes))
    return path


def test_a_cluster_file_names_its_epoch_and_each_nodes_site(tmp_path: pathlib.Path) -> None:
    path = _cluster(tmp_path)
    text = path.read_text()
    assert "epoch = 0" in text and f'sign_key = "{SITES[0].sign_key.hex()}"' in text
    cluster = ClusterFile.load(path)
    assert cluster.epoch == 0 and cluster.certificate is None
    assert cluster.sites() == {i: SITES[i - 1] for i in range(1, 6)}
    assert cluster.node(3).site == SITES[2]

    # A later epoch: its own parameters file, and the file says which epoch.
    _, new = reshare_in_one_process(split_key().shares, 5, 3, acceptance=False)
    (tmp_path / "params-1.json").write_text(new[0].params.to_json())
    path.write_text(
        ClusterFile.render(
            new[0].params,
            list(cluster.nodes),
            params_file="params-1.json",
            certificate="certificate-1.json",
        )
    )
    later = ClusterFile.load(path)
    assert later.epoch == 1 and later.params == new[0].params
    assert later.certificate == tmp_path / "certificate-1.json"


def test_a_cluster_file_without_site_identities_still_loads(tmp_path: pathlib.Path) -> None:
    cluster = ClusterFile.load(_cluster(tmp_path, with_sites=False))
    assert all(n.site is None for n in cluster.nodes)
    with pytest.raises(ConfigError, match="no site identity"):
        cluster.sites()


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t: t.replace("epoch = 0", "epoch = 1"), "epoch: does not match"),
        (lambda t: t.replace('site = "bravo"\n', "", 1), "together"),
        (lambda t: t.replace('site = "bravo"', 'site = "alpha"', 1), "same site"),
        (lambda t: t.replace('site = "bravo"', 'site = "Bravo!"', 1), "invalid site name"),
        (
            lambda t: t.replace(f'"{SITES[1].box_key.hex()}"', '"00ff"', 1),
            "box key must be 32 bytes",
        ),
        (lambda t: t.replace(f'"{SITES[1].sign_key.hex()}"', '"zz"', 1), "malformed"),
        (lambda t: t.replace('site = "bravo"', "site = 7", 1), "must be str"),
    ],
)
def test_a_bad_epoch_or_site_identity_is_refused(
    tmp_path: pathlib.Path, edit: object, words: str
) -> None:
    path = _cluster(tmp_path)
    path.write_text(edit(path.read_text()))  # type: ignore[operator]
    with pytest.raises(ConfigError, match=words) as err:
        ClusterFile.load(path)
    assert str(path) in str(err.value)


NODE = """\
format = "ittc.node"
version = 1
[node]
index = 1
listen = "127.0.0.1:7001"
[key]
params = "params.json"
share = "share.enc"
[tls]
cert = "tls.pem"
key = "tls.key"
ca = "ca.pem"
[access]
allowed_clients = ["ittc-client"]
[audit]
path = "audit.log"
"""


def test_a_nodes_reshare_table_is_all_or_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE)
    assert not NodeConfig.load(path).reshares
    path.write_text(
        NODE
        + '[reshare]\nsite_key = "site.key"\nstate_dir = "../var/state"\nsites = "cluster.toml"\n'
    )
    config = NodeConfig.load(path)
    assert config.reshares
    assert config.site_key == tmp_path / "site.key"
    assert config.state_dir == (tmp_path / "../var/state").resolve()
    assert config.sites == tmp_path / "cluster.toml"
    path.write_text(NODE + '[reshare]\nsite_key = "site.key"\n')
    with pytest.raises(ConfigError, match="together"):
        NodeConfig.load(path)
    path.write_text(NODE + '[reshare]\nsite_kee = "site.key"\n')
    with pytest.raises(ConfigError, match="unknown field"):
        NodeConfig.load(path)

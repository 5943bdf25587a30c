"""The committed protocol code is exactly what the .proto generates."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_is_current(tmp_path):
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    for name in (
        f"{proto}_pb2{suffix}"
        for proto in ("signer", "reshare")
        for suffix in (".py", ".pyi", "_grpc.py")
    ):
        fresh = (tmp_path / "ittc" / "wire" / "v1" / name).read_text()
        committed = (ROOT / "ittc" / "wire" / "v1" / name).read_text()
        assert fresh == committed, f"ittc/wire/v1/{name} is stale: run python proto/generate.py"


def test_protocol_package_is_versioned():
    from ittc.wire.v1 import signer_pb2

    assert signer_pb2.DESCRIPTOR.package == "ittc.v1"
    assert {"Sign", "GetInfo"} <= set(
        signer_pb2.DESCRIPTOR.services_by_name["Signer"].methods_by_name
    )
    from ittc.wire.v1 import reshare_pb2

    assert reshare_pb2.DESCRIPTOR.package == "ittc.v1"
    assert {
        "Prepare",
        "Deal",
        "Accept",
        "Commit",
        "Abort",
        "Status",
        "RevealEphemeral",
        "ApproveRefresh",
    } == set(reshare_pb2.DESCRIPTOR.services_by_name["Reshare"].methods_by_name)

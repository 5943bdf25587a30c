"""Generate the Python code for proto/ into ittc/: ``python proto/generate.py [OUT_DIR]``.

The generated files are committed; ``tests/test_proto.py`` regenerates them into a
temporary folder and fails if anything differs, so they never drift from the .proto.
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ["ittc/wire/v1/signer.proto", "ittc/wire/v1/reshare.proto"]


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        args = [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / "proto" / proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

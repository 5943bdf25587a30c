"""Wire protocol ``ittc.v1`` (generated from ``proto/ittc/v1/signer.proto``)."""

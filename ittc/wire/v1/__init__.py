"""Wire protocol ``ittc.v1`` (generated from ``proto/ittc/wire/v1/signer.proto``)."""

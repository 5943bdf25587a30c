from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Padding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PADDING_UNSPECIFIED: _ClassVar[Padding]
    PADDING_PKCS1V15: _ClassVar[Padding]
    PADDING_PSS: _ClassVar[Padding]

class Hash(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HASH_UNSPECIFIED: _ClassVar[Hash]
    HASH_SHA256: _ClassVar[Hash]
    HASH_SHA384: _ClassVar[Hash]
    HASH_SHA512: _ClassVar[Hash]
PADDING_UNSPECIFIED: Padding
PADDING_PKCS1V15: Padding
PADDING_PSS: Padding
HASH_UNSPECIFIED: Hash
HASH_SHA256: Hash
HASH_SHA384: Hash
HASH_SHA512: Hash

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("index", "key_id", "n", "k", "modulus_bits", "proofs_sound", "software_version", "ready", "max_batch", "freshness_window_ms", "epoch", "epoch_id", "site")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODULUS_BITS_FIELD_NUMBER: _ClassVar[int]
    PROOFS_SOUND_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    index: int
    key_id: str
    n: int
    k: int
    modulus_bits: int
    proofs_sound: bool
    software_version: str
    ready: bool
    max_batch: int
    freshness_window_ms: int
    epoch: int
    epoch_id: str
    site: str
    def __init__(self, index: _Optional[int] = ..., key_id: _Optional[str] = ..., n: _Optional[int] = ..., k: _Optional[int] = ..., modulus_bits: _Optional[int] = ..., proofs_sound: _Optional[bool] = ..., software_version: _Optional[str] = ..., ready: _Optional[bool] = ..., max_batch: _Optional[int] = ..., freshness_window_ms: _Optional[int] = ..., epoch: _Optional[int] = ..., epoch_id: _Optional[str] = ..., site: _Optional[str] = ...) -> None: ...

class SignItem(_message.Message):
    __slots__ = ("padding", "hash", "digest", "salt")
    PADDING_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    padding: Padding
    hash: Hash
    digest: bytes
    salt: bytes
    def __init__(self, padding: _Optional[_Union[Padding, str]] = ..., hash: _Optional[_Union[Hash, str]] = ..., digest: _Optional[bytes] = ..., salt: _Optional[bytes] = ...) -> None: ...

class SignRequest(_message.Message):
    __slots__ = ("request_id", "timestamp_ms", "key_id", "with_proofs", "items", "epoch", "epoch_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_PROOFS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    timestamp_ms: int
    key_id: str
    with_proofs: bool
    items: _containers.RepeatedCompositeFieldContainer[SignItem]
    epoch: int
    epoch_id: str
    def __init__(self, request_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., with_proofs: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[SignItem, _Mapping]]] = ..., epoch: _Optional[int] = ..., epoch_id: _Optional[str] = ...) -> None: ...

class Share(_message.Message):
    __slots__ = ("value", "proof_c", "proof_z")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PROOF_C_FIELD_NUMBER: _ClassVar[int]
    PROOF_Z_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    proof_c: bytes
    proof_z: bytes
    def __init__(self, value: _Optional[bytes] = ..., proof_c: _Optional[bytes] = ..., proof_z: _Optional[bytes] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("index", "key_id", "shares", "epoch", "epoch_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    key_id: str
    shares: _containers.RepeatedCompositeFieldContainer[Share]
    epoch: int
    epoch_id: str
    def __init__(self, index: _Optional[int] = ..., key_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[Share, _Mapping]]] = ..., epoch: _Optional[int] = ..., epoch_id: _Optional[str] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Statement(_message.Message):
    __slots__ = ("kind", "run_id", "sender", "body", "signature")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    run_id: bytes
    sender: str
    body: bytes
    signature: bytes
    def __init__(self, kind: _Optional[str] = ..., run_id: _Optional[bytes] = ..., sender: _Optional[str] = ..., body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Sealed(_message.Message):
    __slots__ = ("kind", "run_id", "sender", "recipient", "ephemeral", "nonce", "ciphertext", "signature")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    run_id: bytes
    sender: str
    recipient: str
    ephemeral: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    def __init__(self, kind: _Optional[str] = ..., run_id: _Optional[bytes] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., ephemeral: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("site", "signature")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    site: str
    signature: bytes
    def __init__(self, site: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("plan", "approvals", "holders", "attempt")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    plan: bytes
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    holders: _containers.RepeatedScalarFieldContainer[int]
    attempt: bytes
    def __init__(self, plan: _Optional[bytes] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., holders: _Optional[_Iterable[int]] = ..., attempt: _Optional[bytes] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("run_id", "commitments", "masks")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    commitments: Statement
    masks: _containers.RepeatedCompositeFieldContainer[Sealed]
    def __init__(self, run_id: _Optional[bytes] = ..., commitments: _Optional[_Union[Statement, _Mapping]] = ..., masks: _Optional[_Iterable[_Union[Sealed, _Mapping]]] = ...) -> None: ...

class DealRequest(_message.Message):
    __slots__ = ("run_id", "commitments", "masks")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    commitments: _containers.RepeatedCompositeFieldContainer[Statement]
    masks: _containers.RepeatedCompositeFieldContainer[Sealed]
    def __init__(self, run_id: _Optional[bytes] = ..., commitments: _Optional[_Iterable[_Union[Statement, _Mapping]]] = ..., masks: _Optional[_Iterable[_Union[Sealed, _Mapping]]] = ...) -> None: ...

class DealResponse(_message.Message):
    __slots__ = ("contribution", "sub_shares", "complaint")
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SUB_SHARES_FIELD_NUMBER: _ClassVar[int]
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    contribution: Statement
    sub_shares: _containers.RepeatedCompositeFieldContainer[Sealed]
    complaint: Statement
    def __init__(self, contribution: _Optional[_Union[Statement, _Mapping]] = ..., sub_shares: _Optional[_Iterable[_Union[Sealed, _Mapping]]] = ..., complaint: _Optional[_Union[Statement, _Mapping]] = ...) -> None: ...

class AcceptRequest(_message.Message):
    __slots__ = ("run_id", "commitments", "contributions", "sub_shares")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    SUB_SHARES_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    commitments: _containers.RepeatedCompositeFieldContainer[Statement]
    contributions: _containers.RepeatedCompositeFieldContainer[Statement]
    sub_shares: _containers.RepeatedCompositeFieldContainer[Sealed]
    def __init__(self, run_id: _Optional[bytes] = ..., commitments: _Optional[_Iterable[_Union[Statement, _Mapping]]] = ..., contributions: _Optional[_Iterable[_Union[Statement, _Mapping]]] = ..., sub_shares: _Optional[_Iterable[_Union[Sealed, _Mapping]]] = ...) -> None: ...

class AcceptResponse(_message.Message):
    __slots__ = ("ack", "complaint")
    ACK_FIELD_NUMBER: _ClassVar[int]
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    ack: Statement
    complaint: Statement
    def __init__(self, ack: _Optional[_Union[Statement, _Mapping]] = ..., complaint: _Optional[_Union[Statement, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("certificate",)
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    def __init__(self, certificate: _Optional[bytes] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("epoch", "epoch_id", "retired")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epoch_id: str
    retired: bool
    def __init__(self, epoch: _Optional[int] = ..., epoch_id: _Optional[str] = ..., retired: _Optional[bool] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("run_id", "attempt")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    attempt: bytes
    def __init__(self, run_id: _Optional[bytes] = ..., attempt: _Optional[bytes] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("certificates_after", "with_certificates")
    CERTIFICATES_AFTER_FIELD_NUMBER: _ClassVar[int]
    WITH_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    certificates_after: int
    with_certificates: bool
    def __init__(self, certificates_after: _Optional[int] = ..., with_certificates: _Optional[bool] = ...) -> None: ...

class ReshareStatus(_message.Message):
    __slots__ = ("epoch", "epoch_id", "site", "index", "retired", "run_id", "run_stage", "pending_runs", "certificate", "key_id", "certificates")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_STAGE_FIELD_NUMBER: _ClassVar[int]
    PENDING_RUNS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epoch_id: str
    site: str
    index: int
    retired: bool
    run_id: bytes
    run_stage: str
    pending_runs: _containers.RepeatedScalarFieldContainer[bytes]
    certificate: bytes
    key_id: str
    certificates: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, epoch: _Optional[int] = ..., epoch_id: _Optional[str] = ..., site: _Optional[str] = ..., index: _Optional[int] = ..., retired: _Optional[bool] = ..., run_id: _Optional[bytes] = ..., run_stage: _Optional[str] = ..., pending_runs: _Optional[_Iterable[bytes]] = ..., certificate: _Optional[bytes] = ..., key_id: _Optional[str] = ..., certificates: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ApproveRefreshRequest(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: bytes
    def __init__(self, plan: _Optional[bytes] = ...) -> None: ...

class RevealRequest(_message.Message):
    __slots__ = ("complaint",)
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    complaint: Statement
    def __init__(self, complaint: _Optional[_Union[Statement, _Mapping]] = ...) -> None: ...

class RevealResponse(_message.Message):
    __slots__ = ("ephemeral",)
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    ephemeral: bytes
    def __init__(self, ephemeral: _Optional[bytes] = ...) -> None: ...

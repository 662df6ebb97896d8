import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("connect", "ack", "heartbeat")
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    connect: ConnectRequest
    ack: DeliveryAck
    heartbeat: Heartbeat
    def __init__(self, connect: _Optional[_Union[ConnectRequest, _Mapping]] = ..., ack: _Optional[_Union[DeliveryAck, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("connect_response", "webhook", "heartbeat")
    CONNECT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    connect_response: ConnectResponse
    webhook: WebhookEnvelope
    heartbeat: Heartbeat
    def __init__(self, connect_response: _Optional[_Union[ConnectResponse, _Mapping]] = ..., webhook: _Optional[_Union[WebhookEnvelope, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("hub_id", "timestamp", "signature", "endpoint_ids", "capabilities")
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_IDS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    hub_id: str
    timestamp: int
    signature: str
    endpoint_ids: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hub_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., signature: _Optional[str] = ..., endpoint_ids: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("success", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: str
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("timestamp",)
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    def __init__(self, timestamp: _Optional[int] = ...) -> None: ...

class WebhookEnvelope(_message.Message):
    __slots__ = ("id", "endpoint_id", "destination_url", "received_at", "headers", "payload", "attempt", "method", "path", "query", "remote_addr")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_URL_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    id: str
    endpoint_id: str
    destination_url: str
    received_at: _timestamp_pb2.Timestamp
    headers: _containers.ScalarMap[str, str]
    payload: bytes
    attempt: int
    method: str
    path: str
    query: str
    remote_addr: str
    def __init__(self, id: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., destination_url: _Optional[str] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., headers: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ..., attempt: _Optional[int] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., remote_addr: _Optional[str] = ...) -> None: ...

class DeliveryAck(_message.Message):
    __slots__ = ("webhook_id", "success", "status_code", "error_message", "permanent_failure")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FAILURE_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    success: bool
    status_code: int
    error_message: str
    permanent_failure: bool
    def __init__(self, webhook_id: _Optional[str] = ..., success: _Optional[bool] = ..., status_code: _Optional[int] = ..., error_message: _Optional[str] = ..., permanent_failure: _Optional[bool] = ...) -> None: ...

"""The relay wire contract: generated protobuf messages and the purerpc stub.

Regenerate with ``python proto/generate.py`` after editing ``proto/relay/v1/relay.proto``.
"""

from relayd.wire import relay_pb2 as pb
from relayd.wire.relay_grpc import RelayServiceStub

SERVICE_NAME = "relay.v1.RelayService"
METHOD_NAME = "Stream"

__all__ = ["METHOD_NAME", "SERVICE_NAME", "RelayServiceStub", "pb"]

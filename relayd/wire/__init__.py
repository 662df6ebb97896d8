"""The relay wire contract: generated protobuf messages and the purerpc stub.

Regenerate with ``python proto/generate.py`` after editing ``proto/relay/v1/relay.proto``.
"""

from relayd.wire import relay_pb2 as pb
from relayd.wire.relay_grpc import RelayServiceStub

SERVICE_NAME = "relay.v1.RelayService"
METHOD_NAME = "Stream"
# The capability a hub advertises to have many webhooks of one endpoint in flight (see
# the comment at the top of relay.proto for the promise it makes).
ORDERED_PIPELINE = "ordered-pipeline"
# DeliveryAck.error_message of a webhook an ordered-pipeline hub skipped.
SKIPPED_ERROR = "skipped: earlier webhook failed"

__all__ = ["METHOD_NAME", "ORDERED_PIPELINE", "SERVICE_NAME", "SKIPPED_ERROR",
           "RelayServiceStub", "pb"]

import purerpc
from relayd.wire import relay_pb2 as relay_dot_v1_dot_relay__pb2
import google.protobuf.timestamp_pb2 as google_dot_protobuf_dot_timestamp__pb2


class RelayServiceServicer(purerpc.Servicer):
    async def Stream(self, input_messages):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "relay.v1.RelayService"
        )
        service_obj.add_method(
            "Stream",
            self.Stream,
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_STREAM,
                relay_dot_v1_dot_relay__pb2.StreamRequest,
                relay_dot_v1_dot_relay__pb2.StreamResponse,
            )
        )
        return service_obj


class RelayServiceStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "relay.v1.RelayService",
            channel
        )
        self.Stream = self._client.get_method_stub(
            "Stream",
            purerpc.RPCSignature(
                purerpc.Cardinality.STREAM_STREAM,
                relay_dot_v1_dot_relay__pb2.StreamRequest,
                relay_dot_v1_dot_relay__pb2.StreamResponse,
            )
        )
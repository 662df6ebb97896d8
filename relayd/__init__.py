"""relayd: a self-hosted webhook relay.

- `relayd.edge`: the public edge daemon (``relayd``) and ``relayctl``;
- `relayd.hub`: the home-side daemon (``relay-hub``);
- `relayd.common`: what both share; `relayd.transport`: gRPC over purerpc;
- `relayd.wire`: the generated protobuf contract;
- `relayd.sink`: a printing destination for trying the relay (``python -m relayd.sink``),
  part of neither daemon.

`edge` and `hub` never import each other (checked by import-linter in the test command).
"""

"""gRPC over purerpc, with relayd's own connection handling (server, client, batching).

Every use of purerpc's private API is in `relayd.transport._purerpc`.
"""

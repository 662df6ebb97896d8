"""relayd, the edge daemon: ingress, durable store, dispatcher, hub connections, status."""

"""relayd: a self-hosted webhook relay (edge daemon)."""

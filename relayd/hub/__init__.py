"""relay-hub: the home-side daemon that connects out to relayd and delivers webhooks."""

"""What both daemons share: config machinery, TLS, heartbeats, signals, logs, systemd."""

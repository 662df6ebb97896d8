"""relayd's benchmark suite: ``scripts/bench`` (see bench/run.py)."""

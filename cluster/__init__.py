"""The driver: Ray placement of each pool, the GRPO training loop, checkpoints, metrics and entry points."""

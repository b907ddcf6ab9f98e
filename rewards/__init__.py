"""Rewards of Embodied-R's GRPO: format, accuracy, logical consistency (a frozen judge LM as a Ray actor pool),
their staged weights, and their combination per GRPO group."""

"""The consistency judge's engines, one file each; importing this package registers them all (rewards.judge.JUDGES)."""

from rewards.judges import openai_judge, transformers_judge, vllm_judge

__all__ = ["openai_judge", "transformers_judge", "vllm_judge"]

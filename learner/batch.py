"""The learner's input: sampled sequences with advantages, packed as left-padded prompts + right-padded completions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]
    rollout_logprobs: list[float]  # what the rollout engine reported (the mismatch metric, old_logprobs=rollout, TIS)
    advantage: float
    truncated: bool = False  # cut at max_new_tokens rather than stopped at EOS (learner.grpo.mask_truncated drops it)
    policy_version: int = 0  # the version of the policy that sampled it (the learner reports the staleness)


@dataclass
class PackedBatch:
    """Every prompt ends at column P and every completion starts there, so logits are only needed for the last C+1 columns."""

    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    position_ids: torch.Tensor  # [B, P + C], positions as if unpadded (left padding must not shift them)
    completion_ids: torch.Tensor  # [B, C]
    completion_mask: torch.Tensor  # [B, C] float
    rollout_logprobs: torch.Tensor  # [B, C]
    advantages: torch.Tensor  # [B]
    prompt_width: int  # P
    truncated: torch.Tensor  # [B] bool
    policy_versions: torch.Tensor  # [B] long


def pack(samples: list[Sample], pad_id: int) -> PackedBatch:
    if not samples:
        raise ValueError("cannot pack an empty batch")
    prompt_width = max(len(s.prompt_ids) for s in samples)
    completion_width = max(max(len(s.completion_ids) for s in samples), 1)
    batch = len(samples)
    input_ids = torch.full((batch, prompt_width + completion_width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros(batch, completion_width)
    rollout_logprobs = torch.zeros(batch, completion_width)
    for row, sample in enumerate(samples):
        start = prompt_width - len(sample.prompt_ids)
        end = prompt_width + len(sample.completion_ids)
        input_ids[row, start:prompt_width] = torch.tensor(sample.prompt_ids)
        input_ids[row, prompt_width:end] = torch.tensor(sample.completion_ids, dtype=torch.long)
        attention_mask[row, start:end] = 1
        completion_mask[row, : len(sample.completion_ids)] = 1.0
        rollout_logprobs[row, : len(sample.rollout_logprobs)] = torch.tensor(sample.rollout_logprobs)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return PackedBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        completion_ids=input_ids[:, prompt_width:],
        completion_mask=completion_mask,
        rollout_logprobs=rollout_logprobs,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        prompt_width=prompt_width,
        truncated=torch.tensor([s.truncated for s in samples], dtype=torch.bool),
        policy_versions=torch.tensor([s.policy_version for s in samples], dtype=torch.long),
    )


def completion_logprobs(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Log-prob of each completion token under `model`: [B, C], computed in float32."""
    completion_width = batch.completion_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=completion_width + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :].float()  # position P-1+t predicts completion token t
    return torch.log_softmax(logits, dim=-1).gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)

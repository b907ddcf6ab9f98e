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


def completion_logprobs(model: torch.nn.Module, batch: PackedBatch, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each completion token under `model` at the sampling `temperature`: [B, C], computed in float32.

    log_softmax(logits / temperature), the distribution the rollout engines draw from and report (temperature 0, greedy
    decoding, reads as 1, as the engines report it): GRPO's ratio, the KL reference and TIS must all compare the
    policy the tokens were sampled from. Top-p is not applied here: the learner trains the whole tempered distribution,
    and the engines' log-probs (renormalised over the nucleus) differ from these by exactly what top-p cut, which is
    the mismatch truncated importance sampling (learner.grpo.tis_cap) corrects. SFT passes 1: a plain likelihood.

    GRPO's G samples of a prompt share its tokens, so when rows of the batch share a prompt, the prompt is run once
    (its keys and values then serve every row that shares it, and the gradient of all those rows flows back into that
    one pass): with a 141-token prompt and 64 new tokens that is 2.5x less work for the policy and the reference. The
    result is the full pass's up to float rounding. A batch whose prompts all differ, or a model with gradient
    checkpointing (which turns the cache off), takes one pass over the whole rows.
    """
    if temperature < 0:
        raise ValueError(f"sampling temperature must be >= 0, got {temperature}")
    scale = 1.0 if temperature == 0 else float(temperature)
    shared = _shared_prompts(batch)
    if shared is None or _gradient_checkpointing(model):
        return _full_pass_logprobs(model, batch, scale)
    return _shared_prompt_logprobs(model, batch, *shared, scale)


def _full_pass_logprobs(model: torch.nn.Module, batch: PackedBatch, temperature: float = 1.0) -> torch.Tensor:
    completion_width = batch.completion_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=completion_width + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :].float()  # position P-1+t predicts completion token t
    return _token_logprobs(logits, batch.completion_ids, temperature)


def _shared_prompt_logprobs(
    model: torch.nn.Module, batch: PackedBatch, first_rows: torch.Tensor, prompt_of_row: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Two passes: the distinct prompts (their last position predicts completion token 0), then every row's completion
    tokens but the last (position P+t predicts token t+1) on the keys and values of its prompt, picked per row."""
    width = batch.prompt_width
    completion_width = batch.completion_ids.shape[1]
    prompts = model(
        input_ids=batch.input_ids[first_rows, :width],
        attention_mask=batch.attention_mask[first_rows, :width],
        position_ids=batch.position_ids[first_rows, :width],
        logits_to_keep=1,
        use_cache=True,
    )
    logits = prompts.logits[prompt_of_row]  # [B, 1, V]
    if completion_width > 1:
        cache = prompts.past_key_values
        cache.batch_select_indices(prompt_of_row)  # indexing, so the rows' gradients add up in the shared prompt pass
        # The last completion token predicts nothing and no later token attends to it: it is left out of the pass.
        rest = model(
            input_ids=batch.completion_ids[:, :-1],
            attention_mask=batch.attention_mask[:, : width + completion_width - 1],
            position_ids=batch.position_ids[:, width : width + completion_width - 1],
            past_key_values=cache,
            use_cache=True,
        )
        logits = torch.cat([logits, rest.logits], dim=1)
    return _token_logprobs(logits.float(), batch.completion_ids, temperature)


def _token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature != 1.0:  # no division at 1, so the untempered log-probs stay bit for bit what they were
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def _shared_prompts(batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(the first row of each distinct prompt, each row's index into those), or None when no two rows share a prompt.
    A prompt is its left-padded ids together with its mask, so a pad id that is also a prompt token cannot alias."""
    width = batch.prompt_width
    prompts = torch.cat([batch.input_ids[:, :width], batch.attention_mask[:, :width]], dim=1)
    distinct, prompt_of_row = torch.unique(prompts, dim=0, return_inverse=True)
    rows = prompts.shape[0]
    if distinct.shape[0] == rows:
        return None
    first_rows = torch.full((distinct.shape[0],), rows, dtype=torch.long, device=prompts.device)
    first_rows.scatter_reduce_(0, prompt_of_row, torch.arange(rows, device=prompts.device), reduce="amin")
    return first_rows, prompt_of_row


def _gradient_checkpointing(model: torch.nn.Module) -> bool:
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the transformers model
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5 renamed it
        if hasattr(type(module), name):
            return bool(getattr(module, name))
    return False

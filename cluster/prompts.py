"""The table of ready-to-sample prompts: each training record with its video text, rendered and tokenized once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from embodied_data.records import Record
from rollout.prompt import build_prompt

log = logging.getLogger(__name__)


@dataclass
class PromptItem:
    record: Record
    token_ids: list[int]
    truncated: bool


def build_prompt_table(cfg, records: list[Record], video_texts: dict[str, str], policy_path: str) -> list[PromptItem]:
    """Records without a video text (their video failed perception, already reported) or whose prompt cannot fit are
    reported here by id and left out; the count is logged."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    table, unusable = [], 0
    for record in records:
        text = video_texts.get(record.id)
        if text is None:
            unusable += 1
            continue
        try:
            built = build_prompt(record, text, tokenizer, cfg.sampling.max_prompt_tokens)
        except ValueError as err:
            log.warning("record %s left out: %s", record.id, err)
            unusable += 1
            continue
        table.append(PromptItem(record, built.token_ids, built.truncated))
    if not table:
        raise ValueError(f"none of the {len(records)} training records has a usable prompt; see the warnings above")
    if unusable:
        log.warning("%d of %d records have no usable prompt and are left out", unusable, len(records))
    truncated = sum(p.truncated for p in table)
    if truncated:
        log.warning("%d prompts were cut to sampling.max_prompt_tokens=%d (oldest frames dropped)", truncated, cfg.sampling.max_prompt_tokens)
    return table

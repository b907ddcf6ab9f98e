"""The shipped configs as a user meets them: the embedded default trains the real registry model on ground-truth key-frame
captions, and a benchmark's config (with its `bench:` section) is taken by train, sft and eval alike."""

from __future__ import annotations

from cluster.config import load_config


def test_the_default_config_trains_the_real_instruct_model_on_key_frame_captions():
    cfg = load_config("configs/default.yaml", [])
    assert cfg.models.policy == cfg.models.judge == "smollm2-135m-instruct"
    assert cfg.perception.source == "ground_truth" and cfg.perception.ground_truth_frames == "keyframes"
    assert cfg.trainer.sft_warmup_steps > 0  # the bare model ignores the <think>/<answer> format: every reward would be 0
    assert cfg.trainer.log_completions > 0


def test_a_benchmark_config_loads_without_its_bench_section():
    cfg = load_config("configs/learning.yaml", ["trainer.steps=3"])
    assert "bench" not in cfg and cfg.trainer.steps == 3

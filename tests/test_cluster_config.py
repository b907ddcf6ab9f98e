"""The config tree: both shipped configs load and validate, the paper's settings are the paper's, bad input is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cluster.cli import build_parser, main
from cluster.config import ConfigError, TrainConfig, load_config
from rewards.schedule import weights_at

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_tiny_config_is_the_embedded_default():
    cfg = OmegaConf.to_object(load_config(str(CONFIGS / "tiny.yaml")))
    assert isinstance(cfg, TrainConfig)
    assert cfg.ray.address == "" and cfg.rollout.num_workers == 2 and cfg.learner.num_ranks == 1
    assert cfg.rollout.engine == "transformers" and cfg.rollout.num_gpus_per_worker == 0
    assert cfg.models.policy == cfg.models.vlm == cfg.models.judge == "tiny"
    assert cfg.data.source == "synthetic" and cfg.trainer.steps >= 5


def test_paper_config_holds_the_papers_settings():
    cfg = OmegaConf.to_object(load_config(str(CONFIGS / "paper.yaml")))
    assert "Qwen2.5-VL-72B" in cfg.models.vlm and "Qwen2.5-3B" in cfg.models.policy
    assert cfg.perception.vlm.engine == "vllm" and cfg.perception.vlm.tensor_parallel_size > 1
    assert cfg.sampling.num_samples == 8 and cfg.sampling.temperature == 1.0
    assert (cfg.sampling.max_prompt_tokens, cfg.sampling.max_new_tokens) == (6144, 2048)
    assert cfg.trainer.prompts_per_step == 32
    assert cfg.learner.lr == pytest.approx(5e-7) and cfg.learner.warmup_ratio == pytest.approx(0.05)
    assert cfg.learner.grpo.beta == pytest.approx(0.001) and cfg.learner.grpo.kl_estimator == "k3"
    assert cfg.learner.zero_stage == 3 and cfg.learner.precision == "bf16"
    assert cfg.rollout.engine == "vllm"
    # Stages by epoch: 1-2 7:3:0, 3-4 3:7:0, 5-12 1:7:2 (epochs are 0-based in the config).
    expected = {0: (0.7, 0.3, 0.0), 1: (0.7, 0.3, 0.0), 2: (0.3, 0.7, 0.0), 3: (0.3, 0.7, 0.0), 4: (0.1, 0.7, 0.2), 11: (0.1, 0.7, 0.2)}
    for epoch, weights in expected.items():
        stage = weights_at(cfg.rewards, epoch=epoch, step=0)
        assert (stage.format, stage.accuracy, stage.consistency) == pytest.approx(weights), epoch


def test_overrides_apply_and_interpolate():
    cfg = load_config(str(CONFIGS / "tiny.yaml"), ["run_dir=/tmp/somewhere", "trainer.steps=7", "rollout.num_workers=3"])
    assert cfg.trainer.steps == 7 and cfg.rollout.num_workers == 3
    assert cfg.perception.cache_dir == "/tmp/somewhere/perception_cache"


@pytest.mark.parametrize(
    "override, named",
    [
        ("trainer.stepz=3", "stepz"),
        ("trainer.steps=many", "trainer.steps"),
        ("sampling.num_samples=1", "num_samples"),
        ("learner.zero_stage=4", "zero_stage"),
        ("rollout.engine=sglang", "rollout.engine"),
        ("data.source=manifest", "data.manifest"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config(str(CONFIGS / "tiny.yaml"), [override])


def test_missing_config_file_and_malformed_override_are_clear():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["trainer.steps"])


def test_cli_lists_its_subcommands_and_fixed_option_names(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    for command in ("train", "data", "keyframes"):
        assert command in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    train_help = capsys.readouterr().out
    assert "--config FILE" in train_help and "run_dir" in train_help and "trainer.steps" in train_help


def test_cli_reports_a_bad_config_in_one_line(capsys):
    assert main(["train", "--config", "no/such.yaml"]) == 2
    err = capsys.readouterr().err
    assert "no/such.yaml does not exist" in err and "Traceback" not in err

"""The config tree: both shipped configs load and validate, the paper's settings are the paper's, bad input is named."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cluster.cli import build_parser, main
from cluster.config import ConfigError, TrainConfig, load_config
from rewards.schedule import weights_at

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def test_tiny_config_is_the_embedded_default():
    cfg = OmegaConf.to_object(load_config(str(CONFIGS / "tiny.yaml")))
    assert isinstance(cfg, TrainConfig)
    assert cfg.ray.address == "" and cfg.rollout.num_replicas == 2 and cfg.learner.num_replicas == 1
    assert cfg.rollout.engine == "transformers" and cfg.rollout.num_gpus_per_replica == 0
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
    assert cfg.learner.zero_stage == 3 and cfg.learner.dtype == "bfloat16"
    assert cfg.rollout.engine == "vllm"
    # Stages by epoch: 1-2 7:3:0, 3-4 3:7:0, 5-12 1:7:2 (epochs are 0-based in the config).
    expected = {0: (0.7, 0.3, 0.0), 1: (0.7, 0.3, 0.0), 2: (0.3, 0.7, 0.0), 3: (0.3, 0.7, 0.0), 4: (0.1, 0.7, 0.2), 11: (0.1, 0.7, 0.2)}
    for epoch, weights in expected.items():
        stage = weights_at(cfg.rewards, epoch=epoch, step=0)
        assert (stage.format, stage.accuracy, stage.consistency) == pytest.approx(weights), epoch


def test_overrides_apply_and_interpolate():
    cfg = load_config(str(CONFIGS / "tiny.yaml"), ["run_dir=/tmp/somewhere", "trainer.steps=7", "rollout.num_replicas=3"])
    assert cfg.trainer.steps == 7 and cfg.rollout.num_replicas == 3
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


# Every choice: the bad value, and the allowed values the error must list.
BAD_CHOICES = [
    ("learner.grpo.kl_estimator", "k9", "k1, k2, k3"),
    ("learner.grpo.advantage_norm", "batch_std", "group_std, group_mean"),
    ("learner.grpo.loss_aggregation", "token_sum", "token_mean, sequence_mean"),
    ("learner.grpo.old_logprobs", "reference", "learner, rollout"),
    ("learner.grpo.algorithm", "ppo", "grpo, gspo, dr_grpo"),
    ("learner.dtype", "fp16", "float32, bfloat16"),
    ("learner.backend", "mpi", "auto, gloo, nccl"),
    ("learner.zero_stage", "4", "0, 1, 2, 3"),
    ("rollout.engine", "sglang", "transformers, vllm, auto"),
    ("rollout.dtype", "fp8x", "auto, float32, bfloat16, float16"),
    ("perception.vlm.engine", "sglang", "transformers, vllm, openai"),
    ("perception.vlm.dtype", "fp32", "auto, float32, bfloat16, float16"),
    ("perception.source", "captions", "vlm, ground_truth"),
    ("perception.keyframes.ransac_engine", "magsac", "numpy, opencv"),
    ("perception.keyframes.matcher", "flann", "numpy, opencv"),
    ("perception.keyframes.decoder", "ffmpeg", "pyav, opencv"),
    ("perception.keyframes.partial_video", "drop", "skip, keep"),
    ("data.source", "hub", "synthetic, manifest"),
    ("rewards.schedule_unit", "minutes", "epoch, step"),
    ("rewards.judge.dtype", "fp16", "float32, bfloat16, float16, auto"),
    ("rewards.judge.engine", "sglang", "transformers, vllm, openai"),
    ("trainer.max_staleness", "2", "0, 1"),
    ("sft.trace_source", "vlm", "auto, video_text"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_CHOICES, ids=[row[0] for row in BAD_CHOICES])
def test_every_choice_is_checked_at_load_naming_the_key_and_the_allowed_values(key, value, allowed):
    with pytest.raises(ConfigError) as refused:
        load_config(str(CONFIGS / "tiny.yaml"), [f"{key}={value}"])
    assert f"{key} must be one of {allowed}; got " in str(refused.value)


# Every bound: a value out of range and the key the error must name.
BAD_BOUNDS = [
    ("trainer.steps", "0"), ("trainer.prompts_per_step", "0"), ("trainer.checkpoint_every", "-1"),
    ("trainer.keep_checkpoints", "0"), ("trainer.sft_warmup_steps", "-1"), ("trainer.sft_warmup_prompts_per_step", "0"),
    ("trainer.sft_warmup_lr", "0"), ("weight_sync.bucket_mb", "0"), ("weight_sync.timeout_s", "0"),
    ("trainer.max_restarts", "-1"), ("trainer.max_worker_replacements", "-1"),
    ("ray.num_cpus", "0"),
    ("models.tiny.hidden_size", "0"), ("models.tiny.num_heads", "3"), ("models.tiny.vocab_size", "0"),
    ("data.max_records", "-1"), ("data.synthetic.scenes", "0"), ("data.synthetic.frames", "0"), ("data.synthetic.fps", "0"),
    ("perception.num_replicas", "0"), ("perception.num_cpus_per_replica", "-0.5"), ("perception.num_gpus_per_replica", "-1"),
    ("perception.max_in_flight_per_replica", "0"), ("perception.cache_flush_every", "0"), ("perception.torch_threads", "-1"),
    ("perception.keyframes.sample_fps", "0"), ("perception.keyframes.overlap_threshold", "1.5"),
    ("perception.keyframes.min_keyframes", "0"), ("perception.keyframes.max_keyframes", "2"),
    ("perception.keyframes.orb_features", "0"), ("perception.keyframes.ransac_reproj_threshold", "0"),
    ("perception.keyframes.feature_threads", "-1"),
    ("perception.vlm.max_new_tokens", "0"), ("perception.vlm.temperature", "-0.1"), ("perception.vlm.image_size", "0"),
    ("perception.vlm.tensor_parallel_size", "0"), ("perception.vlm.gpu_memory_utilization", "0"),
    ("perception.vlm.gpu_memory_utilization", "1.2"), ("perception.vlm.max_concurrency", "0"),
    ("perception.vlm.timeout_s", "0"), ("perception.vlm.max_retries", "-1"), ("perception.vlm.batch_size", "0"),
    ("rollout.num_replicas", "0"), ("rollout.num_cpus_per_replica", "-1"), ("rollout.num_gpus_per_replica", "-1"),
    ("rollout.tensor_parallel_size", "0"), ("rollout.gpu_memory_utilization", "0"), ("rollout.gpu_memory_utilization", "1.5"),
    ("rollout.generate_batch_size", "0"), ("rollout.max_model_len", "0"),
    ("sampling.num_samples", "1"), ("sampling.temperature", "-1"), ("sampling.top_p", "0"), ("sampling.top_p", "1.1"),
    ("sampling.max_new_tokens", "0"), ("sampling.max_prompt_tokens", "0"),
    ("sampling.min_new_tokens", "-1"), ("sampling.min_new_tokens", "100000"),
    ("rewards.judge.timeout_s", "-1"), ("rewards.judge.timeout_s", "0"), ("rewards.judge.num_replicas", "0"),
    ("rewards.judge.batch_size", "0"), ("rewards.judge.max_think_tokens", "0"), ("rewards.judge.num_cpus_per_replica", "-1"),
    ("rewards.judge.gpu_memory_utilization", "0"), ("rewards.judge.request_timeout_s", "0"),
    ("rewards.judge.max_retries", "-1"), ("rewards.judge.max_concurrency", "0"), ("rewards.judge.top_logprobs", "0"),
    ("rewards.judge.max_restarts", "-2"),
    ("learner.num_replicas", "0"), ("learner.num_cpus_per_replica", "-1"), ("learner.num_gpus_per_replica", "-1"),
    ("learner.lr", "0"), ("learner.weight_decay", "-0.1"), ("learner.warmup_ratio", "1.5"), ("learner.warmup_ratio", "-0.1"),
    ("learner.grad_clip", "-1"), ("learner.micro_batch_size", "0"), ("learner.betas", "[0.9]"), ("learner.betas", "[0.9,1.0]"),
    ("learner.resources.learner_node", "-1"),
    ("learner.grpo.beta", "-0.1"), ("learner.grpo.updates_per_batch", "0"),
    ("learner.grpo.tis_cap", "-1"), ("learner.grpo.max_tokens_norm", "-1"),
    ("sft.lr", "0"), ("sft.prompts_per_step", "0"),
    # learner/algo/checks.py names the clip range as a pair ("learner.grpo clip range needs 0 <= clip_low < 1 ...")
    ("learner.grpo.clip_low", "1.0", r"learner\.grpo clip range needs 0 <= clip_low"),
    ("learner.grpo.clip_high", "-0.1", r"learner\.grpo clip range .* clip_high >= 0"),
    ("learner.grpo.gspo_clip_low", "1.0"), ("learner.grpo.gspo_clip_high", "-1"),
]


@pytest.mark.parametrize("row", BAD_BOUNDS, ids=[f"{row[0]}={row[1]}" for row in BAD_BOUNDS])
def test_every_bound_is_checked_at_load_naming_the_key(row):
    key, value, named = (*row, None) if len(row) == 2 else row
    with pytest.raises(ConfigError, match=named or re.escape(key)):
        load_config(str(CONFIGS / "tiny.yaml"), [f"{key}={value}"])


@pytest.mark.parametrize(
    "stages, named",
    [
        ([{"start": 1}], r"rewards.stages\[0\].start must be 0"),
        ([{"start": 0}, {"start": 3}, {"start": 2}], "sorted by strictly increasing start; got starts \\[0, 3, 2\\]"),
        ([{"start": 0}, {"start": 0}], "sorted by strictly increasing start"),
        ([{"start": -1}], r"rewards.stages\[0\].start must be an integer >= 0"),
        ([{"start": 0}, {"start": 2, "accuracy": -0.5}], r"rewards.stages\[1\].accuracy must be a finite weight >= 0"),
        ([{"start": 0, "format": 0, "accuracy": 0, "consistency": 0}], r"rewards.stages\[0\]: all weights are 0"),
        ([], "rewards.stages is empty"),
    ],
)
def test_reward_stages_are_sorted_by_start_with_non_negative_weights(tmp_path, stages, named):
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump({"rewards": {"stages": stages}}))
    with pytest.raises(ConfigError, match=named):
        load_config(str(path))


def test_the_layers_own_checks_run_at_load():
    # check_grpo_config's cross-key rule and the reward schedule's judge rule, both from the layers' own checks.
    with pytest.raises(ConfigError) as refused:
        load_config(str(CONFIGS / "tiny.yaml"), ["learner.grpo.tis_cap=2", "learner.grpo.old_logprobs=rollout",
                                                 "rewards.judge.enabled=false"])
    assert "learner.grpo.tis_cap > 0 needs learner.grpo.old_logprobs=learner" in str(refused.value)
    assert "the judge is disabled" in str(refused.value)


def test_one_error_lists_every_problem():
    overrides = ["learner.grpo.kl_estimator=k9", "rewards.schedule_unit=minutes", "rollout.dtype=fp8x",
                 "learner.dtype=fp16", "rewards.judge.timeout_s=-1", "learner.grpo.beta=-1"]
    with pytest.raises(ConfigError) as refused:
        load_config(str(CONFIGS / "tiny.yaml"), overrides)
    text = str(refused.value)
    assert "learner.grpo.kl_estimator must be one of k1, k2, k3; got 'k9'" in text
    for key in ("rewards.schedule_unit", "rollout.dtype", "learner.dtype", "rewards.judge.timeout_s", "learner.grpo.beta"):
        assert key in text, key


def _missing_from(loaded, written, path: str = "") -> list[str]:
    """The keys of `written` (a YAML file's tree) whose value the loaded config does not hold, as dotted paths."""
    if isinstance(written, dict):
        return [p for key, value in written.items() for p in _missing_from(loaded.get(key) if isinstance(loaded, dict) else None,
                                                                          value, f"{path}.{key}".lstrip("."))]
    if isinstance(written, list):
        if not isinstance(loaded, list) or len(loaded) != len(written):
            return [path]
        return [p for index, (got, value) in enumerate(zip(loaded, written)) for p in _missing_from(got, value, f"{path}[{index}]")]
    same = loaded == written or (isinstance(written, float | int) and not isinstance(written, bool)
                                 and isinstance(loaded, float | int) and loaded == pytest.approx(written))
    return [] if same else [f"{path}: file {written!r}, loaded {loaded!r}"]


@pytest.mark.parametrize("name", ["tiny.yaml", "paper.yaml", "learning.yaml"])
def test_the_shipped_configs_load_with_every_value_they_write(tmp_path, name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    # configs/learning.yaml carries a `bench:` section that bench/learning_run.py takes out before load_config.
    raw.pop("bench", None)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    loaded = OmegaConf.to_container(load_config(str(path)), resolve=True)
    assert _missing_from(loaded, raw) == []
    # Spot checks of values that differ from the schema defaults, so the file (not the defaults) was read.
    if name == "learning.yaml":
        assert loaded["data"]["synthetic"]["scenes"] == 600 and loaded["sampling"]["num_samples"] == 8
        assert loaded["sampling"]["temperature"] == pytest.approx(0.8) and loaded["models"]["tiny"]["hidden_size"] == 128
    if name == "paper.yaml":
        assert loaded["learner"]["warmup_ratio"] == pytest.approx(0.05) and loaded["learner"]["zero_stage"] == 3


def test_the_schema_defaults_load():
    cfg = OmegaConf.to_object(load_config(None))
    assert isinstance(cfg, TrainConfig) and cfg.sampling.num_samples == 4 and cfg.rollout.num_replicas == 2


def test_the_allowed_values_agree_with_the_layers_own_lists():
    from learner.algo import ALGORITHMS
    from learner.config import GRPO_ALGORITHMS
    from rewards.config import SCHEDULE_UNITS
    from rewards.schedule import SCHEDULE_UNITS as SCHEDULE_UNITS_USED

    assert sorted(GRPO_ALGORITHMS) == sorted(ALGORITHMS) and SCHEDULE_UNITS == SCHEDULE_UNITS_USED


def test_a_bad_value_is_refused_without_importing_torch_or_ray():
    code = (
        "import sys\n"
        "from cluster.config import ConfigError, load_config\n"
        "load_config('configs/tiny.yaml')\n"
        "try:\n"
        "    load_config('configs/tiny.yaml', ['learner.grpo.kl_estimator=k9'])\n"
        "except ConfigError as err:\n"
        "    assert 'learner.grpo.kl_estimator' in str(err)\n"
        "else:\n"
        "    raise SystemExit('not refused')\n"
        "heavy = [name for name in ('torch', 'ray', 'transformers', 'deepspeed', 'vllm') if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


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


def test_the_schema_defaults_are_the_embedded_default():
    """`embodied-r train` with no --config runs configs/tiny.yaml's job: the file only spells the defaults out."""
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(load_config(None)) == OmegaConf.to_container(load_config(str(CONFIGS / "tiny.yaml")))


"""learner.offload: the DeepSpeed config it maps to, the stages it is refused for at load, and (slow) real engines on
the CPU whose losses and weights equal those without offload, with the offloaded state where it was sent.

On a CPU-only machine "offload to the CPU" moves nothing (device and host are the same memory), and every tensor is on
the CPU with or without it; so these tests check that DeepSpeed's optimizer took the offload path and that the learner
moves its reference out and back around each forward, not where tensors end up. The memory drop is a GPU measurement.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cluster.config import ConfigError, load_config
from learner.config import GRPOConfig, LearnerConfig, OffloadConfig
from learner.ds_config import policy_ds_config, reference_ds_config


def _cfg(zero_stage: int, **offload) -> LearnerConfig:
    return LearnerConfig(zero_stage=zero_stage, offload=OffloadConfig(**offload))


@pytest.mark.parametrize("zero_stage", [1, 2, 3])
def test_optimizer_offload_maps_to_deepspeeds_offload_optimizer(zero_stage):
    zero = policy_ds_config(_cfg(zero_stage, optimizer="cpu"), 2, 1, 10)["zero_optimization"]
    assert zero["stage"] == zero_stage
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert "offload_param" not in zero


def test_param_offload_maps_to_offload_param_under_zero3_only():
    zero = policy_ds_config(_cfg(3, param="cpu", optimizer="cpu"), 2, 1, 10)["zero_optimization"]
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_optimizer"]["device"] == "cpu"
    with pytest.raises(ValueError, match="learner.offload.param=cpu needs learner.zero_stage=3"):
        policy_ds_config(_cfg(2, param="cpu"), 2, 1, 10)


def test_no_offload_leaves_the_zero_section_as_it_was():
    for stage in (0, 1, 2, 3):
        zero = policy_ds_config(_cfg(stage), 2, 1, 10)["zero_optimization"]
        assert not {"offload_optimizer", "offload_param"} & zero.keys()
        assert not {"offload_optimizer", "offload_param"} & reference_ds_config(_cfg(stage), 2)["zero_optimization"].keys()


def test_reference_offload_under_zero3_is_deepspeeds_param_offload():
    assert reference_ds_config(_cfg(3, reference=True), 2)["zero_optimization"]["offload_param"]["device"] == "cpu"
    # Below ZeRO-3 the reference is a stage-0 engine that the learner moves itself (learner.engine.reference_on_device).
    zero = reference_ds_config(_cfg(2, reference=True), 2)["zero_optimization"]
    assert zero == {"stage": 0}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["learner.offload.param=cpu", "learner.zero_stage=2"], "learner.offload.param=cpu needs learner.zero_stage=3"),
        (["learner.offload.optimizer=cpu", "learner.zero_stage=0"], "learner.offload.optimizer=cpu needs learner.zero_stage >= 1"),
        (["learner.offload.optimizer=nvme"], "learner.offload.optimizer must be one of none, cpu; got 'nvme'"),
        (["learner.offload.param=gpu", "learner.zero_stage=3"], "learner.offload.param must be one of none, cpu; got 'gpu'"),
        (["learner.lora.r=0"], "learner.lora.r must be >= 1; got 0"),
        (["learner.lora.alpha=0"], "learner.lora.alpha must be > 0; got 0"),
        (["learner.lora.dropout=1.5"], "learner.lora.dropout must be in [0, 1]; got 1.5"),
        (["learner.lora.dropout=1"], "learner.lora.dropout must be < 1"),
        (["learner.lora.enabled=true", "learner.lora.target_modules=[]"], "learner.lora.target_modules is empty"),
    ],
)
def test_config_refuses_offload_and_lora_settings_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_config_accepts_offload_where_deepspeed_has_it():
    cfg = load_config(None, ["learner.zero_stage=3", "learner.offload.param=cpu", "learner.offload.optimizer=cpu",
                             "learner.offload.reference=true", "learner.lora.enabled=true"])
    assert cfg.learner.offload.param == "cpu" and cfg.learner.lora.enabled
    load_config(None, ["learner.zero_stage=1", "learner.offload.optimizer=cpu"])


# ---- real engines on the CPU (in this process, world size 1, gloo) --------------------------------------------------
def _engine_cfg(zero_stage: int, **offload) -> LearnerConfig:
    return LearnerConfig(
        zero_stage=zero_stage, lr=1e-2, warmup_ratio=0.0, micro_batch_size=2, num_cpus_per_replica=1, grad_clip=1e6,
        grpo=GRPOConfig(beta=0.05), offload=OffloadConfig(**offload),
    )


def _history(learner, samples) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Two SFT steps (they move the weights), then two GRPO steps: the losses and KLs seen, and the final weights."""
    from learner.broadcast import iter_full_buckets
    from weightsync import BucketPlan

    tokens = sum(len(s.completion_ids) for s in samples)
    seen = [learner.sft_step(samples, 2, tokens, 1e-2)["nll_sum"] for _ in range(2)]
    for _ in range(2):
        metrics = learner.train_step(samples, 2, tokens, len(samples))
        seen += [metrics["loss"], metrics["kl"]]
    metas = learner.param_metas()
    tensors = [t for bucket in iter_full_buckets(learner.engine.module, BucketPlan.of(metas, 1 << 30)) for t in bucket]
    return seen, {m.name: t for m, t in zip(metas, tensors)}


def _optimizer_offloads(learner) -> dict[str, bool]:
    """What DeepSpeed's ZeRO optimizer itself runs with (ZeRO-1/2 name it cpu_offload, ZeRO-3 offload_optimizer and
    offload_param): the config alone could be read and ignored."""
    optimizer = learner.engine.optimizer
    return {"optimizer": bool(getattr(optimizer, "cpu_offload", False) or getattr(optimizer, "offload_optimizer", False)),
            "param": bool(getattr(optimizer, "offload_param", False))}


class _MoveLog:
    """Records where the reference module is sent (`module.to(...)`), still moving it."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.moves: list[str] = []
        original = module.to

        def to(*args, **kwargs):
            self.moves.append(str(args[0] if args else kwargs.get("device")))
            return original(*args, **kwargs)

        module.to = to


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage, offload", [
    (2, {"optimizer": "cpu", "reference": True}),
    (3, {"optimizer": "cpu", "param": "cpu", "reference": True}),
])
def test_offloaded_engine_takes_the_same_steps_as_without(tiny_policy_path, zero_stage, offload):
    pytest.importorskip("deepspeed")
    from learner_inproc import learner_process_group, make_learner, make_samples

    samples = make_samples(400, [1.0, -0.5, 0.3, -1.2], seed=2)
    with learner_process_group():
        plain = make_learner(_engine_cfg(zero_stage), tiny_policy_path)
        assert _optimizer_offloads(plain) == {"optimizer": False, "param": False}
        expected_losses, expected_weights = _history(plain, samples)
        offloaded = make_learner(_engine_cfg(zero_stage, **offload), tiny_policy_path)
        engine = offloaded.engine
        # DeepSpeed took the settings: ZeRO-Offload of the optimizer (and ZeRO-3's parameter offload), in its config and
        # in the optimizer it built.
        assert engine.zero_cpu_offload()
        assert _optimizer_offloads(offloaded) == {"optimizer": True, "param": bool(offload.get("param"))}
        if offload.get("param"):
            assert engine.zero_offload_param() is not None and engine.zero_offload_param().device == "cpu"
        moves = _MoveLog(offloaded.reference.module)
        losses, weights = _history(offloaded, samples)
        if zero_stage == 3:
            # The reference is partitioned with DeepSpeed's parameter offload, fetched layer by layer for its forward.
            assert offloaded.reference.zero_offload_param().device == "cpu" and moves.moves == []
        else:
            # Below ZeRO-3 the learner moves it to the device for each forward (2 GRPO steps: 2) and back to the CPU.
            assert moves.moves == [str(offloaded.reference.device), "cpu"] * 2, moves.moves
    assert expected_losses[1] < expected_losses[0]  # the steps compared really moved the weights
    assert losses == pytest.approx(expected_losses, rel=1e-5, abs=1e-7)
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert any(not torch.equal(t, plain_t) for t, plain_t in zip(expected_weights.values(), _initial(tiny_policy_path).values()))


def _initial(tiny_policy_path: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(tiny_policy_path, dtype=torch.float32).named_parameters()}


def test_dataclass_defaults_offload_nothing():
    assert dataclasses.asdict(LearnerConfig().offload) == {"optimizer": "none", "param": "none", "reference": False}

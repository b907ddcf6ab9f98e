"""learner.lora: only the adapters train; the workers are sent the merged base model (equal to peft's merge_and_unload,
under the base model's names and shapes); the reference is the base with adapters disabled; a warm-up's fold keeps the
policy; and (slow) a real DeepSpeed rank learns with it, checkpoints and resumes exactly."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("peft")

from learner import lora  # noqa: E402
from learner.broadcast import iter_full_buckets, param_metas  # noqa: E402
from learner.config import GRPOConfig, LearnerConfig, LoRAConfig, QWEN2_PROJECTIONS  # noqa: E402
from weightsync import BucketPlan  # noqa: E402
from learner_inproc import learner_process_group, make_learner, make_samples  # noqa: E402


def _base(tiny_policy_path: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_policy_path, dtype=torch.float32).eval()


def _trained_adapters(tiny_policy_path: str, seed: int = 0) -> torch.nn.Module:
    """A wrapped policy whose adapters are non-zero (B starts at 0, which would make every merge trivially the base)."""
    wrapped = lora.wrap_policy(_base(tiny_policy_path), LoRAConfig(enabled=True, r=4, alpha=8.0)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return wrapped


def _exported(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    metas = param_metas(module)
    tensors = [t for bucket in iter_full_buckets(module, BucketPlan.of(metas, 8 << 10)) for t in bucket]
    return {meta.name: tensor for meta, tensor in zip(metas, tensors, strict=True)}


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_only_the_adapters_of_the_target_projections_train(tiny_policy_path):
    base = _base(tiny_policy_path)
    wrapped = lora.wrap_policy(base, LoRAConfig(enabled=True, r=4))
    trainable = {name: p for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    # Every projection of every layer has its A (r x in) and B (out x r); nothing else (embeddings, norms) trains.
    config = base.config
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}
    assert adapted == set(QWEN2_PROJECTIONS)
    per_layer = sum(4 * (m.in_features + m.out_features) for n, m in base.named_modules()
                    if n.startswith("model.layers.0.") and n.rsplit(".", 1)[-1] in QWEN2_PROJECTIONS)
    assert sum(p.numel() for p in trainable.values()) == per_layer * config.num_hidden_layers
    assert lora.adapter_parameters(wrapped) == list(trainable.values())


def test_target_modules_that_match_nothing_are_refused(tiny_policy_path):
    with pytest.raises(ValueError, match="target_modules"):
        lora.wrap_policy(_base(tiny_policy_path), LoRAConfig(enabled=True, target_modules=["no_such_proj"]))


def test_export_is_the_merged_model_under_the_base_models_names(tiny_policy_path):
    wrapped = _trained_adapters(tiny_policy_path)
    before = {name: p.detach().clone() for name, p in wrapped.named_parameters()}
    exported = _exported(wrapped)
    merged = copy.deepcopy(wrapped).merge_and_unload()
    expected = dict(merged.named_parameters())
    plain = _base(tiny_policy_path)
    # The metas the workers check are those of the plain base model: names, shapes, dtypes.
    assert param_metas(wrapped) == param_metas(plain)
    assert exported.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(exported[name], tensor.detach(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    # The adapters really change the adapted weights (else the comparison above proves nothing) and leave the rest.
    base_weights = dict(plain.named_parameters())
    changed = {name for name in exported if not torch.equal(exported[name], base_weights[name])}
    assert changed == {f"{n}.weight" for n, m in plain.named_modules() if n.rsplit(".", 1)[-1] in QWEN2_PROJECTIONS}
    # Computed per tensor: the policy's own weights are not merged in place.
    assert all(torch.equal(p, before[name]) for name, p in wrapped.named_parameters())
    # The merged export, loaded into a plain model, is the adapted policy.
    plain.load_state_dict(exported, strict=False)
    ids = torch.randint(10, plain.config.vocab_size - 10, (2, 9), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_logits(plain, ids), _logits(wrapped, ids), rtol=1e-4, atol=1e-5)


def test_reference_is_the_base_model_and_fold_keeps_the_policy(tiny_policy_path):
    wrapped = _trained_adapters(tiny_policy_path, seed=1)
    ids = torch.randint(10, 400, (2, 11), generator=torch.Generator().manual_seed(4))
    base_logits = _logits(_base(tiny_policy_path), ids)
    policy_logits = _logits(wrapped, ids)
    with lora.reference_forward(wrapped):
        torch.testing.assert_close(_logits(wrapped, ids), base_logits, rtol=0, atol=0)
    assert (policy_logits - base_logits).abs().max() > 1e-3
    # After a warm-up, the policy becomes the new base: unchanged itself, and the reference now equals it.
    lora.fold_adapters(wrapped, rank=0)
    folded_logits = _logits(wrapped, ids)
    torch.testing.assert_close(folded_logits, policy_logits, rtol=1e-4, atol=1e-5)
    with lora.reference_forward(wrapped):
        reference_logits = _logits(wrapped, ids)
    # With the adapters folded in (B = 0) the reference (adapters off) and the policy (adapters on) are one model.
    torch.testing.assert_close(reference_logits, folded_logits, rtol=0, atol=0)
    torch.testing.assert_close(reference_logits, policy_logits, rtol=1e-4, atol=1e-5)
    assert (reference_logits - base_logits).abs().max() > 1e-3  # the reference moved off the old base
    assert all(not p.any() for name, p in wrapped.named_parameters() if ".lora_B." in name)


# ---- a real DeepSpeed rank (in this process, world size 1, gloo) -----------------------------------------------------
def _config(zero_stage: int, beta: float = 0.05) -> LearnerConfig:
    return LearnerConfig(
        zero_stage=zero_stage, lr=1e-2, warmup_ratio=0.0, micro_batch_size=2, num_cpus_per_replica=1, grad_clip=1e6,
        grpo=GRPOConfig(beta=beta), lora=LoRAConfig(enabled=True, r=4, alpha=8.0),
    )


def _tokens(samples) -> int:
    return sum(len(s.completion_ids) for s in samples)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_deepspeed_lora_learns_broadcasts_the_base_shapes_and_resumes_exactly(tiny_policy_path, zero_stage, tmp_path):
    samples = make_samples(400, [1.0, -0.5, 0.3, -1.2], seed=1)
    with learner_process_group():
        learner = make_learner(_config(zero_stage), tiny_policy_path)
        assert learner.describe()["lora"] and learner.reference is None and learner.has_reference
        # Adam's states exist for the adapters only: the optimiser's memory is that of ~8k parameters, not the model's.
        trainable = learner.describe()["trainable_params"]
        total = sum(p.numel() for p in _base(tiny_policy_path).parameters())
        assert 0 < trainable < total / 10
        # The broadcast describes the plain base model, so the workers need no change.
        plan = BucketPlan.of(learner.param_metas(), 64 << 20)
        assert plan.metas == param_metas(_base(tiny_policy_path))
        initial = learner.weights_digest(plan)

        # The reference is the untouched base: KL is exactly 0 before any update.
        first = learner.train_step(samples, 2, _tokens(samples), len(samples))
        assert first["kl"] == 0.0
        nll = [learner.sft_step(samples, 2, _tokens(samples), 1e-2)["nll_sum"] for _ in range(3)]
        assert nll[2] < nll[1] < nll[0]
        assert learner.weights_digest(plan) != initial  # what the workers get moves with the adapters
        assert learner.train_step(samples, 2, _tokens(samples), len(samples))["kl"] > 0

        # A warm-up's end folds the adapters into the base: the reference is the warmed policy again.
        learner.restart_from_current_policy()
        # B is 0 in the optimiser's own fp32 copy too: otherwise the next step would put the folded adapters back.
        from deepspeed.utils import safe_get_full_fp32_param

        lora_b = [p for name, p in learner.engine.module.named_parameters() if ".lora_B." in name]
        assert lora_b and all(not safe_get_full_fp32_param(p).any() for p in lora_b)
        assert learner.train_step(samples, 2, _tokens(samples), len(samples))["kl"] == 0.0
        learner.train_step(samples, 2, _tokens(samples), len(samples))
        checkpoint = learner.save_checkpoint(str(tmp_path / "step"), {"step": 3})
        assert {p.name for p in (tmp_path / "step").iterdir()} >= {"policy", "base", "adapter", "deepspeed"}
        # DeepSpeed's part holds the adapters but no copy of the frozen base layers (those are in base/).
        module_files = list((tmp_path / "step" / "deepspeed").rglob("*model_states.pt"))
        saved_names = {name for f in module_files for name in torch.load(f, weights_only=False)["module"]}
        assert any(".lora_A." in name for name in saved_names)
        assert not any(".base_layer." in name for name in saved_names)
        after_save = learner.weights_digest(plan)
        next_step = learner.train_step(samples, 2, _tokens(samples), len(samples))

        resumed = make_learner(_config(zero_stage), tiny_policy_path)
        assert resumed.load_checkpoint(checkpoint)["step"] == 3
        assert resumed.weights_digest(plan) == after_save  # the folded base and the adapters both came back
        again = resumed.train_step(samples, 2, _tokens(samples), len(samples))
        assert again["kl"] == pytest.approx(next_step["kl"], rel=1e-6, abs=1e-9) and again["kl"] > 0
        assert again["loss"] == pytest.approx(next_step["loss"], rel=1e-6)
        assert resumed.weights_digest(plan) == learner.weights_digest(plan)  # the optimiser's moments came back too

    # policy/ is the merged model in plain HF format: what eval and a fresh rollout worker load.
    from weightsync import weights_digest

    saved = _base(f"{checkpoint}/policy")
    assert param_metas(saved) == plan.metas
    assert weights_digest(list(_exported(saved).items())) == after_save

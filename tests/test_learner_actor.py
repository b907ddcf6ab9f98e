"""The DeepSpeed learner as real Ray actors on CPU (gloo): data parallelism and ZeRO-3 are exact, a zero-advantage step
moves nothing, SFT and the reference restart work, checkpoints round-trip, and the weight broadcast sends what it holds.

Three groups are built once (ZeRO-2 x1, ZeRO-2 x2, ZeRO-3 x2) and take the same steps in the same order, so their
weights stay comparable; a fourth (ZeRO-2 x1) is built only to load a checkpoint. A fifth (ZeRO-2 x1, beta 0) checks the
learner.grpo options that only a real engine can: no reference model, mu > 1 updates, rollout log-probs as pi_old.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("deepspeed")

pytestmark = pytest.mark.slow  # every test here runs DeepSpeed learner ranks as Ray actors

from cluster.learner_group import LearnerGroup  # noqa: E402
from actors import reserve_pool  # noqa: E402
from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer  # noqa: E402
from learner.batch import Sample, completion_logprobs, pack  # noqa: E402
from learner_inproc import make_samples  # noqa: E402  (packed-batch samples shared with the in-process learner tests)
from learner.broadcast import iter_full_buckets  # noqa: E402
from learner.config import GRPOConfig, LearnerConfig  # noqa: E402
from weightsync import BucketPlan, create_weight_group, receive_weights, weights_digest  # noqa: E402
from weightsync.group import free_port  # noqa: E402

# DeepSpeed compiles its CPU comm op once per machine (~30-60 s); a stable cache folder pays that only the first time.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "embodied-r" / "torch_extensions"))
torch.set_num_threads(1)
# The helpers below run inside the learner actors (via __ray_call__); the actors cannot import this test module by
# name, so ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

LR = 1e-2
TEXTS = [f"Frame {i}: After rotate {d}, Observe: a {c} lamp is {d} of you." for i in range(20) for d in ("left", "right") for c in ("red", "blue")]


def _config(num_replicas: int, zero_stage: int, grpo: GRPOConfig | None = None) -> LearnerConfig:
    return LearnerConfig(
        num_replicas=num_replicas,
        num_cpus_per_replica=0.25,  # 6 ranks are alive at once on a 2-CPU Ray; each still gets one torch thread
        zero_stage=zero_stage,
        dtype="float32",
        lr=LR,
        warmup_ratio=0.0,
        grad_clip=1e6,  # never clips: the comparisons below are of unclipped Adam steps
        micro_batch_size=2,  # 5 samples: 3 micro-batches on one rank, 2 (one of them an empty filler) on the second of two
        grpo=grpo or GRPOConfig(beta=0.05),
    )


# ---- helpers that run on every rank of a group ----------------------------------------------------------------------
def _rank_full_weights(learner, metas) -> dict[str, torch.Tensor] | None:
    """Full (gathered under ZeRO-3) fp32 copies of the policy's parameters; rank 0 returns them."""
    out: dict[str, torch.Tensor] = {}
    plan = BucketPlan.of(metas, 1 << 30)
    for bucket, tensors in zip(plan, iter_full_buckets(learner.engine.module, plan)):
        out.update({meta.name: tensor for meta, tensor in zip(bucket, tensors)})
    return out if learner.rank == 0 else None


def full_weights(group: LearnerGroup) -> dict[str, torch.Tensor]:
    metas = group.param_metas(None)
    return ray.get([rank.__ray_call__.remote(_rank_full_weights, metas) for rank in group.ranks])[0]


def _rank_full_first_moments(learner) -> dict[str, torch.Tensor] | None:
    """Adam's exp_avg of every parameter, gathered across ranks (a collective under ZeRO-3); rank 0 returns them."""
    from deepspeed.utils import safe_get_full_optimizer_state

    out = {name: safe_get_full_optimizer_state(param, "exp_avg").clone() for name, param in learner.engine.module.named_parameters()}
    return out if learner.rank == 0 else None


def full_first_moments(group: LearnerGroup) -> dict[str, torch.Tensor]:
    return ray.get([rank.__ray_call__.remote(_rank_full_first_moments) for rank in group.ranks])[0]


def assert_gradients_close(actual: dict, expected: dict) -> None:
    """Adam's first moment after the zero step and one real step is exactly (1 - beta1) * gradient: linear in the
    gradient, so it compares the gradients themselves. Float summation order may differ between ranks and stages; its
    error is bounded by the size of the summands, so each tensor gets an absolute tolerance of 1e-5 of its largest
    element besides the 1e-5 relative one: a missing or doubled sample, or a mis-scaled rank, is far outside both."""
    assert actual.keys() == expected.keys()
    for name in expected:
        scale = expected[name].abs().max().item()
        assert scale > 0, f"{name}: no gradient at all"
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")


def assert_weights_close(actual: dict, expected: dict, moments: dict) -> None:
    """Equal up to float summation order. Adam's first step moves a weight by about lr * g / (|g| + eps): where a
    gradient element is within a thousand eps of 0, its rounding noise is magnified by up to lr / eps (1e6 here),
    so those elements may differ by up to one step (their gradients are compared by assert_gradients_close); every other
    element must agree to 1e-5 relative plus 0.1% of a step."""
    rtol, atol = 1e-5, 1e-3 * LR
    assert actual.keys() == expected.keys()
    for name in expected:
        gradient = moments[name] / 0.1  # exp_avg = (1 - beta1) * g on this step
        magnified = gradient.abs() < 1e3 * 1e-8  # Adam's eps is 1e-8
        tolerance = torch.where(magnified, torch.full_like(gradient, 1.01 * LR), atol + rtol * expected[name].abs())
        difference = (actual[name] - expected[name]).abs()
        worst = (difference - tolerance).max().item()
        assert worst <= 0, f"{name}: {int((difference > tolerance).sum())} elements differ beyond tolerance (worst excess {worst:.3g})"


def assert_weights_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    unequal = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert not unequal, f"parameters differ: {unequal}"


def max_change(after: dict, before: dict) -> float:
    return max((after[n] - before[n]).abs().max().item() for n in before)


# ---- fixtures -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tiny")
    return build_tiny_causal_lm(train_tokenizer(TEXTS, root / "tokenizer"), root / "policy", seed=0)


@pytest.fixture(scope="module")
def vocab(model_path) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path).vocab_size


class Groups:
    """Creates groups in their own pools and tears all of them down at the end of the module."""

    def __init__(self, model_path: str, prefix: str = "learner"):
        self.model_path = model_path
        self.prefix = prefix  # placement-group names are cluster-wide: each Groups needs its own
        self.live: list[tuple[LearnerGroup, object]] = []
        self.created = 0  # placement-group names stay unique even after a group is destroyed

    def create(self, num_replicas: int, zero_stage: int, grpo: GRPOConfig | None = None) -> LearnerGroup:
        cfg = _config(num_replicas, zero_stage, grpo)
        self.created += 1
        pool = reserve_pool(f"{self.prefix}-z{zero_stage}x{num_replicas}-{self.created}", num_replicas, cfg.num_cpus_per_replica, 0.0, timeout_s=30)
        try:
            group = LearnerGroup(cfg, self.model_path, pool, total_steps=10, seed=0)
        except Exception:
            pool.release()
            raise
        self.live.append((group, pool))
        return group

    def destroy(self, group: LearnerGroup) -> None:
        for index, (live_group, pool) in enumerate(self.live):
            if live_group is group:
                group.shutdown()
                pool.release()
                del self.live[index]
                return

    def close(self) -> None:
        for group, pool in self.live:
            group.shutdown()
            pool.release()
        self.live.clear()


@pytest.fixture(scope="module")
def groups(ray_local, model_path):
    made = Groups(model_path)
    try:
        yield {
            "z2x1": made.create(1, 2),
            "z2x2": made.create(2, 2),
            "z3x2": made.create(2, 3),
            "factory": made,
        }
    finally:
        made.close()


@pytest.fixture(scope="module")
def grpo_batch(vocab) -> list[Sample]:
    return make_samples(vocab, [1.0, -0.5, 0.3, -1.2, 0.4], seed=1)


@pytest.fixture(scope="module")
def first_steps(groups, grpo_batch) -> dict[str, dict]:
    """Each group's initial weights, a zero-advantage step, then one GRPO step on `grpo_batch`: the same history
    everywhere (the zero step still advances Adam's step count, so every group must take it)."""
    zero_batch = [Sample(s.prompt_ids, s.completion_ids, s.rollout_logprobs, 0.0) for s in grpo_batch]
    records = {}
    for name in ("z2x1", "z2x2", "z3x2"):
        group = groups[name]
        initial = full_weights(group)
        zero_metrics = group.train_step(zero_batch)
        after_zero = full_weights(group)
        metrics = group.train_step(grpo_batch)
        records[name] = {
            "initial": initial, "zero_metrics": zero_metrics, "after_zero": after_zero, "metrics": metrics,
            "after": full_weights(group), "moments": full_first_moments(group),
        }
    return records


# ---- tests ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["z2x1", "z2x2", "z3x2"])
def test_zero_advantage_first_step_leaves_weights_unchanged(first_steps, name):
    # Policy == reference and every advantage 0: the k3 KL's gradient and the policy-gradient term are both exactly 0,
    # so any change would be a stray gradient (e.g. from the empty filler micro-batch on the second rank).
    record = first_steps[name]
    assert record["zero_metrics"]["kl"] == 0.0 and record["zero_metrics"]["loss"] == 0.0
    assert record["zero_metrics"]["grad_norm"] == 0.0
    assert_weights_equal(record["after_zero"], record["initial"])


def test_data_parallel_step_equals_single_rank_step(first_steps):
    one, two = first_steps["z2x1"], first_steps["z2x2"]
    assert_weights_equal(two["initial"], one["initial"])
    # The step did something: Adam's first update moves every parameter with a gradient by about lr.
    assert max_change(one["after"], one["initial"]) > LR / 2
    for key in ("loss", "kl", "grad_norm", "clip_fraction", "logprob_mismatch"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-5, abs=1e-9), key
    assert one["metrics"]["loss"] != 0.0 and one["metrics"]["grad_norm"] > 0
    assert one["metrics"]["lr"] == pytest.approx(LR)
    # Adam's first step hardly depends on the gradient's scale, so the weights check the gradient's direction (every
    # sample counted once, on some rank) and the grad norm above checks its scale (the per-rank loss scaling).
    assert_gradients_close(two["moments"], one["moments"])
    assert_weights_close(two["after"], one["after"], one["moments"])


def test_zero3_step_equals_zero2_step(first_steps):
    zero2, zero3 = first_steps["z2x1"], first_steps["z3x2"]
    assert_weights_equal(zero3["initial"], zero2["initial"])
    for key in ("loss", "kl", "grad_norm"):
        assert zero3["metrics"][key] == pytest.approx(zero2["metrics"][key], rel=1e-5, abs=1e-9), key
    assert_gradients_close(zero3["moments"], zero2["moments"])
    assert_weights_close(zero3["after"], zero2["after"], zero2["moments"])


def _set_lr(learner, lr: float) -> None:
    for group in learner.engine.optimizer.param_groups:
        group["lr"] = lr


def test_mask_truncated_counts_the_tokens_left_in_the_loss_over_every_rank(groups, first_steps, grpo_batch):
    """learner.grpo.mask_truncated on two ranks: the ranks hold different numbers of truncated samples, so only the
    all-reduce of the tokens left makes the loss the whole batch's. It must equal the loss of the batch without the
    truncated samples (same weights: lr 0 here, so neither step moves them)."""
    group = groups["z2x2"]
    cut = {0, 2}  # round-robin shards: both on rank 0
    marked = [dataclasses.replace(s, truncated=i in cut) for i, s in enumerate(grpo_batch)]
    shards, _, _ = group._shard(marked, group.cfg.micro_batch_size)
    per_rank = [sum(s.truncated for s in shard) for shard in shards]
    assert len(set(per_rank)) > 1, per_rank  # unequal per rank: a rank's own count would give another loss
    ray.get([rank.__ray_call__.remote(_set_lr, 0.0) for rank in group.ranks])
    try:
        ray.get([rank.__ray_call__.remote(_set_grpo, mask_truncated=True) for rank in group.ranks])
        masked = group.train_step(marked)
        ray.get([rank.__ray_call__.remote(_set_grpo, mask_truncated=False) for rank in group.ranks])
        kept = group.train_step([s for i, s in enumerate(grpo_batch) if i not in cut])
    finally:
        ray.get([rank.__ray_call__.remote(_set_grpo, mask_truncated=False) for rank in group.ranks])
        ray.get([rank.__ray_call__.remote(_set_lr, LR) for rank in group.ranks])
    assert masked["truncated_masked"] == len(cut)
    for key in ("loss", "kl"):
        assert masked[key] == pytest.approx(kept[key], rel=1e-5, abs=1e-9), key
    assert masked["loss"] != 0.0


@pytest.mark.parametrize("name", ["z2x2", "z3x2"])
def test_sft_lowers_nll_and_restart_makes_reference_the_policy(groups, first_steps, grpo_batch, vocab, name):
    group = groups[name]
    targets = make_samples(vocab, [0.0] * 4, seed=2)
    nlls = [group.sft_step(targets, lr=3e-3) for _ in range(4)]
    assert all(later < earlier for earlier, later in zip(nlls, nlls[1:])), nlls
    assert nlls[-1] < nlls[0] - 0.1, nlls

    # The policy has moved away from the reference: the KL is positive until the reference is reset to the policy.
    before = group.train_step(grpo_batch)
    assert before["kl"] > 1e-6
    assert before["lr"] == pytest.approx(LR)  # (with a warm-up schedule running: tests/test_learner_schedule.py)
    group.restart_from_current_policy()
    after = group.train_step(grpo_batch)
    assert after["kl"] == 0.0, after


def test_zero2_checkpoint_round_trip_into_a_fresh_group(groups, first_steps, grpo_batch, tmp_path):
    from transformers import AutoModelForCausalLM

    source = groups["z2x1"]
    checkpoint = tmp_path / "step_3"
    assert source.save_checkpoint(str(checkpoint), {"step": 3}) == str(checkpoint)
    assert (checkpoint / "deepspeed").is_dir() and (checkpoint / "policy").is_dir()
    assert not list(tmp_path.glob("*.tmp")), "the temporary folder was left behind"
    saved = full_weights(source)
    hf = dict(AutoModelForCausalLM.from_pretrained(checkpoint / "policy").named_parameters())
    assert_weights_equal({n: p.detach() for n, p in hf.items()}, saved)

    # The source goes on one step; a fresh group that loads the checkpoint and takes the same step must land on the same
    # weights, which needs the optimiser's moments and step count restored as well as the weights.
    source.train_step(grpo_batch)
    continued = full_weights(source)
    assert max_change(continued, saved) > 0
    fresh = groups["factory"].create(1, 2)
    try:
        assert max_change(full_weights(fresh), saved) > 0  # it starts from the initial weights, not the checkpoint's
        client_state = fresh.load_checkpoint(str(checkpoint))
        assert client_state.get("step") == 3
        assert_weights_equal(full_weights(fresh), saved)
        fresh.train_step(grpo_batch)
        assert_weights_equal(full_weights(fresh), continued)
    finally:
        groups["factory"].destroy(fresh)


def test_zero3_checkpoint_writes_full_policy_and_restores(groups, first_steps, grpo_batch, tmp_path):
    from transformers import AutoModelForCausalLM

    group = groups["z3x2"]
    checkpoint = tmp_path / "step_5"
    group.save_checkpoint(str(checkpoint), {"step": 5})
    assert not (tmp_path / "step_5.tmp").exists()
    saved = full_weights(group)
    hf = AutoModelForCausalLM.from_pretrained(checkpoint / "policy")
    assert_weights_equal({n: p.detach() for n, p in hf.named_parameters()}, saved)

    group.train_step(grpo_batch)
    assert max_change(full_weights(group), saved) > 0
    assert group.load_checkpoint(str(checkpoint)).get("step") == 5
    assert_weights_equal(full_weights(group), saved)


@pytest.mark.parametrize("name,wire_dtype", [("z2x1", None), ("z3x2", None), ("z3x2", "bfloat16")])
def test_weight_broadcast_delivers_the_learners_weights(groups, first_steps, name, wire_dtype):
    group = groups[name]
    metas = group.param_metas(wire_dtype)
    plan = BucketPlan.of(metas, 64 << 10)  # several buckets, so ZeRO-3 gathers bucket by bucket
    assert len(plan) > 2
    port = free_port()
    joins = group.init_weight_group_refs("gloo", "127.0.0.1", port, 2, 60.0)
    receiver = create_weight_group("gloo", "127.0.0.1", port, 2, 1, timeout_s=60.0)  # blocks until rank 0 has joined
    ray.get(joins)
    sends = group.broadcast_refs(plan)
    received = {}
    for bucket in receive_weights(receiver, plan):
        received.update({n: t.clone() for n, t in bucket})
    reports = ray.get(sends)
    receiver.close()

    assert reports[0]["bytes"] == sum(m.nbytes for m in metas)
    assert all(r["bytes"] == 0 for r in reports[1:])  # only rank 0 sends; the others only join the gathers
    assert {n: tuple(t.shape) for n, t in received.items()} == {m.name: m.shape for m in metas}
    assert weights_digest(received.items()) == group.weights_digest(plan)
    expected = {n: t.to(metas[0].torch_dtype) for n, t in full_weights(group).items()}
    assert_weights_equal(received, expected)


# ---- learner.grpo options on a real engine ---------------------------------------------------------------------------
def _set_grpo(learner, **fields) -> None:
    learner.cfg.grpo = dataclasses.replace(learner.cfg.grpo, **fields)


def _has_reference(learner) -> bool:
    return learner.reference is not None


def _completion_logprobs(learner, samples: list[Sample]) -> list[list[float]]:
    with torch.no_grad():
        logprobs = completion_logprobs(learner.engine, pack(samples, learner.pad_id))
    return [logprobs[row, : len(s.completion_ids)].tolist() for row, s in enumerate(samples)]


@pytest.fixture(scope="module")
def options_group(ray_local, model_path):
    made = Groups(model_path, prefix="options")
    try:
        yield made.create(1, 2, grpo=GRPOConfig(beta=0.0, clip_low=0.2, clip_high=0.2))
    finally:
        made.close()


def rank_train_step(group: LearnerGroup, samples: list[Sample], **grpo_fields) -> dict:
    """One train_step on the single rank with these learner.grpo settings, returning its per-update statistics too."""
    ray.get(group.ranks[0].__ray_call__.remote(_set_grpo, **grpo_fields))
    _, num_micro, tokens = group._shard(samples, group.cfg.micro_batch_size)
    return ray.get(group.ranks[0].train_step.remote(samples, num_micro, tokens, len(samples)))


def test_beta_zero_builds_no_reference_and_kl_is_zero(options_group, grpo_batch):
    assert options_group.info["reference"] is False
    assert ray.get(options_group.ranks[0].__ray_call__.remote(_has_reference)) is False
    metrics = rank_train_step(options_group, grpo_batch, updates_per_batch=1, old_logprobs="learner")
    assert metrics["kl"] == 0.0 and metrics["kl_sum"] == 0.0
    assert metrics["loss"] != 0.0 and metrics["grad_norm"] > 0  # the policy-gradient term still trains


def test_second_update_moves_the_ratio_and_engages_the_clip(options_group, grpo_batch):
    metrics = rank_train_step(options_group, grpo_batch, updates_per_batch=2, old_logprobs="learner")
    first, second = metrics["updates"]
    # Update 1 runs on the weights pi_old was taken from: every ratio is exactly 1 and nothing is clipped.
    assert first["ratio_min"] == first["ratio_max"] == 1.0 and first["clipped_tokens"] == 0
    # Update 2 runs after one Adam step (lr 1e-2): the ratios leave [0.8, 1.2] and the clip takes tokens out.
    assert second["tokens"] == first["tokens"] == metrics["tokens"]
    assert second["ratio_max"] > 1.2 or second["ratio_min"] < 0.8, second
    assert second["clipped_tokens"] > 0
    assert second["loss"] != first["loss"]
    assert metrics["clip_fraction"] == pytest.approx(second["clipped_tokens"] / 2 / metrics["tokens"])


def test_rollout_old_logprobs_make_the_ratio_exp_learner_minus_rollout(options_group, grpo_batch):
    learner_logprobs = ray.get(options_group.ranks[0].__ray_call__.remote(_completion_logprobs, grpo_batch))
    # The engine's log-probs differ from the learner's by up to +-0.4 per token, as a low-precision engine might.
    gen = torch.Generator().manual_seed(3)
    offsets = [((torch.rand(len(lp), generator=gen) - 0.5) * 0.8).tolist() for lp in learner_logprobs]
    samples = [
        Sample(s.prompt_ids, s.completion_ids, [lp - off for lp, off in zip(lps, offs)], s.advantage)
        for s, lps, offs in zip(grpo_batch, learner_logprobs, offsets)
    ]
    ratios = [(math.exp(off), s.advantage) for s, offs in zip(samples, offsets) for off in offs]
    tokens = len(ratios)
    expected_loss = sum(-min(r * a, min(max(r, 0.8), 1.2) * a) for r, a in ratios) / tokens
    expected_clipped = sum((a > 0 and r > 1.2) or (a < 0 and r < 0.8) for r, a in ratios)
    assert expected_clipped > 0  # the batch reaches past the clip range, so the clipped count is checked too

    metrics = rank_train_step(options_group, samples, updates_per_batch=1, old_logprobs="rollout")
    (first,) = metrics["updates"]
    assert first["tokens"] == tokens
    assert first["ratio_mean"] == pytest.approx(sum(r for r, _ in ratios) / tokens, rel=1e-5)
    assert first["ratio_min"] == pytest.approx(min(r for r, _ in ratios), rel=1e-5)
    assert first["ratio_max"] == pytest.approx(max(r for r, _ in ratios), rel=1e-5)
    assert first["clipped_tokens"] == expected_clipped
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["logprob_mismatch"] == pytest.approx(sum(abs(o) for offs in offsets for o in offs) / tokens, rel=1e-4)


def test_rollout_old_logprobs_need_one_per_completion_token(options_group, grpo_batch):
    short = [Sample(s.prompt_ids, s.completion_ids, s.rollout_logprobs[:-1], s.advantage) for s in grpo_batch]
    with pytest.raises(ray.exceptions.RayTaskError, match="sample 0: learner.grpo.old_logprobs=rollout needs one finite"):
        rank_train_step(options_group, short, updates_per_batch=1, old_logprobs="rollout")


def test_tis_weights_are_pi_old_over_the_sampler_capped(options_group, grpo_batch):
    """learner.grpo.tis_cap on a real engine: each token's weight is exp(learner - sampler log-prob), capped; with
    pi_old the learner's own (ratio 1) the loss is -mean(capped weight x advantage), and the statistics are those of
    the uncapped weights."""
    cap = 1.2
    learner_logprobs = ray.get(options_group.ranks[0].__ray_call__.remote(_completion_logprobs, grpo_batch))
    gen = torch.Generator().manual_seed(5)
    offsets = [((torch.rand(len(lp), generator=gen) - 0.5) * 0.8).tolist() for lp in learner_logprobs]
    samples = [
        Sample(s.prompt_ids, s.completion_ids, [lp - off for lp, off in zip(lps, offs)], s.advantage)
        for s, lps, offs in zip(grpo_batch, learner_logprobs, offsets)
    ]
    weights = [(math.exp(off), s.advantage) for s, offs in zip(samples, offsets) for off in offs]
    tokens = len(weights)
    assert any(w > cap for w, _ in weights) and any(w < 1 for w, _ in weights)
    try:
        metrics = rank_train_step(options_group, samples, updates_per_batch=1, old_logprobs="learner", tis_cap=cap)
    finally:
        ray.get(options_group.ranks[0].__ray_call__.remote(_set_grpo, tis_cap=0.0))
    assert metrics["tis/weight_mean"] == pytest.approx(sum(w for w, _ in weights) / tokens, rel=1e-5)
    assert metrics["tis/weight_max"] == pytest.approx(max(w for w, _ in weights), rel=1e-5)
    assert metrics["tis/capped_fraction"] == pytest.approx(sum(w > cap for w, _ in weights) / tokens)
    assert metrics["loss"] == pytest.approx(sum(-min(w, cap) * a for w, a in weights) / tokens, rel=1e-5)

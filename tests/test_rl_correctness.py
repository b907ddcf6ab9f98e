"""The RL core's correctness findings (issue 22), each as the behaviour that matters: the learner's log-probs at the
sampler's temperature, epoch labels and batches at an epoch boundary, the judge reading a long reasoning's conclusion,
the KL estimators' gradients, failed judgements excluded from the advantages, the wire dtype of rollout.dtype=auto,
every RNG in a checkpoint, the staleness warning, and the shared-memory handshake.
(The rollout pool's replacement and version stamps, which need Ray, are in test_rl_correctness_ray.py.)"""

from __future__ import annotations

import datetime
import json
import math
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from cluster.data import EpochSampler
from learner.algo import make_algorithm
from learner.algo.checks import check_grpo_config
from learner.algo.grpo import group_advantages
from learner.batch import Sample, completion_logprobs, pack
from learner.config import GRPOConfig, LearnerConfig
from learner.kl import kl_estimate
from learner_inproc import learner_process_group, tiny_policy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> str:
    return tiny_policy(tmp_path_factory.mktemp("rl_correctness"))


def _sampled(policy: str, temperature: float, top_p: float = 1.0):
    """G completions per prompt from the real transformers rollout engine, as Samples (advantage +-1)."""
    from transformers import AutoTokenizer

    from rollout.config import SamplingConfig
    from rollout.engines.hf_engine import HFEngine

    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Frame 0: After rotate left,", "a red lamp is")]
    engine = HFEngine(policy, generate_batch_size=8)
    sampling = SamplingConfig(num_samples=4, temperature=temperature, top_p=top_p, max_new_tokens=12)
    groups = engine.generate(prompts, sampling, [3, 4])
    return [Sample(c.prompt_token_ids, c.token_ids, c.logprobs, 1.0 if i % 2 else -1.0)
            for group in groups for i, c in enumerate(group)]


# ---- 1. log-probs at the sampling temperature ---------------------------------------------------------------------
def test_learner_logprobs_are_the_samplers_at_its_temperature(policy):
    """The engine reports log_softmax(logits / T) of what it drew; the learner's pass over the same weights must give
    the same numbers at T (and not at 1, the old behaviour, which is off by far more than float rounding)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
    samples = _sampled(policy, temperature=0.8)
    batch = pack(samples, pad_id=0)
    with torch.no_grad():
        at_t = completion_logprobs(model, batch, temperature=0.8)
        at_one = completion_logprobs(model, batch)
    mask = batch.completion_mask.bool()
    assert (at_t - batch.rollout_logprobs)[mask].abs().max().item() < 1e-4
    assert (at_one - batch.rollout_logprobs)[mask].abs().max().item() > 1e-2
    # Greedy decoding (temperature 0) reports the untempered log-probs, and so does the learner.
    with torch.no_grad():
        assert torch.equal(completion_logprobs(model, batch, temperature=0.0), at_one)


@pytest.mark.slow
@pytest.mark.parametrize("old_logprobs", ["learner", "rollout"])
def test_a_grpo_step_at_temperature_0_8_sees_no_mismatch_without_staleness(policy, old_logprobs):
    """A real DeepSpeed learner, the same weights as the sampler, no staleness: the TIS weights are 1 (not pi_1/pi_T),
    the engine/learner mismatch is rounding, and with old_logprobs=rollout the first update's ratio is 1 (no clipping
    where nothing is off-policy)."""
    from learner.actor import Learner

    samples = _sampled(policy, temperature=0.8)
    tis_cap = 2.0 if old_logprobs == "learner" else 0.0
    cfg = LearnerConfig(zero_stage=2, lr=1e-3, micro_batch_size=4, num_cpus_per_replica=1,
                        grpo=GRPOConfig(beta=0.001, old_logprobs=old_logprobs, tis_cap=tis_cap))
    with learner_process_group():
        learner = Learner(cfg, policy, rank=0, world_size=1, total_steps=4, seed=0, sampling_temperature=0.8)
        learner.setup(*learner.host_rendezvous())
        metrics = learner.train_step(samples, 2, sum(len(s.completion_ids) for s in samples), len(samples))
    assert metrics["logprob_mismatch"] < 1e-4
    if old_logprobs == "learner":
        assert abs(metrics["tis/weight_mean"] - 1.0) < 1e-3 and metrics["tis/capped_fraction"] == 0.0
    else:
        assert abs(metrics["updates"][0]["ratio_mean"] - 1.0) < 1e-4 and metrics["clip_fraction"] == 0.0


# ---- 2, 3. the epoch sampler at an epoch boundary ------------------------------------------------------------------
def test_a_take_that_starts_a_new_epoch_is_labelled_with_it():
    sampler = EpochSampler(8, 0)
    assert sampler.take(4)[1] == 0 and sampler.take(4)[1] == 0
    indices, epoch = sampler.take(4)
    assert epoch == 1
    assert indices == EpochSampler(8, 0)._shuffle(1, [])[:4]  # drawn from epoch 1's order


@pytest.mark.parametrize("size,count", [(5, 3), (7, 4), (6, 6), (9, 2), (10, 7)])
def test_no_batch_holds_an_index_twice_and_every_epoch_deals_each_once(size, count):
    sampler = EpochSampler(size, seed=3)
    dealt: list[int] = []
    for _ in range(4 * size):
        indices, _ = sampler.take(count)
        assert len(set(indices)) == count, indices
        dealt += indices
    for epoch in range(len(dealt) // size):
        assert sorted(dealt[epoch * size : (epoch + 1) * size]) == list(range(size))


def test_the_sampler_resumes_exactly_across_an_epoch_boundary():
    sampler = EpochSampler(7, seed=1)
    for _ in range(3):
        sampler.take(3)  # ends inside epoch 1, whose order deferred what the straddling batch held
    resumed = EpochSampler(7, seed=1)
    resumed.restore(json.loads(json.dumps(sampler.state())))  # as a checkpoint stores it
    assert [resumed.take(3) for _ in range(6)] == [sampler.take(3) for _ in range(6)]


# ---- 4. the judge reads a long reasoning's conclusion --------------------------------------------------------------
def test_the_judge_keeps_the_conclusion_of_a_reasoning_longer_than_its_limit(policy):
    from rewards.config import JudgeConfig
    from rewards.judge import JudgeRequest, make_judge

    judge = make_judge(policy, JudgeConfig(model=policy), device="cpu")  # max_think_tokens: the default, 1024
    body = " ".join(f"Frame {i}: a red lamp is left of you." for i in range(200))
    think = f"{body} So the lamp is behind me: the answer is option C."
    assert len(judge.tokenizer.encode(think, add_special_tokens=False)) > 1100
    request = JudgeRequest(question="Where is the lamp?", choices=("left", "right", "behind"), think=think)
    cut = judge._cut_think(think)
    assert cut.rstrip().endswith("the answer is option C.")
    assert "Frame 0:" not in cut
    assert len(judge.tokenizer.encode(cut, add_special_tokens=False)) <= judge.cfg.max_think_tokens
    assert "the answer is option C." in judge.build_prompt(request)


# ---- 5. the KL estimators' gradients -------------------------------------------------------------------------------
def _expected_gradient(estimator: str, logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """E over tokens drawn from the policy of the gradient of the estimator at the drawn token: exact over a small
    vocabulary (the sample's weight pi(x) is not differentiated, as in a loss on sampled tokens)."""
    logits = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(logits, -1)
    ref = torch.log_softmax(ref_logits, -1)
    per_token = kl_estimate(logp, ref, estimator)
    (logp.exp().detach() * per_token).sum().backward()
    return logits.grad


def test_k1_has_no_expected_gradient_and_is_refused_as_a_loss_term():
    torch.manual_seed(0)
    logits, ref_logits = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    assert _expected_gradient("k1", logits, ref_logits).abs().max().item() < 1e-12

    def kl(p_logits, q_logits):  # KL(p || q)
        p = torch.log_softmax(p_logits, -1)
        return (p.exp() * (p - torch.log_softmax(q_logits, -1))).sum()

    x = logits.clone().requires_grad_(True)
    kl(ref_logits, x).backward()  # forward KL(ref || policy)
    torch.testing.assert_close(_expected_gradient("k3", logits, ref_logits), x.grad)
    x = logits.clone().requires_grad_(True)
    kl(x, ref_logits).backward()  # reverse KL(policy || ref)
    torch.testing.assert_close(_expected_gradient("k2", logits, ref_logits), x.grad)

    with pytest.raises(ValueError, match="k1 regularises nothing"):
        check_grpo_config(GRPOConfig(beta=0.01, kl_estimator="k1"))
    check_grpo_config(GRPOConfig(beta=0.0, kl_estimator="k1"))  # no KL term: nothing to refuse


def test_the_config_check_refuses_k1_with_a_kl_term():
    from cluster.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="kl_estimator=k1"):
        load_config("configs/tiny.yaml", ["learner.grpo.kl_estimator=k1"])


# ---- 6. failed judgements are excluded from the advantages ---------------------------------------------------------
class _JudgedScorer:
    """The reward scorer with the judge's letters given (a failed judgement is None): the real combination."""

    def __init__(self, letters):
        self.letters = letters

    def score(self, texts, records, group_size, weights):
        from rewards.combine import score_group_batch

        return score_group_batch(texts, records, group_size, weights, self.letters)


def _rollouts(answers: list[list[str]]):
    from cluster.stages import Rollouts, StepPrompts
    from embodied_data.records import Record
    from rollout.types import Completion

    records = [Record(id=f"q{g}", video="v.mp4", question="Where is the lamp?", choices=("left", "right", "behind"),
                      answer="B", category="rel_direction", scene="s", source="test") for g in range(len(answers))]
    groups = [[Completion(g, [1, 2], [3, 4], [-0.5, -0.5], f"<think>It is on my {a}.</think>\n<answer>{a}</answer>", True, 7)
               for a in group] for g, group in enumerate(answers)]
    prompts = [SimpleNamespace(record=r) for r in records]
    return Rollouts(StepPrompts(1, 0, list(range(len(records))), prompts, [0] * len(records)), groups, 7, 0.0, 0.0)


def _config(filter_groups: bool = False):
    from omegaconf import OmegaConf

    from cluster.config import TrainConfig
    from rewards.config import RewardStage

    cfg = OmegaConf.to_object(OmegaConf.structured(TrainConfig))
    cfg.sampling.num_samples = 4
    cfg.rewards.stages = [RewardStage(start=0, format=0.1, accuracy=0.7, consistency=0.2)]
    cfg.learner.grpo.filter_equal_reward_groups = filter_groups
    return cfg


@pytest.mark.parametrize("lost_letter", ["B", "A"])
def test_a_failed_judgement_neither_raises_nor_lowers_the_other_samples_advantages(lost_letter):
    """Group 0: two correct answers, one of whose judgement fails, and two wrong ones. Whatever the lost judgement would
    have said, the others' advantages are those of the group without that sample; the sample is not learned from."""
    from cluster.stages import score

    answers = [["B", "B", "A", "C"], ["B", "A", "B", "C"]]
    judged = ["B", lost_letter, None, None, "B", None, "A", None]
    outage = list(judged)
    outage[1] = None
    cfg = _config()
    scored = score(cfg, _JudgedScorer(outage), _rollouts(answers))
    assert [len(group) for group in scored.groups] == [3, 4]
    assert scored.rewards.excluded == [False, True] + [False] * 6
    assert scored.metrics()["reward/excluded"] == 1.0 and scored.metrics()["reward/judge_failures"] == 1.0

    full = score(cfg, _JudgedScorer(judged), _rollouts(answers))
    kept_totals = torch.tensor([full.rewards.total[i] for i in (0, 2, 3)])
    expected = group_advantages(kept_totals, 3)
    torch.testing.assert_close(torch.tensor([s.advantage for s in scored.groups[0]]), expected, rtol=1e-6, atol=1e-7)
    assert [s.advantage for s in scored.groups[1]] == [s.advantage for s in full.groups[1]]
    assert all(s.policy_version == 7 for s in scored.samples)  # the version the completions carry


def test_excluded_samples_count_for_the_equal_reward_filter_as_absent():
    """With a failed judgement removed, the rest of the group has equal rewards: DAPO's filter drops the group."""
    from cluster.stages import score

    scored = score(_config(filter_groups=True), _JudgedScorer([None, "B", "B", "B"]), _rollouts([["B", "B", "B", "B"]]))
    assert scored.groups == [] and scored.filtered_groups == 1


def test_masked_group_advantages_equal_those_of_the_smaller_group():
    rewards = torch.tensor([1.0, math.nan, 0.2, 0.7, 0.0, 0.5, 0.5, 1.0])
    valid = torch.tensor([True, False, True, True, True, True, True, True])
    for norm in ("group_std", "group_mean"):
        got = group_advantages(rewards, 4, norm, valid=valid)
        assert got[1] == 0.0 and torch.isfinite(got).all()
        torch.testing.assert_close(got[[0, 2, 3]], group_advantages(rewards[[0, 2, 3]], 3, norm))
        torch.testing.assert_close(got[4:], group_advantages(rewards[4:], 4, norm))
    alone = group_advantages(torch.tensor([1.0, math.nan]), 2, valid=torch.tensor([True, False]))
    assert alone.tolist() == [0.0, 0.0]
    for name in ("grpo", "gspo", "dr_grpo"):  # every variant takes the mask
        assert make_algorithm(GRPOConfig(algorithm=name), 16).advantages(rewards, 4, valid=valid)[1] == 0.0


# ---- 8. smaller ----------------------------------------------------------------------------------------------------
def test_rollout_dtype_auto_is_the_checkpoints_dtype_on_the_wire(policy, tmp_path):
    import shutil

    from cluster.weight_sync import wire_dtype
    from learner.broadcast import param_metas
    from transformers import AutoModelForCausalLM

    assert wire_dtype("auto", policy) == "float32" and wire_dtype("bfloat16", policy) == "bfloat16"
    bf16 = tmp_path / "bf16"
    shutil.copytree(policy, bf16)
    config = json.loads((bf16 / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (bf16 / "config.json").write_text(json.dumps(config))
    assert wire_dtype("auto", str(bf16)) == "bfloat16"
    # What a transformers engine with dtype "auto" loads is what the wire then carries.
    assert AutoModelForCausalLM.from_pretrained(str(bf16), dtype="auto").dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(policy)
    assert {m.dtype for m in param_metas(model, getattr(torch, wire_dtype("auto", str(bf16))))} == {"bfloat16"}


def test_the_learners_rng_state_includes_every_cuda_device(monkeypatch):
    from learner import checkpoint

    saved = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = checkpoint.rng_state()
    assert state["cuda"] is saved
    checkpoint.set_rng_state(state)
    assert restored == [saved]


def test_staleness_without_importance_correction_is_warned_about():
    from cluster.config import ConfigWarning, load_config

    with pytest.warns(ConfigWarning, match="learner.grpo.tis_cap"):
        load_config("configs/tiny.yaml", ["trainer.max_staleness=1"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        load_config("configs/tiny.yaml", ["trainer.max_staleness=1", "learner.grpo.tis_cap=2.0"])
        load_config("configs/tiny.yaml", [])


def test_the_shm_sender_does_not_overwrite_views_a_receiver_may_still_be_using():
    """Rank 0 starts a second broadcast while the receiver, whose weights are views into the segment, has not entered
    it (e.g. it is still generating): nothing may be written until it does."""
    from weightsync import BucketPlan, metas_of
    from weightsync.rendezvous import host_store, join_store
    from weightsync.shm import ShmWeightGroup

    first = {"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(8)}
    second = {name: tensor + 100 for name, tensor in first.items()}
    buckets = BucketPlan.of(metas_of((n, t.shape, t.dtype) for n, t in first.items()), 1 << 20)
    timeout = datetime.timedelta(seconds=30)
    store, host, port = host_store(2, 30, host="127.0.0.1")
    groups: dict[int, ShmWeightGroup] = {}
    joiner = threading.Thread(target=lambda: groups.__setitem__(0, ShmWeightGroup("shm", store, 0, 2, timeout)))
    joiner.start()
    groups[1] = ShmWeightGroup("shm", join_store(host, port, 2, 30), 1, 2, timeout)
    joiner.join()

    def send(weights):
        groups[0].send_buckets(buckets, ([weights[m.name] for m in bucket] for bucket in buckets))

    sender = threading.Thread(target=send, args=(first,))
    sender.start()
    views = [flat for _, flat in groups[1].receive_buckets(buckets)]
    sender.join()
    assert groups[1].persistent_views
    held = [view.clone() for view in views]

    sender = threading.Thread(target=send, args=(second,))
    sender.start()
    time.sleep(0.5)  # the receiver is busy elsewhere
    assert all(torch.equal(view, copy) for view, copy in zip(views, held)), "rank 0 wrote over views in use"
    assert sender.is_alive()
    list(groups[1].receive_buckets(buckets))
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert torch.equal(views[0][:64], second["w"])
    for group in groups.values():
        group.close()

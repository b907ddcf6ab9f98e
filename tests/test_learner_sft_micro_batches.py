"""learner.sft_micro_batch_size on a real DeepSpeed rank (in this process, world size 1, gloo): a supervised step taken
one sample per micro-batch is the step taken with the samples in one padded micro-batch, up to float rounding, and
GRPO steps keep learner.micro_batch_size."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("deepspeed")

from learner.config import GRPOConfig, LearnerConfig, supervised_micro_batch_size  # noqa: E402
from learner_inproc import learner_process_group, make_learner, make_samples  # noqa: E402


def _config(sft_micro_batch_size: int) -> LearnerConfig:
    return LearnerConfig(zero_stage=2, micro_batch_size=8, sft_micro_batch_size=sft_micro_batch_size,
                         num_cpus_per_replica=1, grpo=GRPOConfig(beta=0.0))


def _weights(learner) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in learner.engine.module.named_parameters()}


def test_the_default_is_the_grpo_micro_batch():
    assert supervised_micro_batch_size(_config(0)) == 8 and supervised_micro_batch_size(_config(1)) == 1


def test_one_sample_per_micro_batch_takes_the_padded_batchs_sft_step(tiny_policy_path):
    samples = make_samples(400, [0.0] * 4, seed=3)  # prompts of 3-9 tokens: one micro-batch pads them to the longest
    tokens = sum(len(s.completion_ids) for s in samples)
    with learner_process_group():
        padded = make_learner(_config(0), tiny_policy_path)
        before = _weights(padded)
        padded_nll = [padded.sft_step(samples, 1, tokens, 3e-3)["nll_sum"] for _ in range(2)]
        expected = _weights(padded)

        single = make_learner(_config(1), tiny_policy_path)
        with pytest.raises(ValueError, match="4 samples need 4 micro-batches, the step allows 1"):
            single.sft_step(samples, 1, tokens, 3e-3)  # one sample per micro-batch: 4 of them
        single_nll = [single.sft_step(samples, 4, tokens, 3e-3)["nll_sum"] for _ in range(2)]
        actual = _weights(single)
        # GRPO still packs learner.micro_batch_size rows together: the 4 samples fit in one micro-batch.
        single.train_step(make_samples(400, [1.0, -0.5, 0.3, -1.2], seed=4), 1, tokens, 4)
        assert padded_nll[1] < padded_nll[0]  # the steps compared moved the weights
    assert single_nll == pytest.approx(padded_nll, rel=1e-5)
    assert any(not torch.equal(expected[name], before[name]) for name in before)
    assert actual.keys() == expected.keys()
    # Adam divides each gradient by its own scale, so a rounding-level difference of a near-zero gradient moves its
    # weight by up to ~1e-6 here; a lost, doubled or misweighted sample moves weights by about the LR (3e-3).
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")

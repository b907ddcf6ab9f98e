"""The whole loop on real Ray, DeepSpeed and transformers: 2 GRPO steps, 2 rollout workers, weights broadcast each step.
(Resuming a run is drilled in tests/test_faults.py: the driver killed while it checkpoints, then resumed, ends with the
rows of the run that was never stopped, its descriptions served from the perception cache.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from cluster.config import load_config
from cluster.metrics import read_metrics

pytestmark = pytest.mark.slow  # every test here reads a real training run (Ray, DeepSpeed, transformers)


@pytest.fixture(scope="module")
def finished_run(two_step_tiny_run):
    """The session's 2-step tiny run (tests/conftest.py), which test_viewer reads as well."""
    return two_step_tiny_run


def test_every_pool_is_released_when_train_returns(finished_run):
    groups = json.loads((finished_run / "placement_groups_after.json").read_text())
    pools = {name: state for name, state in groups.items() if name.startswith("embodied-r-")}
    assert {"embodied-r-learner", "embodied-r-rollout", "embodied-r-judge"} <= set(pools)
    assert set(pools.values()) == {"REMOVED"}, pools


def test_every_step_logged_with_rewards_loss_and_timings(finished_run):
    rows = read_metrics(finished_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("reward/total", "reward/format", "reward/accuracy", "reward/consistency"):
            assert row[key] is not None and 0.0 <= row[key] <= 1.0, key
        assert math.isfinite(row["loss"]) and math.isfinite(row["kl"])
        for key in ("time/rollout", "time/reward", "time/learn", "time/sync", "time/step"):
            assert row[key] > 0, key
        assert row["throughput/tokens_per_s"] > 0
        assert row["reward/weights/consistency"] == pytest.approx(0.2)
        per_category = {key: value for key, value in row.items() if key.startswith("reward/accuracy/")}
        assert per_category and all(0.0 <= value <= 1.0 for value in per_category.values())
        # The categories' accuracies weighted by their sample counts are the batch accuracy: at least one lies on
        # each side of it (or all equal it).
        assert min(per_category.values()) <= row["reward/accuracy"] + 1e-9 <= max(per_category.values()) + 2e-9


def test_workers_hold_the_learners_weights_after_every_broadcast(finished_run):
    rows = read_metrics(finished_run / "metrics.jsonl")
    assert all(r["sync/match"] == 1.0 and r["sync/matching_workers"] == 2 for r in rows)
    assert all(r["sync/bytes"] > 0 for r in rows)


def test_learner_weights_changed_by_a_grpo_step_and_checkpoint_is_loadable(finished_run):
    # Checkpoints after step 1 and step 2: the difference is exactly one GRPO step (the SFT warm-up came before both).
    after_step_1 = load_file(finished_run / "checkpoints" / "step_000001" / "policy" / "model.safetensors")
    final_dir = finished_run / "checkpoints" / "step_000002"
    assert (final_dir / "driver_state.json").is_file()
    final = load_file(final_dir / "policy" / "model.safetensors")
    assert after_step_1.keys() == final.keys()
    changed = [name for name in final if not (after_step_1[name] == final[name]).all()]
    assert changed, "no parameter changed in GRPO step 2"
    rows = read_metrics(finished_run / "metrics.jsonl")
    assert rows[1]["grad_norm"] > 0

    from transformers import AutoModelForCausalLM

    # The checkpoint loads as a plain HF model whose weights are the run's final ones, bit for bit.
    model = AutoModelForCausalLM.from_pretrained(final_dir / "policy", dtype=final[next(iter(final))].dtype)
    loaded = {name: p.detach() for name, p in model.named_parameters()}  # tied weights once, as the file holds them
    assert set(loaded) == set(final)
    unequal = [name for name in final if not torch.equal(loaded[name], final[name])]
    assert not unequal, f"loaded weights differ from the checkpoint's: {unequal}"
    assert any(not torch.equal(loaded[name], after_step_1[name]) for name in final)  # the final, not step 1's


def test_resolved_config_is_saved(finished_run):
    saved = load_config(str(finished_run / "config.yaml"))
    assert saved.run_dir == str(finished_run)
    assert saved.trainer.steps == 2

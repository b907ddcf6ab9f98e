"""bench/grpo_step.py: our side runs end to end in --quick mode (real Ray pools, DeepSpeed learner, weight sync) and
reports its phases and FLOPs; TRL's side runs one step when its environment (/tmp/trl-env) is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import grpo_step


@pytest.mark.slow
def test_quick_run_of_our_side_reports_phases_and_flops(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert grpo_step.main(["--quick", "--no-trl", "--threads", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    (pairing,) = figures["results"]
    assert pairing["threads"] == 1 and pairing["ours_mode"] == "synchronous" and pairing["trl"] == []
    (step,) = pairing["ours"]
    assert step["step_s"] >= step["learn_s"] > 0 and step["rollout_s"] > 0 and step["sync_s"] > 0
    assert step["generated_tokens"] > 0
    whole, executed = pairing["flops"]
    assert 0 < executed < whole  # each group's prompt runs once (learner/batch.py)
    assert figures["trl_missing"].startswith("no --trl-python")
    text = capsys.readouterr().out
    assert "ours" in text and "GFLOP/s" in text and "TRL not measured: no --trl-python given" in text


def test_learner_flops_count_shared_prompts_once():
    from learner.batch import Sample

    sizes = {"body": 10, "head": 3}
    group = [Sample([1, 2, 3, 4], [5, 6], [0.0, 0.0], 0.0) for _ in range(4)]
    whole, executed = grpo_step.learner_flops(group, micro_batch_size=4, sizes=sizes)
    assert whole == 4 * (2 * 10 * 4 * 6 + 2 * 3 * 4 * 2)
    assert executed == 4 * (2 * 10 * (4 + 4 * 1) + 2 * 3 * 4 * 2)  # one prompt, then completions but their last token
    distinct = [Sample([i, 2, 3, 4], [5, 6], [0.0, 0.0], 0.0) for i in range(4)]
    assert grpo_step.learner_flops(distinct, 4, sizes) == (whole, whole)


@pytest.mark.slow
def test_trl_side_runs_a_step(tmp_path):
    reason = grpo_step.trl_missing(grpo_step.DEFAULT_TRL_PYTHON)
    if reason:
        pytest.skip(f"TRL's side not run: {reason}")
    args = grpo_step.parse_args(["--quick"])
    model_path, texts, _ = grpo_step.build_workload(tmp_path, args)
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps(texts))
    trl = grpo_step.TRLProcess(grpo_step.DEFAULT_TRL_PYTHON, 1, model_path, prompts_file, 1, args, tmp_path / "trl.log")
    try:
        assert trl.info["threads"] == 1
        (seconds,) = trl.run(1)
        assert seconds > 0
    finally:
        trl.close()
    assert trl.process.returncode == 0, Path(tmp_path / "trl.log").read_text()[-2000:]

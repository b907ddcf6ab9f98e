"""`embodied-r sft`: reasoning traces built from the synthetic world's ground truth, and a real SFT run (Ray, DeepSpeed,
a tiny transformers policy) whose HF checkpoint fits its traces better than the initial policy and loads for `train`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cluster.config import load_config
from cluster.sft import build_traces
from cluster.sft_config import SFTConfig, num_steps, validate_sft
from cluster.supervised import lr_at
from embodied_data.records import Record
from embodied_data.synthetic.traces import cited_observations, parse_video_text, reasoning_trace
from rewards.accuracy import accuracy_reward
from rewards.answer import extract_think
from rewards.format import format_reward

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

CAPTION = (
    "Frame 0: Observe: a purple stool to the left, about 3.3 m away\n"
    "Frame 1: After move forward, Observe: only the walls, floor and ceiling of the room\n"
    "Frame 2: After rotate left, Observe: a brown bookshelf to the left, about 3.3 m away; a white table ahead-left, about 2.0 m away\n"
    "Frame 3: After rotate left, Observe: a black tv to the left, about 2.9 m away; a purple stool ahead-right, about 2.7 m away"
)


def _record(**overrides) -> Record:
    fields = dict(
        id="r1", video="v.mp4", question="When you reach the current location, what is the direction to the purple stool?",
        choices=("The purple stool is on my left.", "The purple stool is ahead of me, to the right."), answer="B",
        category="Landmark Position", scene="s", source="synthetic",
    )
    fields.update(overrides)
    return Record(**fields)


# ---- traces: pure text ----------------------------------------------------------------------------------------------
def test_trace_cites_the_named_object_and_concludes_the_ground_truth():
    record = _record()
    trace = reasoning_trace(record, CAPTION)
    assert format_reward(trace) == 1.0 and accuracy_reward(trace, record) == 1.0
    think = extract_think(trace)
    # First and latest sighting of the stool; nothing about the bookshelf, table or tv, which the question does not name.
    assert "Frame 0, I observe a purple stool to the left" in think
    assert "Frame 3, after rotate left, I observe a purple stool ahead-right" in think
    assert "bookshelf" not in think and "tv" not in think
    assert think.endswith("So the answer is: The purple stool is ahead of me, to the right. That is option B.")


def test_trace_for_numeric_and_for_objects_the_video_never_shows():
    counting = _record(question="How many table(s) are in this room?", choices=(), answer=1.0, category="object_counting")
    trace = reasoning_trace(counting, CAPTION)
    assert "a white table ahead-left" in trace and trace.endswith("<answer> 1 </answer>")
    assert accuracy_reward(trace, counting) == 1.0
    unseen = _record(question="Is the sofa to my left or right?", choices=("left", "right"), answer="A")
    for video_text in (CAPTION, None):
        trace = reasoning_trace(unseen, video_text)
        assert format_reward(trace) == 1.0 and accuracy_reward(trace, unseen) == 1.0
        assert "Frame" not in trace


def test_colour_in_the_question_picks_the_right_instance():
    caption = "Frame 0: Observe: a gray table ahead-left, about 1.0 m away; a black table to the right, about 2.0 m away"
    record = _record(question="Navigate to the black table. What is your next move?", choices=("I turn right.", "I turn left."), answer="A")
    cited = [item for _, item in cited_observations(record, caption)]
    assert cited == ["a black table to the right, about 2.0 m away"]
    assert [o.frame for o in parse_video_text(CAPTION)] == [0, 1, 2, 3]


def test_traces_of_a_synthetic_dataset_are_well_formed_and_correct(tmp_path):
    from embodied_data.manifest import read_gt_captions
    from embodied_data.synthetic.dataset import generate_dataset

    records = generate_dataset(str(tmp_path), num_scenes=2, seed=3, questions_per_scene=6, progress=False)
    captions = read_gt_captions(tmp_path / "manifest.parquet")
    cited_any = 0
    for record in records:
        trace = reasoning_trace(record, captions[record.video])
        assert format_reward(trace) == 1.0 and accuracy_reward(trace, record) == 1.0, (record.id, trace)
        cited_any += "Frame" in trace
    assert cited_any >= len(records) // 2  # most questions name an object that the video shows


# ---- config helpers -------------------------------------------------------------------------------------------------
def test_steps_from_epochs_and_warmup():
    assert num_steps(SFTConfig(steps=7), 100) == 7
    assert num_steps(SFTConfig(epochs=2, prompts_per_step=8), 20) == 5  # ceil(2 * 20 / 8)
    assert lr_at(1, 10, 1.0, 0.0) == 1.0
    assert [lr_at(s, 10, 1.0, 0.2) for s in (1, 2, 3, 4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    with pytest.raises(ValueError, match="sft.trace_source"):
        validate_sft(SFTConfig(trace_source="vlm"))
    with pytest.raises(ValueError, match="sft.prompts_per_step"):
        validate_sft(SFTConfig(prompts_per_step=0))


def test_sft_section_is_in_the_config_tree_and_the_cli(tmp_path):
    cfg = load_config(str(ROOT / "configs" / "tiny.yaml"), [f"run_dir={tmp_path}", "sft.steps=3"])
    assert cfg.sft.steps == 3 and cfg.sft.out_dir == f"{tmp_path}/sft"
    from cluster.cli import build_parser

    args = build_parser().parse_args(["sft", "--config", "configs/tiny.yaml", "sft.steps=2"])
    assert args.command == "sft" and args.overrides == ["sft.steps=2"] and callable(args.func)


# ---- a real run -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_run(ray_local, tmp_path_factory):
    pytest.importorskip("deepspeed")
    from omegaconf import OmegaConf

    from cluster.sft import sft

    run_dir = tmp_path_factory.mktemp("sft")
    cfg = load_config(
        str(ROOT / "configs" / "tiny.yaml"),
        [
            f"run_dir={run_dir}", "data.synthetic.scenes=2", "data.synthetic.questions_per_scene=6",
            "perception.source=ground_truth", "sft.steps=3", "sft.prompts_per_step=4", "sft.lr=3e-3",
            "sft.progress=false", "learner.micro_batch_size=4", "sft.lookup_steps=2", "sft.lookup_drills_per_step=3",
        ],
    )
    policy = sft(cfg)
    return OmegaConf.to_object(cfg), Path(policy)


def _trace_nll(model_path: str, cfg) -> float:
    """Mean NLL per target token of the run's traces (their prompts as `train` builds them) under a plain HF model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.data import load_run_data
    from cluster.perceive import describe_videos
    from cluster.prompts import build_prompt_table
    from learner.batch import Sample, completion_logprobs, pack

    data = load_run_data(cfg)
    texts = describe_videos(cfg, data, vlm_path="")  # ground-truth captions: no VLM
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts = build_prompt_table(cfg, data.records, texts, model_path)
    traces = build_traces(prompts, texts, data.gt_captions, tokenizer, "auto")
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    batch = pack([Sample(t.prompt_ids, t.target_ids, [0.0] * len(t.target_ids), 0.0) for t in traces], tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs = completion_logprobs(model, batch)
    return float(-(logprobs * batch.completion_mask).sum() / batch.completion_mask.sum())


@pytest.mark.slow
def test_sft_lowers_the_nll_of_its_traces(sft_run):
    cfg, policy = sft_run
    initial = Path(cfg.run_dir) / "models" / "policy"
    before, after = _trace_nll(str(initial), cfg), _trace_nll(str(policy), cfg)
    print(f"trace NLL per token: initial {before:.3f}, after SFT {after:.3f}")
    assert after < before - 0.5, (before, after)

    rows = [json.loads(line) for line in (policy.parent / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["nll"]) and r["target_tokens"] > 0 for r in rows)
    assert rows[-1]["nll"] < rows[0]["nll"]
    state = json.loads((policy.parent / "sft_state.json").read_text())
    assert state["steps"] == 3 and state["trace_source"] == "ground-truth captions" and state["lookup_steps"] == 2
    # The lookup warm-up ran first, in its own metrics file (the equal-compute arm times sft_metrics.jsonl's steps).
    lookup = [json.loads(line) for line in (policy.parent / "lookup_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lookup] == [1, 2] and all(math.isfinite(r["nll"]) and r["nll"] > 0 for r in lookup)
    traces = [json.loads(line) for line in (policy.parent / "traces.jsonl").read_text().splitlines()]
    assert traces and all(format_reward(t["trace"]) == 1.0 for t in traces)


@pytest.mark.slow
def test_checkpoint_loads_for_train_and_is_not_the_initial_policy(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, policy = sft_run
    assert not (policy.parent / ".checkpoint").exists() and not (policy.parent / "deepspeed").exists()
    trained = AutoModelForCausalLM.from_pretrained(policy).state_dict()
    initial = AutoModelForCausalLM.from_pretrained(Path(cfg.run_dir) / "models" / "policy").state_dict()
    assert trained.keys() == initial.keys()
    assert [name for name in trained if not torch.equal(trained[name], initial[name])]
    assert AutoTokenizer.from_pretrained(policy).get_vocab() == AutoTokenizer.from_pretrained(Path(cfg.run_dir) / "models" / "policy").get_vocab()
    # The SFT run's saved config, pointed at the new policy, is a valid `train` config.
    train_cfg = load_config(str(Path(cfg.sft.out_dir) / "config.yaml"), [f"models.policy={policy}", "trainer.sft_warmup_steps=0"])
    assert train_cfg.models.policy == str(policy) and train_cfg.run_dir == cfg.run_dir


def test_judge_traces_teach_reading_the_concluded_option_not_the_right_one(tmp_path):
    """sft.judge_traces: one judge prompt per multiple-choice trace; its reasoning concludes a random option and the
    target is that option's letter (so the letters vary, and differ from the gold one about half the time)."""
    import random
    from types import SimpleNamespace

    from cluster.tiny_models import train_tokenizer
    from transformers import AutoTokenizer

    from cluster.sft import judge_trace
    from rewards.judge import SYSTEM_PROMPT as JUDGE_SYSTEM_PROMPT

    tokenizer = AutoTokenizer.from_pretrained(train_tokenizer([CAPTION, JUDGE_SYSTEM_PROMPT] * 20, tmp_path / "tok", vocab_size=600))
    end = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    record = _record(choices=("The purple stool is on my left.", "The purple stool is ahead of me, to the right.",
                              "The purple stool is behind me."))
    trace = reasoning_trace(record, CAPTION)
    rng = random.Random(0)
    items = [judge_trace(record, trace, tokenizer, end, rng) for _ in range(40)]
    letters = [tokenizer.decode(item.target_ids[:-1]) for item in items]
    assert set(letters) == {"A", "B", "C"} and all(item.target_ids[-1] == end[0] for item in items)
    for item, letter in zip(items, letters):
        option = record.choices["ABC".index(letter)].rstrip(".")
        prompt = tokenizer.decode(item.prompt_ids)
        assert f"So the answer is: {option}." in prompt and JUDGE_SYSTEM_PROMPT in prompt
        assert "Frame 0, I observe a purple stool" in prompt  # the cited observations stay
        assert prompt.count("So the answer is") == 1  # the gold conclusion was replaced, not kept beside it
    assert any("That is option" in tokenizer.decode(i.prompt_ids) for i in items)
    assert any("That is option" not in tokenizer.decode(i.prompt_ids) for i in items)

    prompts = [SimpleNamespace(record=record, token_ids=[1, 2]), SimpleNamespace(record=_record(
        id="n", question="How many stool(s)?", choices=(), answer=1.0, category="object_counting"), token_ids=[3])]
    built = build_traces(prompts, {}, {"v.mp4": CAPTION}, tokenizer, "auto", judge_traces=True)
    assert [t.record_id for t in built] == ["r1", "r1#judge", "n"]  # numeric questions get no judge trace

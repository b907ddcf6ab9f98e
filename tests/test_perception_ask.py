"""`embodied-r ask` (cluster/ask.py): one real video through key frames, the tiny VLM and the tiny policy, with the
run folder supplying the defaults; the description cache; what it prints; and errors that say what to pass."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from cluster.ask import AskResult, parse_choices, register, render
from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer
from embodied_data.records import Record
from perception.config import PerceptionConfig, VLMConfig
from perception.describer import Describer
from perception.keyframes import extract_keyframes
from perception.tiny_vlm import build_tiny_vlm
from rollout.config import SamplingConfig
from rollout.engines.hf_engine import HFEngine
from rollout.prompt import build_prompt
from rollout.types import Completion

torch.set_num_threads(1)

VIDEO_NAME = "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"  # 50 frames, 512x512: a few key frames
QUESTION = "Where is the tall tower relative to the drone?"
SETTINGS = ["perception.vlm.max_new_tokens=6", "sampling.max_new_tokens=12"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as `train` leaves it before any checkpoint: models/{tokenizer,policy,vlm}."""
    run = tmp_path_factory.mktemp("run")
    tokenizer = train_tokenizer([QUESTION, "The tower is to the left of the agent."] * 10, run / "models" / "tokenizer",
                                vocab_size=1024)
    build_tiny_causal_lm(tokenizer, run / "models" / "policy", seed=0)
    build_tiny_vlm(tokenizer, run / "models" / "vlm", seed=2)
    return run


@pytest.fixture(scope="module")
def video(realdata) -> str:
    return str(realdata / "urbanvideo_bench" / "videos" / VIDEO_NAME)


def run_ask(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ask", *argv])
    return args.func(args)


def test_ask_runs_key_frames_perception_and_the_policy_with_the_runs_models(run_dir, video, capsys):
    code = run_ask(["--run-dir", str(run_dir), "--video", video, "--question", QUESTION,
                    "--choices", "A. left", "B. right", "--json", "--", *SETTINGS])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    policy, vlm = str(run_dir / "models" / "policy"), str(run_dir / "models" / "vlm")
    assert (result["policy"], result["vlm"]) == (policy, vlm), "defaults come from the run folder"

    # Perception: the key frames of the video, one VLM request each, the describer's own text.
    keyframes = extract_keyframes(video, PerceptionConfig().keyframes)
    assert result["keyframe_frames"] == keyframes.frames
    assert result["vlm_requests"] == len(keyframes.frames)
    expected = Describer(PerceptionConfig(vlm=VLMConfig(max_new_tokens=6)), vlm).describe_video(video)
    assert result["video_text"] == expected.to_text()
    assert result["video_text"].count("Frame ") == len(keyframes.frames)

    # The policy: its greedy completion on the paper's prompt (rollout.prompt) for this video text and question.
    engine = HFEngine(policy, generate_batch_size=1)
    record = Record(id="x", video=video, question=QUESTION, choices=("left", "right"), answer="A", category="c",
                    scene="", source="test")
    prompt = build_prompt(record, expected.to_text(), engine.tokenizer, SamplingConfig().max_prompt_tokens)
    completion = engine.generate([prompt.token_ids], SamplingConfig(num_samples=1, temperature=0.0, max_new_tokens=12),
                                 seed=0)[0][0]
    assert result["completion"] == completion.text
    assert result["prompt_tokens"] == len(prompt.token_ids)
    assert result["choices"] == ["left", "right"]
    assert not (run_dir / "perception_cache").exists(), "no cache folder is made where the run has none"


def test_ask_reuses_and_fills_the_runs_description_cache(run_dir, video, capsys, tmp_path):
    cache = run_dir / "perception_cache"
    cache.mkdir(exist_ok=True)
    try:
        argv = ["--run-dir", str(run_dir), "--video", video, "--question", QUESTION, "--json", "--", *SETTINGS]
        assert run_ask(argv) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["vlm_requests"] > 0 and list(cache.glob("shard-*.parquet")), "the description is cached"
        assert run_ask(argv) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["vlm_requests"] == 0, "the second question about the video costs no VLM request"
        assert second["video_text"] == first["video_text"] and second["completion"] == first["completion"]
        assert first["choices"] == [], "no --choices: a numeric question"
        # Another VLM setting is another cache key: described again.
        assert run_ask(["--run-dir", str(run_dir), "--video", video, "--question", QUESTION, "--json", "--",
                        "perception.vlm.max_new_tokens=5", "sampling.max_new_tokens=4"]) == 0
        assert json.loads(capsys.readouterr().out)["vlm_requests"] == first["vlm_requests"]
    finally:
        for shard in cache.glob("*"):
            shard.unlink()
        cache.rmdir()


def test_ask_prints_the_video_text_thinking_and_answer(run_dir, video, capsys, monkeypatch):
    """The tiny random policy never writes the answer format, so its completion is replaced (this test is about the
    parsing and printing of a completion, nothing else)."""
    written = "<think> The tower was ahead-left at frame 0, and I rotated right. </think>\n<answer> A </answer>"

    def fake_generate(self, prompt_token_ids, sampling, seed):
        return [[Completion(prompt_index=0, prompt_token_ids=prompt_token_ids[0], token_ids=[1], logprobs=[0.0],
                            text=written, finished=True)]]

    monkeypatch.setattr(HFEngine, "generate", fake_generate)
    assert run_ask(["--run-dir", str(run_dir), "--video", video, "--question", QUESTION,
                    "--choices", "left", "right", "--", *SETTINGS]) == 0
    out = capsys.readouterr().out
    assert "--- video text ---\nFrame 0: Observe:" in out
    assert f"--- question ---\n{QUESTION}\nA. left\nB. right" in out
    assert "--- thinking ---\nThe tower was ahead-left at frame 0, and I rotated right.\n" in out
    assert "--- answer ---\nA. left\n" in out


def test_render_of_unreadable_and_numeric_answers():
    base = dict(video="v.mp4", question="q", keyframe_frames=[0, 5], video_text="Frame 0: Observe: x", vlm_requests=2,
                prompt_tokens=10, frames_dropped=0, thinking=None, policy="p", vlm="m")
    text = render(AskResult(**base, choices=["left", "right"], completion="<answer> maybe </answer>",
                            answer_text="maybe", answer=None))
    assert "--- answer ---\n(unreadable: <answer> holds 'maybe', which names no option)" in text
    assert "--- thinking ---\n(none: the completion has no well-formed <think>...</think>)" in text
    numeric = render(AskResult(**base, choices=[], completion="<answer> 3.5 m </answer>", answer_text="3.5 m", answer=3.5))
    assert "--- answer ---\n3.5\n" in numeric
    nothing = render(AskResult(**base, choices=[], completion="\n\n", answer_text=None, answer=None))
    assert "(none: the completion has no well-formed <answer>...</answer>)" in nothing and "(only whitespace" in nothing


def test_parse_choices():
    assert parse_choices(["A. left", "B) right", "(C) behind", "D: ahead"]) == ("left", "right", "behind", "ahead")
    assert parse_choices(["left", "A chair"]) == ("left", "A chair"), "an article is not a letter"
    assert parse_choices(None) == ()
    with pytest.raises(ValueError, match="expected B"):
        parse_choices(["A. left", "C. right"])
    with pytest.raises(ValueError, match="either every choice"):
        parse_choices(["A. left", "right"])
    with pytest.raises(ValueError, match="no text"):
        parse_choices(["A.", "B. right"])


def test_ask_errors_say_what_to_pass(run_dir, video, tmp_path, capsys):
    assert run_ask(["--video", video, "--question", QUESTION]) == 2
    err = capsys.readouterr().err
    assert "--policy PATH" in err and "--run-dir" in err
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    assert run_ask(["--run-dir", str(empty_run), "--video", video, "--question", QUESTION]) == 2
    err = capsys.readouterr().err
    assert "--policy PATH" in err and str(empty_run / "models" / "policy") in err
    assert run_ask(["--policy", str(run_dir / "models" / "policy"), "--video", video, "--question", QUESTION]) == 2
    assert "--vlm PATH" in capsys.readouterr().err
    assert run_ask(["--run-dir", str(run_dir), "--video", str(tmp_path / "nope.mp4"), "--question", QUESTION]) == 2
    assert str(tmp_path / "nope.mp4") in capsys.readouterr().err
    assert run_ask(["--run-dir", str(run_dir), "--video", video, "--question", QUESTION,
                    "--choices", "A. left", "C. right"]) == 2
    assert "expected B" in capsys.readouterr().err

"""The samples record (cluster/samples.py) and its viewer (cluster/view_cmd.py): the folder's bound and resume rule and
the built files on a hand-made samples folder, then the page itself in headless Chromium (DOM and a filter)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from cluster.samples import KEEP_NEWEST, SampleFolder, markdown_table, read_index, split_captions, video_key
from cluster.view_cmd import build_view
from tests.browser import dump_dom, find_browser, screenshot, why_no_browser

SCREENSHOTS = Path(os.environ.get("EMBODIED_R_SCREENSHOTS", "")) if os.environ.get("EMBODIED_R_SCREENSHOTS") else None


def _thumbs(folder: Path, video: str, count: int) -> str:
    """Thumbnails as FrameStore writes them (a coloured square per frame)."""
    from PIL import Image

    key = video_key(video)
    (folder / "frames" / key).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        colour = np.zeros((90, 160, 3), np.uint8)
        colour[..., i % 3] = 60 + 40 * i
        Image.fromarray(colour).save(folder / "frames" / key / f"k{i:02d}.jpg", quality=75)
    (folder / "frames" / key / "meta.json").write_text(json.dumps({"video": video, "count": count, "frames": list(range(count)),
                                                                     "thumbs": [f"k{i:02d}.jpg" for i in range(count)]}))
    return key


def _completion(index: int, total: float, correct: bool, text: str) -> dict:
    return {"index": index, "text": text, "tokens": 10 + 7 * index, "finished": True, "format": 1.0,
            "accuracy": 1.0 if correct else 0.0, "consistency": None, "judge_letter": None, "judge_failed": False,
            "judge": "not asked", "excluded": False, "total": total, "advantage": total - 0.5, "overlong": None,
            "policy_version": 1, "mean_logprob": -1.25, "correct": correct}


def hand_made_page(folder: Path, step: int, kind: str = "train") -> dict:
    """Two groups (categories route_plan and relative_direction), four completions each, rewards 0.1..0.75."""
    groups = []
    for g, (category, answer) in enumerate((("route_plan", "B"), ("relative_direction", "A"))):
        video = f"/data/videos/scene{g}.mp4"
        key = _thumbs(folder, video, 3)
        completions = [
            _completion(j, round(0.1 + 0.2 * j + 0.05 * g, 3), j >= 2,
                        f"<think>step {step} group {g} reasoning {j}</think>\n<answer> {'BA'[j % 2]} </answer>")
            for j in range(4)
        ]
        groups.append({
            "group": g, "record_id": f"s{g}-q{step}", "category": category, "question": f"Which way is the chair? ({g})",
            "choices": ["left", "right"], "letters": "AB", "answer": answer, "numeric": False, "video": video,
            "video_key": key, "frames": [{"position": i, "frame": 2 * i, "thumb": f"frames/{key}/k{i:02d}.jpg",
                                          "caption": f"caption of frame {i} in scene {g}"} for i in range(3)],
            "prompt_tokens": 321, "prompt_truncated": False, "reward_mean": 0.45, "reward_std": 0.22,
            "completions": completions,
        })
    return {"id": f"{kind}_{step:06d}", "kind": kind, "step": step, "label": f"step {step}", "policy_version": step - 1,
            "logprob_mismatch": 0.001, "metrics": {"step": step, "reward/total": 0.5}, "groups": groups}


@pytest.fixture
def hand_made_run(tmp_path: Path) -> Path:
    samples = SampleFolder(tmp_path / "samples")
    for step in (1, 2):
        samples.write(hand_made_page(tmp_path / "samples", step))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "reward/total": 0.25 * s, "loss": 0.1}) + "\n"
                                                    for s in (1, 2)))
    return tmp_path


def test_split_captions_reads_the_frame_lines():
    text = "Frame 0: Observe: a red chair ahead\nFrame 1: After move forward, Observe: a table\nto the left"
    assert split_captions(text) == ["Observe: a red chair ahead", "After move forward, Observe: a table\nto the left"]


def test_folder_thins_the_oldest_pages_and_keeps_the_newest(tmp_path: Path):
    one = len(json.dumps({"version": 1, **hand_made_page(tmp_path / "probe", 1)}).encode())
    folder = SampleFolder(tmp_path / "samples", max_bytes=int(one * 14.5))
    for step in range(1, 31):
        folder.write(hand_made_page(tmp_path / "samples", step))
    steps = sorted(p["step"] for p in read_index(tmp_path / "samples"))
    assert sum(p["bytes"] for p in folder.index) <= folder.max_bytes
    assert steps[-KEEP_NEWEST:] == list(range(31 - KEEP_NEWEST, 31))  # the newest are all there
    assert steps[0] == 1 and len(steps) < 30  # the oldest region is thinned, not cut off
    assert sorted(path.stem for path in (tmp_path / "samples" / "pages").glob("*.json")) == sorted(p["id"] for p in folder.index)


def test_resume_drops_the_pages_of_steps_run_again(hand_made_run: Path):
    folder = SampleFolder(hand_made_run / "samples")
    folder.drop_after(1)
    assert [p["id"] for p in read_index(hand_made_run / "samples")] == ["train_000001"]
    # A page written but missing from the index (a run killed in between) is found again.
    (hand_made_run / "samples" / "index.json").unlink()
    assert [p["id"] for p in read_index(hand_made_run / "samples")] == ["train_000001"]


def test_markdown_table_has_a_row_per_completion():
    page = {"label": "step 3", "groups": [{"group": 0, "record_id": "r", "category": "c", "answer": "A",
                                           "completions": [_completion(j, 0.5, j == 0, "<think>x|y</think>") for j in range(4)]}]}
    table = markdown_table(page)
    assert table.count("\n| 0 r |") == 4 and "x\\|y" in table and "&lt;think>" in table


def test_view_is_static_and_self_contained(hand_made_run: Path):
    index = build_view(hand_made_run)
    view = index.parent
    html = index.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), "the viewer must fetch nothing from the network"
    assert sorted(p.name for p in (view / "data").iterdir()) == ["train_000001.js", "train_000002.js"]
    page = (view / "data" / "train_000002.js").read_text()
    assert page.startswith("window.ER_PAGE(") and '"reward/total": 0.5' in page and '"loss": 0.1' in page  # metrics.jsonl's row
    assert len(list((view / "frames").glob("*/k*.jpg"))) == 6
    # Rebuilding after a page is gone removes its data.
    SampleFolder(hand_made_run / "samples").drop_after(1)
    build_view(hand_made_run)
    assert [p.name for p in (view / "data").iterdir()] == ["train_000001.js"]


def test_serve_follows_a_live_run_on_loopback_only(hand_made_run: Path):
    import threading
    import urllib.request

    from cluster.view_cmd import make_server

    out = hand_made_run / "view"
    server = make_server(hand_made_run, out, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/", timeout=10) as reply:
            assert reply.status == 200 and "train_000002" in reply.read().decode()
        SampleFolder(hand_made_run / "samples").write(hand_made_page(hand_made_run / "samples", 3))  # the run goes on
        with urllib.request.urlopen(f"{url}/index.html", timeout=10) as reply:
            assert "train_000003" in reply.read().decode()  # rebuilt on load
        with urllib.request.urlopen(f"{url}/data/train_000003.js", timeout=10) as reply:
            assert reply.read().decode().startswith("window.ER_PAGE(")
    finally:
        server.shutdown()
        server.server_close()


def _cards(dom: str) -> list[str]:
    """The rendered completion cards' classes (the page's own script text, which holds the markup, does not match)."""
    return re.findall(r'<article class="completion (correct|wrong)', dom)


def _groups(dom: str) -> list[str]:
    return re.findall(r'<section class="group" id="g-\d+" data-record="([^"]+)"', dom)


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        pytest.skip(why_no_browser())
    return path


def test_view_in_chromium_shows_groups_frames_rewards_and_filters(hand_made_run: Path, browser: str, tmp_path: Path):
    index = build_view(hand_made_run)
    url = index.resolve().as_uri()
    dom = dump_dom(browser, url + "#page=train_000001")
    assert 'data-rendered="train_000001"' in dom
    assert _groups(dom) == ["s0-q1", "s1-q1"]
    assert len(re.findall(r'<img src="frames/[^"]+/k0\d\.jpg"', dom)) == 6
    assert "caption of frame 2 in scene 1" in dom
    assert len(_cards(dom)) == 8 and "total 0.750" in dom and "total 0.100" in dom
    assert '<span class="think">' in dom and '<span class="answer">' in dom
    # Filters, from the URL hash: one category, then only the wrong answers, then a reward floor.
    dom = dump_dom(browser, url + "#page=train_000002&category=relative_direction")
    assert _groups(dom) == ["s1-q2"] and "step 2 group 1 reasoning 3" in dom
    dom = dump_dom(browser, url + "#page=train_000002&correct=wrong")
    assert _cards(dom) == ["wrong"] * 4
    dom = dump_dom(browser, url + "#page=train_000002&min=0.7&sort=reward")
    totals = [float(t) for t in re.findall(r'<tr data-total="([\d.]+)"', dom)]
    assert totals == sorted(totals, reverse=True) and min(totals) >= 0.7 and len(totals) == 2
    shot = screenshot(browser, url + "#page=train_000002", (SCREENSHOTS or tmp_path) / "viewer_hand_made.png")
    assert shot.stat().st_size > 10_000


# ---- a real two-step run (README command 1's pipeline, tiny config): one Ray run for the whole module ---------------
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_step_run(two_step_tiny_run: Path) -> Path:
    """The session's 2-step tiny run (tests/conftest.py), which test_end_to_end reads as well."""
    return two_step_tiny_run


def _pages(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "samples" / "pages").glob("*.json"))}


@pytest.mark.slow
def test_two_step_run_records_its_groups_frames_and_rewards(two_step_run: Path):
    from cluster.metrics import read_metrics

    pages = _pages(two_step_run)
    assert set(pages) == {"eval_000002", "train_000001", "train_000002"}
    rows = {r["step"]: r for r in read_metrics(two_step_run / "metrics.jsonl")}
    videos = set()
    for step in (1, 2):
        page = pages[f"train_{step:06d}"]
        assert page["metrics"]["reward/total"] == pytest.approx(rows[step]["reward/total"])
        assert len(page["groups"]) == 2  # trainer.samples_max_groups of the step's 3 prompts
        for group in page["groups"]:
            videos.add(group["video_key"])
            assert group["prompt_tokens"] > 0 and group["question"] and group["answer"]
            assert len(group["frames"]) >= 4 and all(f["caption"] for f in group["frames"])  # the tiny VLM's text
            for frame in group["frames"]:
                assert (two_step_run / "samples" / frame["thumb"]).is_file(), frame
            assert len(group["completions"]) == 4  # G
            for c in group["completions"]:
                assert c["policy_version"] == step - 1 and c["tokens"] > 0 and c["mean_logprob"] < 0
                assert c["total"] == pytest.approx(0.1 * c["format"] + 0.7 * c["accuracy"]
                                                   + 0.2 * (c["consistency"] or 0.0), abs=1e-6) or c["judge_failed"]
                assert c["judge"] == "not asked" or c["judge"].startswith(("failed", c["judge_letter"] or "?"))
                assert c["advantage"] is not None
                # The learner's gap to the sampler, per completion it learned from (float32 both ends: rounding only).
                assert c["logprob_mismatch"] is None or 0 <= c["logprob_mismatch"] < 1e-3
            mismatches = [c["logprob_mismatch"] for g in page["groups"] for c in g["completions"]]
            assert any(m is not None for m in mismatches) or page["metrics"]["loss"] is None
    # Thumbnails are written once per video, shared by the pages that show it.
    assert {p.name for p in (two_step_run / "samples" / "frames").iterdir()} >= videos
    assert all(g["completions"][0]["advantage"] is None for g in pages["eval_000002"]["groups"])
    assert len(pages["eval_000002"]["groups"]) == 4


@pytest.mark.slow
def test_two_step_run_samples_in_tensorboard(two_step_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(two_step_run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert "samples/train/text_summary" in tags and "samples/eval/text_summary" in tags
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("samples/train/text_summary")}
    assert sorted(texts) == [1, 2] and "| advantage |" in texts[2]


@pytest.mark.slow
def test_two_step_run_viewer_in_chromium(two_step_run: Path, browser: str):
    from cluster.cli import main

    out = two_step_run / "view"
    assert main(["view", str(two_step_run), "--out", str(out)]) == 0
    page = _pages(two_step_run)["train_000002"]
    url = (out / "index.html").resolve().as_uri()
    dom = dump_dom(browser, url + "#page=train_000002")
    assert _groups(dom) == [g["record_id"] for g in page["groups"]]
    frames = sum(len(g["frames"]) for g in page["groups"])
    assert len(re.findall(r'<img src="frames/[^"]+\.jpg"', dom)) == frames
    completions = [c for g in page["groups"] for c in g["completions"]]
    assert len(_cards(dom)) == len(completions)
    for c in completions:
        assert f"total {c['total']:.3f}" in dom
    assert 'caption' in dom and page["groups"][0]["frames"][0]["caption"][:30].replace("&", "&amp;").replace("<", "&lt;") in dom
    # A filter changes what is shown: only the wrong answers.
    wrong = [c for c in completions if not c["correct"]]
    dom = dump_dom(browser, url + "#page=train_000002&correct=wrong")
    assert _cards(dom) == ["wrong"] * len(wrong)
    dom = dump_dom(browser, url + "#page=eval_000002")
    assert len(_groups(dom)) == 4 and "eval at step 2" in dom
    shot = screenshot(browser, url + "#page=train_000002", (SCREENSHOTS or out) / "viewer_two_step_run.png")
    assert shot.stat().st_size > 10_000

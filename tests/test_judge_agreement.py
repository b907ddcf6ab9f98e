"""The judge's agreement measurement (rewards/judge_agreement.py, `embodied-r judge-agreement`): the swapped reasonings
in both forms, the rates on a stub judge, determinism by seed, the command on a tiny random-weight judge, and (slow) the
real SmolLM2-135M-Instruct judge on a small fixed set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from embodied_data.records import Record
from rewards.judge_agreement import FORMS, build_items, drawn_letter, format_table, measure_agreement, score

CAPTION = ("Frame 0: Observe: a red chair ahead-left, about 2.0 m away; a blue lamp right, about 1.1 m away.\n"
           "Frame 1: After rotate left, Observe: a red chair ahead, about 1.8 m away.")
OPTION_LETTER = re.compile(r"\boption [A-J]\b")


def _record(i: int, category: str = "Landmark Position", choices=("left", "right", "behind", "ahead")) -> Record:
    return Record(id=f"r{i}", video=f"/v/{i % 3}.mp4", question=f"Where is the red chair (question {i})?",
                  choices=tuple(choices), answer="B", category=category, scene=f"s{i % 3}", source="synthetic",
                  split="test")


RECORDS = [_record(i, "Landmark Position" if i % 2 else "Action Generation") for i in range(40)]
CAPTIONS = {f"/v/{i}.mp4": CAPTION for i in range(3)}


def test_both_forms_conclude_the_drawn_option_and_only_the_letter_form_states_its_letter():
    items = build_items(RECORDS, CAPTIONS, seed=3)
    assert [i.form for i in items] == list(FORMS) * len(RECORDS)
    for letter_item, words_item in zip(items[::2], items[1::2]):
        record = RECORDS[int(letter_item.record_id[1:])]
        text = record.choices[record.letters.index(letter_item.target)]
        assert letter_item.target == words_item.target == drawn_letter(record, 3)
        assert letter_item.request.choices == words_item.request.choices == record.choices
        # the realistic body: the gold trace's observations cited from the caption, then the swapped conclusion
        for item in (letter_item, words_item):
            assert item.request.think.startswith("Frame 0, I observe a red chair ahead-left, about 2.0 m away.")
            assert "Frame 1, after rotate left, I observe a red chair ahead" in item.request.think
        assert letter_item.request.think.endswith(f"So the answer is: {text}. That is option {letter_item.target}.")
        assert OPTION_LETTER.findall(letter_item.request.think) == [f"option {letter_item.target}"]
        assert words_item.request.think.endswith(f"So the answer is: {text}.")
        assert not OPTION_LETTER.search(words_item.request.think) and "That is" not in words_item.request.think
    targets = [i.target for i in items[::2]]
    assert set(targets) == set("ABCD")  # drawn over every option, not the gold answer (B) alone


def test_the_drawn_options_depend_on_the_seed_and_the_record_only():
    first = build_items(RECORDS, CAPTIONS, seed=0)
    assert first == build_items(RECORDS, CAPTIONS, seed=0)
    assert [i.target for i in first] != [i.target for i in build_items(RECORDS, CAPTIONS, seed=1)]
    subset = build_items(RECORDS[5:9][::-1], CAPTIONS, seed=0)  # fewer records, another order: the same options
    by_id = {(i.record_id, i.form): i for i in first}
    assert all(by_id[(i.record_id, i.form)] == i for i in subset)


def test_numeric_records_are_left_out_and_a_missing_caption_still_gives_a_reasoning():
    numeric = Record(id="n", video="/v/0.mp4", question="How far?", choices=(), answer=2.5, category="object_abs_distance",
                     scene="s", source="synthetic")
    items = build_items([numeric, RECORDS[0]], {}, seed=0, forms=("words",))
    assert [(i.record_id, i.form) for i in items] == [("r0", "words")]
    assert items[0].request.think.startswith("The video shows none of the objects the question names directly.")
    with pytest.raises(ValueError, match="unknown agreement form"):
        build_items(RECORDS, CAPTIONS, forms=("letters",))


class StubJudge:
    """Reads the stated letter when there is one; on the words form answers "A" and fails every third request."""

    def __init__(self):
        self.calls = 0

    def judge(self, requests):
        self.calls += 1
        letters = []
        for index, request in enumerate(requests):
            stated = re.search(r"That is option ([A-J])\.$", request.think)
            letters.append(stated.group(1) if stated else (None if index % 3 == 1 else "A"))
        return letters


def test_rates_per_form_and_category_count_failures_apart():
    stub = StubJudge()
    result = measure_agreement(stub, RECORDS, CAPTIONS, seed=0)
    assert stub.calls == 1  # one batched call
    items = build_items(RECORDS, CAPTIONS, seed=0)
    words = [(n, i) for n, i in enumerate(items) if i.form == "words"]
    failed = [i for n, i in words if n % 3 == 1]
    judged = [i for n, i in words if n % 3 != 1]
    assert result["letter"] == 1.0 and result["forms"]["letter"]["judged"] == 40 and result["forms"]["letter"]["failures"] == 0
    expected = sum(i.target == "A" for i in judged) / len(judged)
    assert result["words"] == pytest.approx(expected)
    form = result["forms"]["words"]
    assert (form["judged"], form["failures"], form["agreed"]) == (len(judged), len(failed), sum(i.target == "A" for i in judged))
    assert form["answers"] == {"A": len(judged)}
    for category, counts in form["categories"].items():
        mine = [i for i in judged if i.category == category]
        assert counts["judged"] == len(mine) and counts["failures"] == sum(i.category == category for i in failed)
        assert counts["rate"] == pytest.approx(sum(i.target == "A" for i in mine) / len(mine))
    assert sum(c["judged"] + c["failures"] for c in form["categories"].values()) == 40
    assert (result["records"], result["numeric_skipped"], result["chance"]) == (40, 0, 0.25)
    assert len(result["items"]) == 80 and result["items"][1]["form"] == "words"
    assert "overall" in format_table(result) and "letter stated" in format_table(result)


def test_score_refuses_a_letter_count_that_does_not_match_and_nothing_judged_is_no_rate():
    items = build_items(RECORDS[:2], CAPTIONS)
    with pytest.raises(ValueError, match="3 judge letters for 4"):
        score(items, ["A", "B", "C"])
    assert score(items, [None] * 4)["letter"] == {
        "rate": None, "judged": 0, "agreed": 0, "failures": 2, "answers": {},
        "categories": {"Action Generation": {"rate": None, "judged": 0, "agreed": 0, "failures": 1},
                       "Landmark Position": {"rate": None, "judged": 0, "agreed": 0, "failures": 1}},
    }


def _manifest(folder: Path) -> Path:
    """A manifest of RECORDS with their captions (empty video files: the measurement never reads a frame)."""
    from embodied_data.manifest import write_manifest

    (folder / "videos").mkdir(parents=True)
    records = []
    for record in RECORDS[:12]:
        video = folder / "videos" / Path(record.video).name
        video.touch()
        records.append(Record(**{**record.__dict__, "video": f"videos/{video.name}"}))
    return write_manifest(records, folder / "manifest.parquet", extra_columns={"gt_caption": [CAPTION] * len(records)})


def test_the_command_measures_a_tiny_judge_and_writes_json(tmp_path, tiny_policy_path, capsys):
    """`embodied-r judge-agreement` end to end on a tiny random-weight judge: in-process, no Ray."""
    from cluster.cli import main

    _manifest(tmp_path / "data")
    out = tmp_path / "agreement.json"
    assert main(["judge-agreement", "--judge", tiny_policy_path, "--data", str(tmp_path / "data"), "--max-records", "10",
                 "--seed", "2", "--out", str(out), f"run_dir={tmp_path / 'run'}", "rewards.judge.batch_size=4"]) == 0
    printed = capsys.readouterr().out
    assert "letter stated" in printed and "agreement: letter" in printed
    report = json.loads(out.read_text())
    assert report["records"] == 10 and report["judge_path"] == tiny_policy_path and report["seed"] == 2
    for form in FORMS:
        counts = report["forms"][form]
        assert counts["judged"] + counts["failures"] == 10 and 0.0 <= report[form] <= 1.0
        assert set(counts["answers"]) <= set("ABCD")
    # five of each category: the round-robin over categories
    assert {c: n["judged"] for c, n in report["forms"]["letter"]["categories"].items()} == {
        "Action Generation": 5, "Landmark Position": 5}
    assert main(["judge-agreement", "--judge", tiny_policy_path, "--data", str(tmp_path / "data"), "--split", "train",
                 f"run_dir={tmp_path / 'run'}"]) == 2  # no such split: one line, not a traceback


def test_the_learning_benchmark_measures_its_judge_the_same_way(tmp_path, tiny_policy_path):
    import sys

    from omegaconf import OmegaConf

    from cluster.config import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.learning_run import BenchSettings, measure_judge_agreement

    manifest = _manifest(tmp_path / "data")
    cfg = OmegaConf.to_object(load_config(None, [f"run_dir={tmp_path / 'run'}"]))
    result = measure_judge_agreement(cfg, tiny_policy_path, manifest, "test", 6)
    assert result["records"] == 6 and "items" not in result
    assert {0.0 <= result[form] <= 1.0 for form in FORMS} == {True}
    assert BenchSettings().judge_agreement_records == 100


@pytest.mark.slow
def test_the_real_judge_on_held_out_questions(tmp_path, smollm2_path, capsys):
    """SmolLM2-135M-Instruct zero-shot, through the command, on 6 held-out synthetic questions: it runs, every
    judgement is counted, the rates are rates. (Zero-shot it answers "A" nearly always; the 0.9 target is for a
    judge taught its task, so it is not asserted here.)"""
    from cluster.cli import main
    from embodied_data.synthetic.dataset import generate_dataset

    records = 6
    generate_dataset(str(tmp_path / "data"), num_scenes=10, seed=0, questions_per_scene=14, num_frames=9, fps=2.0,
                     size=96, progress=False)
    out = tmp_path / "agreement.json"
    assert main(["judge-agreement", "--judge", smollm2_path, "--data", str(tmp_path / "data"), "--max-records",
                 str(records), "--out", str(out), f"run_dir={tmp_path / 'run'}", "rewards.judge.batch_size=8"]) == 0
    report = json.loads(out.read_text())
    print(capsys.readouterr().out)
    assert report["records"] == records
    for form in FORMS:
        counts = report["forms"][form]
        assert counts["judged"] + counts["failures"] == records and counts["failures"] == 0
        assert 0.0 <= report[form] <= 1.0 and sum(counts["answers"].values()) == records
        assert sum(c["judged"] for c in counts["categories"].values()) == records

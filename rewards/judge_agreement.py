"""How well a consistency judge reads which option a reasoning concludes (issue 21 item 4).

For each multiple-choice record, the record's gold reasoning trace (`embodied_data.synthetic.traces`: the observations
that name the question's objects, cited from its video text) gets its conclusion swapped for an option drawn at random
(seeded per record: the right one or not), in two forms:

- "letter": `... So the answer is: <option text>. That is option X.`
- "words":  `... So the answer is: <option text>.` (the option named by its words only)

The judge (`rewards.judge.Judge`, any engine, or anything with its `judge(requests) -> letters` method) is asked about
every reasoning in one batched call, and its agreement is the share of its letters that name the drawn option. A failed
judgement (None) is counted and left out of the rate, as the consistency reward leaves it out. The two forms share the
drawn option of a record, so their rates compare on the same questions.

`embodied-r judge-agreement` (cluster/judge_agreement_cmd.py) runs it on a manifest's held-out split; the learning
benchmark (bench/learning_run.py) reports it for its judge in summary.json.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from embodied_data.records import Record
from embodied_data.synthetic.traces import swapped_think
from rewards.judge import JudgeRequest

FORMS = ("letter", "words")  # the conclusion states the option's letter / names the option by its words only


@dataclass(frozen=True)
class AgreementItem:
    """One question to the judge: `record`'s reasoning, concluding option `target` in `form`."""

    record_id: str
    category: str
    form: str  # one of FORMS
    target: str  # the option letter the reasoning concludes (drawn at random)
    request: JudgeRequest


def drawn_letter(record: Record, seed: int) -> str:
    """The option `record`'s swapped reasoning concludes: uniform over its letters, from (seed, record id) alone, so a
    record gets the same option whatever other records are measured with it."""
    return random.Random(f"{seed}:{record.id}").choice(record.letters)


def build_items(records: Sequence[Record], video_texts: Mapping[str, str] | None = None, seed: int = 0,
                forms: Sequence[str] = FORMS) -> list[AgreementItem]:
    """The judge's questions, record by record (each form of a record in `forms` order). `video_texts` maps a record's
    video (as in the manifest's ground-truth captions) or its id to the text its reasoning cites; without one the
    reasoning says that the video shows none of the question's objects. Numeric records are left out."""
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise ValueError(f"unknown agreement form(s) {unknown}; expected some of {FORMS}")
    texts = video_texts or {}
    items = []
    for record in records:
        if record.is_numeric:
            continue
        letter = drawn_letter(record, seed)
        text = texts.get(record.video, texts.get(record.id))
        for form in forms:
            think = swapped_think(record, text, letter, with_letter=form == "letter")
            request = JudgeRequest(question=record.question, choices=tuple(record.choices), think=think)
            items.append(AgreementItem(record.id, record.category, form, letter, request))
    return items


def _rate(agreed: int, judged: int) -> float | None:
    return agreed / judged if judged else None


def score(items: Sequence[AgreementItem], letters: Sequence[str | None]) -> dict:
    """Agreement per form: `{form: {"rate", "judged", "agreed", "failures", "answers", "categories"}}`, where rate is
    agreed / judged (None when nothing was judged), failures the judgements that came back None (not in judged),
    answers how often the judge named each letter, and categories the same counts and rate per category."""
    if len(items) != len(letters):
        raise ValueError(f"{len(letters)} judge letters for {len(items)} agreement items")
    by_form: dict[str, dict] = {}
    for item, letter in zip(items, letters):
        form = by_form.setdefault(item.form, {"judged": 0, "agreed": 0, "failures": 0, "answers": Counter(), "categories": {}})
        category = form["categories"].setdefault(item.category, {"judged": 0, "agreed": 0, "failures": 0})
        for counts in (form, category):
            if letter is None:
                counts["failures"] += 1
            else:
                counts["judged"] += 1
                counts["agreed"] += int(letter == item.target)
        if letter is not None:
            form["answers"][letter] += 1
    result = {}
    for name in [f for f in FORMS if f in by_form]:
        form = by_form[name]
        result[name] = {
            "rate": _rate(form["agreed"], form["judged"]),
            "judged": form["judged"], "agreed": form["agreed"], "failures": form["failures"],
            "answers": dict(sorted(form["answers"].items())),
            "categories": {
                category: {"rate": _rate(c["agreed"], c["judged"]), **c}
                for category, c in sorted(form["categories"].items())
            },
        }
    return result


def measure_agreement(judge, records: Sequence[Record], video_texts: Mapping[str, str] | None = None, seed: int = 0,
                      forms: Sequence[str] = FORMS) -> dict:
    """The judge's agreement on `records` (multiple choice; numeric ones are skipped and counted): `{"letter": rate,
    "words": rate, "forms": score(...), "records": n, "numeric_skipped": k, "chance": mean 1/options, "seed": seed}`.
    One `judge.judge` call over every item (the Judge batches them by its batch_size)."""
    items = build_items(records, video_texts, seed, forms)
    letters = list(judge.judge([item.request for item in items])) if items else []
    forms_scored = score(items, letters)
    chosen = [r for r in records if not r.is_numeric]
    return {
        **{name: forms_scored.get(name, {}).get("rate") for name in forms},
        "forms": forms_scored,
        "records": len(chosen),
        "numeric_skipped": len(records) - len(chosen),
        "chance": sum(1 / len(r.choices) for r in chosen) / len(chosen) if chosen else None,
        "seed": seed,
        "items": [
            {"record_id": item.record_id, "category": item.category, "form": item.form, "target": item.target,
             "judged": letter}
            for item, letter in zip(items, letters)
        ],
    }


def format_table(result: dict) -> str:
    """Agreement per category and form, then the overall line, as the command prints it."""
    forms = [f for f in FORMS if f in result["forms"]]
    categories = sorted({c for f in forms for c in result["forms"][f]["categories"]})

    def cell(counts: dict) -> str:
        rate = counts["rate"]
        text = "-" if rate is None else f"{rate:.3f}"
        return f"{text} ({counts['agreed']}/{counts['judged']}" + (f", {counts['failures']} failed)" if counts["failures"] else ")")

    header = ["category", *(f"{f} stated" if f == "letter" else f"{f} only" for f in forms)]
    rows = [[c, *(cell(result["forms"][f]["categories"].get(c, {"rate": None, "agreed": 0, "judged": 0, "failures": 0}))
                  for f in forms)] for c in categories]
    overall = ["overall", *(cell(result["forms"][f]) for f in forms)]
    widths = [max(len(r[i]) for r in [header, *rows, overall]) for i in range(len(header))]

    def render(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(render(header))
    answers = "; ".join(f"{f}: " + " ".join(f"{k} {v}" for k, v in result["forms"][f]["answers"].items()) for f in forms)
    chance = "-" if result["chance"] is None else f"{result['chance']:.3f}"
    return "\n".join([render(header), rule, *(render(r) for r in rows), rule, render(overall),
                      f"chance (mean 1/options): {chance}; the judge's letters: {answers}"])

"""`embodied-r ask`: one question about one video, end to end -- key frames, VLM descriptions (perception), then the
policy's `<think>` and `<answer>` on the paper's prompt -- printed for a person to read.

    embodied-r ask --run-dir runs/tiny --video walk.mp4 --question "Where is the door?" --choices "A. left" "B. right"
    embodied-r ask --policy /models/policy --vlm /models/Qwen2.5-VL-7B-Instruct --video walk.mp4 --question "How far?"

It lives in cluster/ because it spans layers (perception + rollout); everything runs in this process (no Ray).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from embodied_data.records import LETTERS, Record

log = logging.getLogger("embodied_r.ask")

# "A. left", "A) left", "(A) left", "A: left" -> ("A", "left").  A bare "A chair" is an option text, not a letter.
_LETTERED = re.compile(r"^\s*(?:\((?P<bracketed>[A-Ja-j])\)|(?P<bare>[A-Ja-j])[.):])\s*(?P<text>.*?)\s*$", re.DOTALL)


@dataclass
class AskOptions:
    video: str
    question: str
    choices: tuple[str, ...]  # option texts without their letters; empty: a numeric question
    policy: str
    vlm: str
    question_aware: bool = False  # the VLM sees the question (else the question-independent prompts)
    temperature: float = 0.0  # 0: greedy
    max_new_tokens: int | None = None  # None: sampling.max_new_tokens
    seed: int = 0
    use_cache: bool = True  # look up / add the description in perception.cache_dir
    device: str = "cpu"


@dataclass
class AskResult:
    video: str
    question: str
    choices: list[str]
    keyframe_frames: list[int]  # frame numbers of the key frames in the video
    video_text: str
    vlm_requests: int  # 0 when the description came from the cache
    prompt_tokens: int
    frames_dropped: int  # oldest frames cut to fit sampling.max_prompt_tokens
    completion: str
    thinking: str | None  # inside the first well-formed <think>...</think>, or None
    answer_text: str | None  # inside the first well-formed <answer>...</answer>, or None
    answer: str | float | None  # the option letter (multiple choice) or number (numeric) it names, or None
    policy: str
    vlm: str


def parse_choices(raw: list[str] | None) -> tuple[str, ...]:
    """Option texts without letters, from ["A. left", "B. right"] or ["left", "right"]; raises ValueError otherwise."""
    if not raw:
        return ()
    if len(raw) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} choices, got {len(raw)}")
    matches = [_LETTERED.match(item) for item in raw]
    if not any(matches):
        texts = tuple(item.strip() for item in raw)
    elif all(matches):
        texts = []
        for position, (item, match) in enumerate(zip(raw, matches)):
            letter = (match.group("bracketed") or match.group("bare")).upper()
            if letter != LETTERS[position]:
                raise ValueError(f"choice {position + 1} ({item!r}) is lettered {letter}, expected {LETTERS[position]}: "
                                 "give the choices in order A, B, C, ...")
            texts.append(match.group("text"))
        texts = tuple(texts)
    else:
        unlettered = [item for item, match in zip(raw, matches) if not match]
        raise ValueError(f"either every choice starts with its letter (\"A. left\") or none does; these do not: {unlettered}")
    empty = [position + 1 for position, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(f"choice(s) {empty} have no text")
    return texts


def ask(cfg, options: AskOptions) -> AskResult:
    """Runs the whole chain for one question; raises ValueError (bad video, prompt too long ...) with what is wrong."""
    from omegaconf import OmegaConf

    from perception.pool import vlm_question
    from rewards.answer import extract_answer, extract_think, parse_choice_letter, parse_number
    from rollout.config import SamplingConfig
    from rollout.engines.hf_engine import HFEngine
    from rollout.prompt import build_prompt

    typed = OmegaConf.to_object(cfg) if OmegaConf.is_config(cfg) else cfg
    # The answer is unknown; Record wants one that fits the choices, and nothing downstream of the prompt reads it.
    record = Record(id="ask", video=options.video, question=options.question, choices=options.choices,
                    answer="A" if options.choices else 0.0, category="ask", scene="", source="cli")
    question = vlm_question(record) if options.question_aware else None
    description, vlm_requests = _describe(typed.perception, options, question)

    engine = HFEngine(options.policy, dtype=typed.rollout.dtype, generate_batch_size=1, device=options.device)
    prompt = build_prompt(record, description.to_text(), engine.tokenizer, typed.sampling.max_prompt_tokens)
    sampling = SamplingConfig(
        num_samples=1,
        temperature=options.temperature,
        top_p=typed.sampling.top_p if options.temperature > 0 else 1.0,
        max_new_tokens=options.max_new_tokens or typed.sampling.max_new_tokens,
        max_prompt_tokens=typed.sampling.max_prompt_tokens,
    )
    completion = engine.generate([prompt.token_ids], sampling, seed=options.seed)[0][0].text
    answer_text = extract_answer(completion)
    if record.is_numeric:
        answer: str | float | None = parse_number(answer_text)
    else:
        answer = parse_choice_letter(answer_text, record.letters, record.choices)
    return AskResult(
        video=options.video,
        question=options.question,
        choices=list(options.choices),
        keyframe_frames=list(description.keyframe_frames),
        video_text=description.to_text(),
        vlm_requests=vlm_requests,
        prompt_tokens=len(prompt.token_ids),
        frames_dropped=prompt.frames_dropped,
        completion=completion,
        thinking=extract_think(completion),
        answer_text=answer_text,
        answer=answer,
        policy=options.policy,
        vlm=options.vlm,
    )


def _describe(perception_cfg, options: AskOptions, question: str | None):
    """The video's description (from the run's cache when there) and the VLM requests it cost."""
    from perception.cache import DescriptionCache, description_key, file_sha256
    from perception.describer import Describer

    if not Path(options.video).is_file():
        raise FileNotFoundError(f"video {options.video} does not exist")
    cache, key = None, None
    if options.use_cache:
        cache = DescriptionCache(perception_cfg.cache_dir, flush_every=1)
        key = description_key(file_sha256(options.video), perception_cfg.keyframes, perception_cfg.vlm, options.vlm, question)
        cached = cache.get(key)
        if cached is not None:
            log.info("description of %s found in %s", options.video, perception_cfg.cache_dir)
            return cached, 0
    describer = Describer(perception_cfg, options.vlm)
    description = describer.describe_video(options.video, question)  # VideoError (a ValueError) names the file
    if cache is not None:
        cache.put(key, description, question=question, model=options.vlm)  # flush_every=1: written now, atomically
    return description, describer.num_requests


def render(result: AskResult) -> str:
    """The video text, the question, the thinking and the answer, for a person."""
    letters = LETTERS[: len(result.choices)]
    if result.answer is None:
        answer = ("(none: the completion has no well-formed <answer>...</answer>)" if result.answer_text is None
                  else f"(unreadable: <answer> holds {result.answer_text!r}, which names no option)" if result.choices
                  else f"(unreadable: <answer> holds {result.answer_text!r}, which holds no number)")
    elif isinstance(result.answer, str):
        answer = f"{result.answer}. {result.choices[letters.index(result.answer)]}"
    else:
        answer = f"{result.answer:g}"
    source = "from the cache" if result.vlm_requests == 0 else f"{result.vlm_requests} VLM requests"
    lines = [
        f"video: {result.video} ({len(result.keyframe_frames)} key frames, frames {result.keyframe_frames}; {source})",
        f"policy: {result.policy}",
        f"VLM: {result.vlm}",
        "",
        "--- video text ---",
        result.video_text,
        "",
        "--- question ---",
        result.question,
        *[f"{letter}. {text}" for letter, text in zip(letters, result.choices)],
        "",
        "--- thinking ---",
        result.thinking if result.thinking is not None else "(none: the completion has no well-formed <think>...</think>)",
        "",
        "--- answer ---",
        answer,
        "",
        f"--- completion ({result.prompt_tokens} prompt tokens"
        + (f", {result.frames_dropped} oldest frames dropped to fit" if result.frames_dropped else "") + ") ---",
        result.completion if result.completion.strip() else f"(only whitespace: {result.completion[:80]!r})",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- defaults, CLI


def load_ask_config(config: str | None, run_dir: str | None, overrides: list[str]):
    """--config, else the run's own config.yaml (its perception settings and cache), else the schema."""
    from cluster.config import load_config

    if config is None and run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        config = str(Path(run_dir) / "config.yaml")
    derived = [f"run_dir={run_dir}"] if run_dir is not None and config is None else []
    return load_config(config, derived + list(overrides))


def run_path(run_dir: str, cfg, *parts: str) -> Path:
    """<run_dir>/parts, spelled as the run spelled it (cfg.run_dir) when that is the same folder: model paths are part of
    the description cache's key, so the spelling `train` used finds its cached descriptions."""
    given = Path(run_dir, *parts)
    spelled = Path(cfg.run_dir, *parts)
    try:
        if spelled.exists() and given.exists() and spelled.samefile(given):
            return spelled
    except OSError:
        pass
    return given


def resolve_policy(policy: str | None, cfg, run_dir: str | None) -> str:
    """--policy; else the run's newest checkpoint policy, its SFT policy, the config's models.policy, its models/policy."""
    from cluster.checkpoints import latest_checkpoint
    from engines.model_refs import resolve_named

    if policy:
        return resolve_named(policy, key="--policy")
    candidates: list[str] = []
    if run_dir is not None:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None:
            candidates.append(str(Path(checkpoint) / "policy"))
        candidates.append(str(run_path(run_dir, cfg, "sft", "policy")))
    configured = resolve_named(cfg.models.policy, key="models.policy") if cfg.models.policy != "tiny" else None
    if configured:
        candidates.append(configured)
    if run_dir is not None:
        candidates.append(str(run_path(run_dir, cfg, "models", "policy")))
    for candidate in candidates:
        if (Path(candidate) / "config.json").is_file():
            return candidate
        if candidate == configured and not Path(candidate).exists():
            return candidate  # a hub id named by the config
    tried = f" (tried {', '.join(candidates)})" if candidates else ""
    raise ValueError("no policy model: pass --policy PATH (a causal-LM folder with config.json), or --run-dir DIR of a "
                     f"run (its newest checkpoints/step_*/policy, then sft/policy, then models/policy){tried}")


def resolve_vlm(vlm: str | None, cfg, run_dir: str | None) -> str:
    """--vlm; else the config's models.vlm, else the run's models/vlm."""
    if vlm:
        return vlm
    if cfg.models.vlm != "tiny":
        return cfg.models.vlm
    if run_dir is not None:
        candidate = run_path(run_dir, cfg, "models", "vlm")
        if (candidate / "config.json").is_file():
            return str(candidate)
    missing = f"; {Path(run_dir, 'models', 'vlm')} has no model" if run_dir is not None else ""
    raise ValueError(f"no VLM: pass --vlm PATH (a Qwen2.5-VL folder), or --run-dir DIR of a run that built one "
                     f"(DIR/models/vlm){missing}")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        cfg = load_ask_config(args.config, args.run_dir, args.overrides)
        options = AskOptions(
            video=args.video,
            question=args.question,
            choices=parse_choices(args.choices),
            policy=resolve_policy(args.policy, cfg, args.run_dir),
            vlm=resolve_vlm(args.vlm, cfg, args.run_dir),
            question_aware=args.question_aware or bool(cfg.perception.question_aware),
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            # Only a cache a run already made: never a stray folder where a config's relative cache_dir points.
            use_cache=not args.no_cache and Path(cfg.perception.cache_dir).is_dir(),
            device=args.device or _default_device(),
        )
        result = ask(cfg, options)
    except (ValueError, OSError) as error:  # OSError: a model folder transformers cannot load
        print(f"embodied-r ask: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result)) if args.json else render(result))
    return 0


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ask",
        description=(
            "Runs the Embodied-R chain on one video in this process: key frames (ORB overlap rule), one VLM request per "
            "key frame (the description is looked up in and added to the run's description cache when that exists), "
            "the paper's prompt, then the policy's completion. Prints the video text, the question, the <think> text "
            "and the answer parsed from <answer> (and the raw completion)."
        ),
        epilog=(
            "Examples: embodied-r ask --run-dir runs/tiny --video clip.mp4 --question \"Where is the door?\" --choices "
            "\"A. left\" \"B. right\" | embodied-r ask --policy runs/a/sft/policy --vlm /models/Qwen2.5-VL-7B --video "
            "clip.mp4 --question \"How far is the car, in metres?\". Put key=value overrides before --choices, or after "
            "`--` (e.g. -- sampling.max_new_tokens=256 perception.vlm.max_new_tokens=128)."
        ),
    )
    parser.add_argument("--video", required=True, help="the video file (anything OpenCV reads)")
    parser.add_argument("--question", required=True, help="the question, as a user would ask it")
    parser.add_argument("--choices", nargs="+", metavar="CHOICE",
                        help="the options, lettered (\"A. left\" \"B. right\") or not (\"left\" \"right\"); "
                        "leave out for a numeric question")
    parser.add_argument("--run-dir", metavar="DIR", help="a run folder: its config.yaml, models/vlm, and newest "
                        "checkpoint's policy (else sft/policy, else models/policy) are the defaults")
    parser.add_argument("--policy", metavar="PATH", help="the reasoning policy (a causal-LM folder); default from --run-dir")
    parser.add_argument("--vlm", metavar="PATH", help="the perception VLM (a Qwen2.5-VL folder); default from --run-dir")
    parser.add_argument("--config", metavar="FILE", help="YAML config for the perception / sampling settings "
                        "(default: the run's config.yaml, else the built-in schema)")
    parser.add_argument("--question-aware", action="store_true",
                        help="let the VLM see the question (default: perception.question_aware of the config)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="completion length (default sampling.max_new_tokens)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    parser.add_argument("--device", default=None, help="torch device for the policy (default cuda if available, else cpu)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the run's description cache")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sampling.max_new_tokens=256")
    parser.set_defaults(func=run_from_args)

"""The GRPO training driver: data -> perception -> rollouts -> rewards -> DeepSpeed learner -> weight broadcast, every step.

Its command is cluster/train.py: `embodied-r train` and `python -m cluster.train` (the entry for `ray job submit`).
"""

from __future__ import annotations

import collections
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import ray
from omegaconf import DictConfig, OmegaConf

from actors import PlacementLost, reserve_pool
from cluster.checkpoints import (
    checkpoint_dir, discard, latest_checkpoint, prune, read_driver_state, verify_checkpoint, write_driver_state,
)
from cluster.config import TrainConfig, resolved_yaml
from cluster.data import EpochSampler, load_run_data, tokenizer_corpus
from cluster.dynamic_sampling import refill
from cluster.failpoints import failpoint, failpoint_error, failpoint_pause
from cluster.learner_group import LearnerGroup
from cluster.evaluate import TrainingEval, load_held_out, with_held_out
from cluster.metrics import PhaseClock, read_metrics
from cluster.models import prepare_models
from cluster.perceive import describe_videos
from cluster.plots import RunPlots
from cluster.preemption import CheckpointFailed, Preempted, Preemption, ResourcesLost, resume_command
from cluster.prompts import build_prompt_table
from cluster.runtime import run_log, start_ray
from cluster.samples import SampleRecorder
from cluster.tracking import make_tracker
from cluster.warmstart import sft_warmup
from cluster.weight_sync import WeightSync, gpu_pools, wire_dtype
from embodied_data.atomic import write_text_atomically
from cluster.stages import RolloutPipeline, example_lines, learn, score, step_row
from rollout.pool import RolloutPool, reserve_rollout_pool

log = logging.getLogger("embodied_r.train")
JUDGE_READY_TIMEOUT_S = 600.0  # a judge replica that has not loaded its model by then fails the start, naming it


def train(config: DictConfig) -> Path:
    """Runs a whole training job; returns its run dir. The run's log goes to <run_dir>/train.log as well."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(run_dir / "config.yaml", resolved_yaml(config))
    with run_log(run_dir / "train.log"):
        return run_training(OmegaConf.to_object(config), run_dir)


def run_training(cfg: TrainConfig, run_dir: Path) -> Path:
    """Raises Preempted after a SIGTERM (checkpointed, actors shut down), CheckpointFailed when a checkpoint could not
    be written under trainer.checkpoint_failure=stop, and ResourcesLost when a node died and nothing could take its
    actors; cluster/train.py turns them into exit codes 75, 74 and 69."""
    preemption = Preemption(cfg.trainer.preemption_grace_s, run_dir, lambda: latest_checkpoint(str(run_dir)))
    try:
        return _run_training(cfg, run_dir, preemption)
    finally:
        preemption.uninstall()


def _run_training(cfg: TrainConfig, run_dir: Path, preemption: Preemption) -> Path:
    clock = PhaseClock()
    start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.namespace)
    preemption.install()  # after ray.init, which installs its own (sys.exit on SIGTERM)
    clock.mark("Ray")

    # 1. Data, models, perception: everything the prompts need, computed once and cached under the run dir.
    data = load_run_data(cfg)
    models = prepare_models(cfg, tokenizer_corpus(data))
    clock.mark("data and models")
    held_out = load_held_out(cfg, data)  # trainer.eval_every > 0: held-out questions, described with the training ones
    video_texts = describe_videos(cfg, with_held_out(data, held_out), models.vlm)
    prompts = build_prompt_table(cfg, data.records, video_texts, models.policy)
    evaluation = TrainingEval.build(cfg, held_out, video_texts, models.policy)  # None when trainer.eval_every is 0
    clock.mark("perception")
    log.info("%d prompts ready (%d records without a description skipped)", len(prompts), len(data.records) - len(prompts))

    # 2. The pools: learner ranks, rollout workers, consistency judges, each in its own placement group; whatever
    # happens below, every actor and reservation is released on the way out.
    pools = TrainingPools(cfg, models)
    try:
        pools.start()
        learner_info = pools.learner.info
        clock.mark("pools")
        # 3. Fresh start (with the optional SFT warm-up) or resume, on the learner while the rollout workers and judges
        # still load their models; then the weight group, and the workers get the learner's weights if they changed.
        sampler = EpochSampler(len(prompts), cfg.trainer.seed)
        start_step, weights_changed = begin(cfg, run_dir, pools, sampler, prompts, resume=cfg.trainer.resume)
        clock.mark("resume" if start_step else "warm-up")
        pools.connect_workers()
        if weights_changed:
            pools.sync.broadcast(start_step)
        clock.mark("workers ready")
        metrics_log = make_tracker(cfg.tracking, run_dir, start_step)  # metrics.jsonl, TensorBoard, W&B: the same rows
        samples = SampleRecorder(cfg, run_dir, video_texts, start_step, metrics_log)  # <run_dir>/samples: `embodied-r view`
        plots = RunPlots(run_dir, enabled=cfg.tracking.plots)  # <run_dir>/plots, drawn beside the loop
        progress = make_progress(cfg, start_step)
        pipeline = PreemptiblePipeline(cfg, pools, sampler, prompts, start_step, preemption)

        # 4. The loop: rollouts -> rewards -> learner -> weights to the workers (with trainer.max_staleness=1 the next
        # step's rollouts are generated meanwhile). A lost learner rank sends it back to the last complete checkpoint,
        # trainer.max_restarts times.
        # A SIGTERM sets preemption.requested: the step in flight ends in a checkpoint (PreemptiblePipeline makes it a
        # barrier), then the loop stops; `saved` is the last step a complete checkpoint holds.
        saved = start_step
        step = start_step + 1
        while step <= cfg.trainer.steps:
            if preemption.requested and saved == step - 1:
                break
            try:
                # The job-stop drill's window (tests/test_multinode.py): held until the SIGTERM has come, 120 s at most.
                failpoint_pause("step.begin", step, 120.0, until=lambda: preemption.requested)
                started = time.perf_counter()
                rollouts, synced_at_collect = pipeline.rollouts(step)
                scored = refill(cfg, pools.scorer, pipeline, score(cfg, pools.scorer, rollouts), step)
                for line in example_lines(rollouts, scored, cfg.trainer.log_completions):
                    log.info(line)
                learned = learn(pools.learner, scored, step)
                synced = {**synced_at_collect, **pipeline.learned(step, learned.updated)}
                row = step_row(step, rollouts, scored, learned, synced, pools.fault_metrics(), started)
                if evaluation is not None and evaluation.due(step):
                    row.update(evaluation.metrics(pools.rollout, pipeline.policy_version))
                metrics_log.write(row)
                samples.record(step, rollouts, scored, row, evaluation, learned)
                progress.update(row)
                if pipeline.is_barrier(step):
                    if save_checkpoint(cfg, pools, sampler, step):
                        saved = step
                    if preemption.requested:
                        break
                    if step < cfg.trainer.steps:  # the last step's plots come at the end
                        plots.request()
            except ray.exceptions.RayError as error:
                if not pools.learner.dead_ranks():
                    raise
                step = pools.restart_learner(cfg, run_dir, sampler, prompts, error) + 1
                saved = step - 1
                pipeline.reset(step - 1)
                metrics_log.rewind(step - 1)
                samples.rewind(step - 1)
                progress.rewind(step - 1)
                continue
            step += 1
        metrics_log.close()
        progress.close()
        clock.mark("GRPO steps")
    except PlacementLost as lost:
        # A node died with actors on it and no live node can take them: stop (every actor is shut down below) and
        # say what the cluster lacks; the resume goes back to the newest complete checkpoint.
        newest = latest_checkpoint(str(run_dir))
        message = (f"{lost}. Without a live node now: {pools.unplaced() or 'nothing more'}; the newest complete "
                   f"checkpoint is {newest or 'none (the run starts over)'}")
        log.error("%s; resume with: %s", message, resume_command(run_dir))
        raise ResourcesLost(message, resume_command(run_dir)) from lost
    finally:
        pools.close()
    clock.mark("shutdown")
    if preemption.requested:
        preemption.cancel()  # checkpointed and shut down within the grace
        newest = latest_checkpoint(str(run_dir))
        message = (f"preempted (SIGTERM): checkpoint {newest} holds step {saved}; every actor was shut down"
                   if newest and saved > 0 else "preempted (SIGTERM) before any step was checkpointed")
        log.warning("%s; resume with: %s", message, resume_command(run_dir))
        raise Preempted(message, resume_command(run_dir))
    if cfg.tracking.plots:
        log.info("plots: %s", ", ".join(str(path) for path in plots.finish()))
        clock.mark("plots")
    log.info("done: %d steps, run dir %s", cfg.trainer.steps, run_dir)
    log.info(summarize(read_metrics(run_dir / "metrics.jsonl"), learner_info))
    log.info(clock.summary())
    write_text_atomically(run_dir / "wall_time.json", json.dumps(clock.as_dict(), indent=2))
    return run_dir


class TrainingPools:
    """The learner group, the rollout pool, the reward scorer (and its judges) and the weight sync between them, with
    the fault counts the metrics report. `close` releases everything, whatever state the run ended in."""

    def __init__(self, cfg: TrainConfig, models) -> None:
        self.cfg, self.models = cfg, models
        self.learner_pool = self.rollout_pool = self.judge_pool = None
        self.learner: LearnerGroup | None = None
        self.rollout: RolloutPool | None = None
        self.scorer = None
        self.sync: WeightSync | None = None
        self.learner_restarts = 0
        self.checkpoint_failures = 0

    def start(self) -> None:
        """Reserves every pool's bundles, then starts all the actors at once; returns when the learner is up, while
        the rollout workers and the judges may still be loading their models (`connect_workers` waits for them)."""
        cfg = self.cfg
        self.learner_pool = reserve_pool(
            "learner", cfg.learner.num_replicas, cfg.learner.num_cpus_per_replica, cfg.learner.num_gpus_per_replica,
            resources=dict(cfg.learner.resources) or None, timeout_s=cfg.trainer.placement_timeout_s,
        )
        self.rollout_pool = reserve_rollout_pool("rollout", cfg.rollout, timeout_s=cfg.trainer.placement_timeout_s)
        self.rollout = RolloutPool(cfg.rollout, self.models.policy, pool=self.rollout_pool,
                                   max_replacements=cfg.trainer.max_worker_replacements, wait=False)
        self.scorer, self.judge_pool = make_reward_scorer(cfg, self.models.judge, wait=False)
        self.start_learner()
        info = self.learner.info
        log.info(
            "learner: %d rank(s), DeepSpeed %s ZeRO-%d, %s on %s, %s%s", info["world_size"], info["deepspeed"],
            info["zero_stage"], info["backend"], info["device"], info["dtype"],
            ", frozen reference for KL" if info["reference"] else "",
        )

    def connect_workers(self) -> None:
        """Waits for the rollout workers and judges, then joins the workers and the learner in the weight group."""
        self.rollout.wait_ready()
        if self.scorer.pool is not None:
            self.scorer.pool.wait_ready(JUDGE_READY_TIMEOUT_S)
        self.connect_sync()
        ranks = self.learner.rendezvous()
        log.info(
            "rendezvous: learner group at %s:%d, weight group at %s:%d, both hosted by learner rank 0 on node %s",
            *ranks[0]["groups"]["learner"], *ranks[0]["groups"]["weights"], ranks[0]["node_ip"],
        )

    def start_learner(self) -> None:
        cfg = self.cfg
        self.learner = LearnerGroup(cfg.learner, self.models.policy, self.learner_pool, total_steps=cfg.trainer.steps,
                                    seed=cfg.trainer.seed, max_new_tokens=cfg.sampling.max_new_tokens,
                                    sampling_temperature=cfg.sampling.temperature)

    def connect_sync(self) -> None:
        cfg = self.cfg
        self.sync = WeightSync(
            self.learner, self.rollout, backend=cfg.weight_sync.backend, bucket_mb=cfg.weight_sync.bucket_mb,
            timeout_s=cfg.weight_sync.timeout_s, wire_dtype=wire_dtype(cfg.rollout.dtype, self.models.policy),
            verify=cfg.weight_sync.verify, gpus=gpu_pools(cfg),
        )

    def restart_learner(self, cfg: TrainConfig, run_dir: Path, sampler: EpochSampler, prompts, error: Exception) -> int:
        """Rebuilds the learner group from the newest complete checkpoint after a rank died; returns the step it
        resumes after. A step in flight is lost with the rank (its weights and optimiser state went with it)."""
        lost = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        self.learner_restarts += 1
        if self.learner_restarts > cfg.trainer.max_restarts:
            raise RuntimeError(
                f"a learner rank died ({lost}) and trainer.max_restarts={cfg.trainer.max_restarts} restarts are used up; "
                f"resume with: embodied-r train --config {run_dir / 'config.yaml'} trainer.resume=true"
            ) from error
        log.warning("learner lost (%s): rebuilding it from the last checkpoint (restart %d of %d)",
                    lost, self.learner_restarts, cfg.trainer.max_restarts)
        self.learner.shutdown()
        self.start_learner()
        self.connect_sync()
        start_step, _ = begin(cfg, run_dir, self, sampler, prompts, resume=True)
        self.sync.broadcast(start_step)  # the workers hold weights of steps the new learner does not have
        return start_step

    def unplaced(self) -> str:
        """Every pool's bundles that no live node holds (after a node died), e.g. "rollout: 2 x {'CPU': 0.5}"."""
        lacking = []
        for pool in (self.learner_pool, self.rollout_pool, self.judge_pool):
            if pool is not None:
                counts = collections.Counter(repr(pool.bundles[index]) for index in pool.unplaced_bundles())
                lacking += [f"{pool.name}: {count} x {bundle}" for bundle, count in counts.items()]
        return "; ".join(lacking)

    def fault_metrics(self) -> dict:
        judges = self.scorer.pool if self.scorer is not None else None
        return {
            "faults/rollout_workers_replaced": self.rollout.replacements,
            "faults/learner_restarts": self.learner_restarts,
            "faults/judge_replicas_replaced": judges.replaced if judges is not None else 0,
            "faults/checkpoint_failures": self.checkpoint_failures,
        }

    def close(self) -> None:
        for name, stop in (("rollout", self.rollout), ("scorer", self.scorer), ("learner", self.learner)):
            if stop is not None:
                try:
                    stop.shutdown()
                except Exception:  # keep releasing the rest
                    log.exception("shutting down the %s failed", name)
        for pool in (self.learner_pool, self.rollout_pool, self.judge_pool):
            if pool is not None:  # the reserved bundles go back: a caller in the same process can use them
                pool.release()


def begin(cfg: TrainConfig, run_dir: Path, pools: TrainingPools, sampler: EpochSampler, prompts, resume: bool) -> tuple[int, bool]:
    """Puts the learner where training starts: the newest complete checkpoint (resume), or a fresh policy after the
    optional SFT warm-up. Returns the last step already done, and whether the learner's weights now differ from
    models.policy (the workers' weights), so they must be sent. A checkpoint whose files differ from its hash
    manifest is refused (CheckpointIntegrityError naming the file) before anything of it is loaded."""
    resume_from = latest_checkpoint(str(run_dir)) if resume else None
    start_step = 0
    if resume_from:
        verify_checkpoint(resume_from)
        state = read_driver_state(resume_from)
        pools.learner.load_checkpoint(resume_from)
        sampler.restore(state["sampler"])
        start_step = int(state["step"])
        log.info("resumed from %s at step %d", resume_from, start_step)
    else:
        sampler.restore(EpochSampler(len(prompts), cfg.trainer.seed).state())
        if cfg.trainer.sft_warmup_steps:
            from transformers import AutoTokenizer

            nll = sft_warmup(
                pools.learner, prompts, AutoTokenizer.from_pretrained(pools.models.policy), cfg.trainer.sft_warmup_steps,
                cfg.trainer.sft_warmup_prompts_per_step, cfg.trainer.sft_warmup_lr, cfg.trainer.seed,
            )
            log.info("SFT warm-up: NLL %.3f -> %.3f per target token", nll[0], nll[-1])
    return start_step, bool(resume_from or cfg.trainer.sft_warmup_steps)


def summarize(rows: list[dict], learner_info: dict) -> str:
    """Mean seconds of each phase per step, and the final rewards: the figures a user checks first."""
    if not rows:
        return "no steps were run"
    phases = ("rollout", "reward", "learn", "sync", "step")
    means = {p: sum(r[f"time/{p}"] for r in rows) / len(rows) for p in phases}
    last = rows[-1]
    return (
        f"{len(rows)} steps; mean seconds per step: "
        + ", ".join(f"{p} {means[p]:.2f}" for p in phases)
        + f"; DeepSpeed ZeRO-{learner_info['zero_stage']} ({learner_info['backend']}, {learner_info['device']})"
        + f"; last step reward/total {last['reward/total']:.3f}, accuracy {last['reward/accuracy']:.3f}, format {last['reward/format']:.3f}"
    )


def make_reward_scorer(cfg: DictConfig, judge_model: str, wait: bool = True) -> tuple:
    """The reward scorer, and the judge pool's reserved bundles (None without a judge). `wait=False`: the judges are
    created and load meanwhile; the caller waits with `scorer.pool.wait_ready`."""
    from rewards.combine import RewardScorer
    from rewards.judge_pool import JudgePool

    judge, judge_pool = None, None
    if cfg.rewards.judge.enabled and any(stage.consistency > 0 for stage in cfg.rewards.stages):
        judge_pool = reserve_pool(
            "judge", cfg.rewards.judge.num_replicas, cfg.rewards.judge.num_cpus_per_replica, cfg.rewards.judge.num_gpus_per_replica,
            timeout_s=cfg.trainer.placement_timeout_s,
        )
        judge = JudgePool(cfg.rewards.judge, judge_model, pool=judge_pool, ready_timeout_s=JUDGE_READY_TIMEOUT_S if wait else None)
    return RewardScorer(cfg.rewards, judge), judge_pool


class PreemptiblePipeline(RolloutPipeline):
    """The rollout pipeline, where a requested preemption makes a barrier of the step in flight, or of the next one when
    that one's generation had already started (trainer.max_staleness=1): the checkpoint written there is then exact."""

    def __init__(self, cfg, pools, sampler: EpochSampler, prompts: list, start_step: int, preemption: Preemption):
        super().__init__(cfg, pools, sampler, prompts, start_step)
        self.preemption = preemption

    def is_barrier(self, step: int) -> bool:
        return super().is_barrier(step) or (self.preemption.requested and self._in_flight is None)


def save_checkpoint(cfg: DictConfig, pools: TrainingPools, sampler: EpochSampler, step: int) -> bool:
    """Writes step `step`'s checkpoint; True when it is complete. A write that fails with an OSError (a full disk, a
    quota, an I/O error; from the learner or the driver) is reported naming the path, what it left is removed (the
    previous complete checkpoint stays, untouched by pruning), faults/checkpoint_failures counts it, and then the run
    goes on (trainer.checkpoint_failure=continue: False) or stops (stop: CheckpointFailed, exit 74)."""
    target = checkpoint_dir(cfg.run_dir, step)
    if Path(target).exists():  # what a run killed while writing this step's checkpoint left (resume went back past it)
        shutil.rmtree(target)
    state = {"step": step, "sampler": sampler.state()}
    try:
        pools.learner.save_checkpoint(target, client_state=state)
        failpoint("checkpoint.before_driver_state", step)  # the fault drills' place to kill a driver mid-checkpoint
        failpoint_error("checkpoint.enospc", step, Path(target) / "manifest.sha256")  # the full-disk drill's
        write_driver_state(target, state)  # the manifest, then the driver state: its presence marks the checkpoint complete
    except (OSError, ray.exceptions.RayTaskError) as error:
        disk_error = error if isinstance(error, OSError) else getattr(error, "cause", None)
        if not isinstance(disk_error, OSError):  # a learner that failed otherwise, or died: not a disk problem
            raise
        return _checkpoint_failed(cfg, pools, target, step, disk_error, from_learner=not isinstance(error, OSError))
    prune(cfg.run_dir, cfg.trainer.keep_checkpoints)
    log.info("checkpoint %s", target)
    return True


def _checkpoint_failed(cfg: DictConfig, pools: TrainingPools, target: str, step: int, error: OSError,
                       from_learner: bool) -> bool:
    pools.checkpoint_failures += 1
    removed = discard(target)
    where = error.filename or target
    previous = latest_checkpoint(cfg.run_dir)
    log.error("checkpoint of step %d failed: %s (%s)%s; the newest complete checkpoint is %s",
              step, error.strerror or error, where, f", removed {', '.join(removed)}" if removed else "",
              previous or "none")
    # Several learner ranks: one that failed may have left the others inside a collective of the write; stop.
    stop = cfg.trainer.checkpoint_failure == "stop" or (from_learner and cfg.learner.num_replicas > 1)
    if stop:
        raise CheckpointFailed(
            f"checkpoint of step {step} could not be written: {error.strerror or error} ({where}); the newest complete "
            f"checkpoint is {previous or 'none'}", resume_command(cfg.run_dir)) from error
    log.warning("trainer.checkpoint_failure=continue: training goes on without the checkpoint of step %d "
                "(faults/checkpoint_failures=%d)", step, pools.checkpoint_failures)
    return False


class make_progress:
    """A tqdm bar over steps showing the latest reward, loss and step time (silent when progress is off)."""

    def __init__(self, cfg: DictConfig, start: int):
        from tqdm import tqdm

        self.bar = tqdm(total=cfg.trainer.steps, initial=start, desc="GRPO", unit="step", disable=not cfg.trainer.progress, file=sys.stderr)

    def update(self, row: dict) -> None:
        self.bar.set_postfix(
            reward=f"{row['reward/total']:.3f}", acc=f"{row['reward/accuracy']:.2f}", loss=f"{row['loss']:.4f}", s=f"{row['time/step']:.1f}"
        )
        self.bar.update(1)

    def rewind(self, step: int) -> None:
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

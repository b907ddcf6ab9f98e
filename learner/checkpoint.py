"""A learner rank's checkpoint: DeepSpeed's state, the HF-format policy (and KL reference, or with LoRA its base and
adapters) and the rank's RNG states, written into a temporary folder and renamed into place; and read back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from learner import lora
from learner.broadcast import exported_weights
from learner.lora import ExportedWeight
from learner.zero import gathered


def save(learner, checkpoint_dir: str, client_state: dict) -> str:
    """Writes DeepSpeed state and an HF-format policy into a temp folder, then renames it into place (atomic).

    `learner` is a Learner (learner/actor.py), whose every rank calls this together, as `load`."""
    final = Path(checkpoint_dir)
    tmp = final.with_name(final.name + ".tmp")
    if learner.rank == 0 and tmp.exists():
        shutil.rmtree(tmp)
    _barrier(learner.world_size)
    # With LoRA the frozen base goes to base/ (below), so DeepSpeed's part holds the adapters and their optimiser only.
    learner.engine.save_checkpoint(
        str(tmp / "deepspeed"), tag="state", client_state=client_state, exclude_frozen_parameters=learner.cfg.lora.enabled
    )
    (tmp / "rng").mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), tmp / "rng" / f"rank_{learner.rank}.pt")
    if learner.cfg.lora.enabled:
        _save_lora(learner, tmp)
        _barrier(learner.world_size)
        if learner.rank == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        _barrier(learner.world_size)
        return str(final)
    state_dict = _full_state_dict(learner, learner.engine)
    reference_state = _full_state_dict(learner, learner.reference) if learner.reference is not None else None
    if learner.rank == 0:
        learner.engine.module.save_pretrained(tmp / "policy", state_dict=state_dict)
        learner.tokenizer.save_pretrained(tmp / "policy")
        if learner.reference is not None:
            # The KL reference is the policy RL started from (after any SFT warm-up), not models.policy: a resumed
            # run must measure KL against the same model.
            learner.reference.module.save_pretrained(tmp / "reference", state_dict=reference_state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    _barrier(learner.world_size)
    return str(final)

def load(learner, checkpoint_dir: str) -> dict:
    """Restores the policy engine (weights, optimiser, LR schedule), the KL reference and this rank's RNG states."""
    root = Path(checkpoint_dir)
    _, client_state = learner.engine.load_checkpoint(str(root / "deepspeed"), tag="state", load_module_strict=not learner.cfg.lora.enabled)
    if learner.cfg.lora.enabled:
        # The base weights (changed by an SFT warm-up's fold): DeepSpeed's module state under ZeRO-3 lacks them.
        if not (root / "base").is_dir():
            raise FileNotFoundError(f"checkpoint {checkpoint_dir} holds no base/ weights for learner.lora")
        _load_named(lora.base_parameters(learner.engine.module), root / "base", learner.rank)
    elif learner.reference is not None:
        if not (root / "reference").is_dir():
            raise FileNotFoundError(f"checkpoint {checkpoint_dir} holds no reference/ policy for the KL term")
        _load_named(dict(learner.reference.module.named_parameters()), root / "reference", learner.rank)
    rng_file = root / "rng" / f"rank_{learner.rank}.pt"
    if rng_file.is_file():
        set_rng_state(load_rng_state(rng_file))
    return client_state or {}

@torch.no_grad()
def _load_named(params: dict[str, torch.nn.Parameter], folder: Path, rank: int) -> None:
    """Copies the HF-format weights saved in `folder` into `params` (by name; gathered and scattered under ZeRO-3)."""
    from safetensors.torch import load_file

    saved: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        saved.update(load_file(shard))
    for name, param in params.items():
        with gathered([param], rank) as writes:
            if writes and name in saved:  # a name not saved is a tied alias saved under its other name
                param.data.copy_(saved[name])

def _save_lora(learner, tmp: Path) -> None:
    """With LoRA: `policy/` the merged model in HF format (what the workers and eval load), `base/` the frozen base
    weights (the KL reference, and what resume restores), `adapter/` the adapters in peft's format; the adapters'
    optimiser state is in `deepspeed/`. Every rank joins the ZeRO-3 gathers."""
    module = learner.engine.module
    merged = _gather_all(exported_weights(module))
    base = _gather_all(_as_is(lora.base_parameters(module)))
    adapter_state = _gather_all(_as_is({name: p for name, p in module.named_parameters() if p.requires_grad}))
    if learner.rank == 0:
        base_model = module.get_base_model()
        base_model.save_pretrained(tmp / "policy", state_dict=merged)
        learner.tokenizer.save_pretrained(tmp / "policy")
        base_model.save_pretrained(tmp / "base", state_dict=base)
        module.save_pretrained(tmp / "adapter", state_dict=adapter_state)

def _full_state_dict(learner, engine):
    if learner.cfg.zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return None if learner.rank else engine.module.state_dict()


def _barrier(world_size: int) -> None:
    if dist.is_initialized() and world_size > 1:
        dist.barrier()


def rng_state() -> dict:
    """Every generator a training step draws from (LoRA dropout, sampling in the loss): the CPU's, Python's, and on
    GPU every device's, so a resumed run continues the same streams."""
    import random

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_state(path: Path) -> dict:
    """The RNG states `rng_state` saved: tensors, tuples and ints only, so torch's weights-only unpickler reads them and
    the file cannot run code (DeepSpeed's own state files still need full unpickling: checkpoints are trusted)."""
    return torch.load(path, weights_only=True)


def set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_is(named: dict[str, torch.nn.Parameter]) -> list[ExportedWeight]:
    return [ExportedWeight(name, (p,), lambda p=p: p.data) for name, p in named.items()]


def _gather_all(weights: list[ExportedWeight]) -> dict[str, torch.Tensor]:
    """Every tensor in full, on the CPU; under ZeRO-3 one gather of all their parameters (a collective: every rank
    calls it), as a checkpoint holds the whole model anyway."""
    sources = list({id(p): p for w in weights for p in w.params}.values())
    with gathered(sources), torch.no_grad():
        return {w.name: w.compute().detach().to("cpu", copy=True) for w in weights}

"""LoRA on the policy (peft): only the adapters train, and the rollout workers are sent the merged base model.

What each rollout worker holds is the plain base model, so the weights it is sent are the merged ones, W + scale * B @ A
for each adapted layer (peft's own get_delta_weight), under the base model's Hugging Face names and shapes: the
broadcast's metas and the weight digest describe the merged model and the workers need no change. The merge is computed
per tensor as it is sent; the policy's own weights are never merged in place.

The frozen KL reference is the same module with its adapters disabled (peft's `disable_adapter()`): the base weights
are frozen, so that is exactly the model RL started from, and no second copy of the model is loaded. After an SFT
warm-up, `fold_adapters` merges the adapters into the base and zeroes B, so the reference becomes the warmed-up policy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from learner.config import LoRAConfig
from learner.zero import full_shape, gathered

ADAPTER = "default"  # peft's name for the one adapter get_peft_model adds


@dataclass(frozen=True)
class ExportedWeight:
    """One tensor of the base model as the workers load it: its HF name, the parameters it is computed from (gathered
    together under ZeRO-3) and how to compute it from them once they are full."""

    name: str
    params: tuple[torch.nn.Parameter, ...]
    compute: Callable[[], torch.Tensor]


def wrap_policy(model: torch.nn.Module, cfg: LoRAConfig) -> torch.nn.Module:
    """The peft model around `model`: LoRA on `cfg.target_modules`, every base parameter frozen, B initialised to 0
    (so the wrapped policy starts equal to the base)."""
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        bias="none", task_type="CAUSAL_LM",
    )
    try:
        wrapped = get_peft_model(model, peft_config)
    except ValueError as err:  # peft's own message does not say which setting
        raise ValueError(f"learner.lora.target_modules {list(cfg.target_modules)}: {err}") from err
    if not any(p.requires_grad for p in wrapped.parameters()):
        raise ValueError(f"learner.lora.target_modules {list(cfg.target_modules)} match no module of the policy")
    return wrapped


def is_lora(module: torch.nn.Module) -> bool:
    # peft is looked up, not imported: a run without LoRA never imports it, and then no module can be a PeftModel.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


def _lora_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The adapted layers of the base model, by their names in it."""
    from peft.tuners.lora import LoraLayer

    return {name: layer for name, layer in module.get_base_model().named_modules() if isinstance(layer, LoraLayer)}


def base_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The frozen base parameters under the base model's own HF names (`X.base_layer.weight` -> `X.weight`), in
    named_parameters order; the adapters' own parameters are left out."""
    layers = _lora_layers(module)
    named: dict[str, torch.nn.Parameter] = {}
    for name, param in module.get_base_model().named_parameters():
        owner, _, leaf = name.rpartition(".")
        prefix, _, inner = owner.rpartition(".")
        if inner == "base_layer" and prefix in layers:
            name = f"{prefix}.{leaf}"
        elif ".lora_" in name:
            continue
        named[name] = param
    return named


def merged_exports(module: torch.nn.Module) -> list[ExportedWeight]:
    """Every base-model tensor the workers load: adapted weights merged (W + delta), everything else as it is."""
    layers = _lora_layers(module)
    exports = []
    for name, param in base_parameters(module).items():
        owner, _, leaf = name.rpartition(".")
        layer = layers.get(owner)
        if layer is None or leaf != "weight" or ADAPTER not in layer.lora_A:
            exports.append(ExportedWeight(name, (param,), lambda p=param: p.data))
            continue
        adapter_params = (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)

        def merged(layer=layer, base=param) -> torch.Tensor:
            with torch.no_grad():
                return base.data + layer.get_delta_weight(ADAPTER).to(base.dtype)

        exports.append(ExportedWeight(name, (param, *adapter_params), merged))
    return exports


def reference_forward(module: torch.nn.Module):
    """The context in which the policy computes the KL reference's log-probs: its adapters disabled (the base model)."""
    return module.disable_adapter()


def adapter_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


@torch.no_grad()
def fold_adapters(module: torch.nn.Module, rank: int) -> None:
    """Makes the current policy the new base: W += delta for every adapted layer, then B = 0 (the optimiser's fp32
    copy too), so the policy is unchanged and the adapters-disabled reference equals it. Call on every rank."""
    from deepspeed.utils import safe_set_full_fp32_param

    for layer in _lora_layers(module).values():
        if ADAPTER not in layer.lora_A:
            continue
        base = layer.get_base_layer().weight
        lora_b = layer.lora_B[ADAPTER].weight
        with gathered([base, layer.lora_A[ADAPTER].weight, lora_b], rank) as writes:
            if writes:
                base.data += layer.get_delta_weight(ADAPTER).to(base.dtype)
                lora_b.data.zero_()
        # ZeRO keeps its own fp32 master copy of every trained parameter; the next step would restore B from it.
        safe_set_full_fp32_param(lora_b, torch.zeros(tuple(full_shape(lora_b)), dtype=torch.float32, device=lora_b.device))


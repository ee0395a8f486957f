"""The training step as a plain function, plus optimizer / schedule / precision helpers."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch

from SegDeepLib.training.config import OptimizerConfig, ScheduleConfig
from SegDeepLib.training.validation import crop_to_output


def build_optimizer(params: Any, c: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam, AdamW or RMSprop with the configured weight decay."""
    if c.name == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov)
    if c.name == "adam":
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    if c.name == "adamw":
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


def lr_factor(c: ScheduleConfig, base_lr: float, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a global step (fixed / poly / cosine)."""
    total = max(int(total_steps), 1)

    def fixed(step: int) -> float:
        return 1.0

    def poly(step: int) -> float:
        return max(1.0 - min(step, total) / total, 0.0) ** c.power

    def cosine(step: int) -> float:
        floor = c.min_lr / base_lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return {"fixed": fixed, "poly": poly, "cosine": cosine}[c.name]


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA for ``amp``; bf16 autocast (CPU or CUDA) for ``bf16``; else nothing."""
    if precision == "amp" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def forward_loss(model: torch.nn.Module, loss_fn: Callable, batch: dict[str, torch.Tensor],
                 deep_supervision: bool = False, sequence: bool = False) -> torch.Tensor:
    """Logits -> loss. Sequences (image ``(N, T, C, H, W)``, logits ``(N, T, K, H, W)``) are scored
    as ``N*T`` slices; valid-convolution outputs get a centre-cropped target."""
    image, label, mask, present = batch["image"], batch["label"], batch["mask"], batch["class_present"]
    if sequence:
        steps = label.shape[1]
        outputs = _run_sequences(model, image, deep_supervision)
        label, mask = label.flatten(0, 1), mask.flatten(0, 1)
        present = present.repeat_interleave(steps, 0)
    else:
        outputs = model(image, return_all=True) if deep_supervision else model(image)
    fused = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    label, mask = crop_to_output(fused, label, mask)
    return loss_fn(outputs, label, mask=mask, class_present=present)


def _run_sequences(model: torch.nn.Module, image: torch.Tensor, deep_supervision: bool) -> Any:
    """Sequence models take one sequence ``(T, C, H, W)`` as their batch: run each, concatenate."""
    outs = [model(seq, return_all=True) if deep_supervision else model(seq) for seq in image]
    if not deep_supervision:
        return torch.cat(outs, 0)
    fused = torch.cat([o[0] for o in outs], 0)
    aux = [torch.cat([o[1][i] for o in outs], 0) for i in range(len(outs[0][1]))]
    return fused, aux


def train_step(model: torch.nn.Module, loss_fn: Callable, batch: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, precision: str,
               device: torch.device, grad_clip: float | None = None, deep_supervision: bool = False,
               sequence: bool = False) -> float:
    """One optimisation step; returns the loss value."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(precision, device):
        loss = forward_loss(model, loss_fn, batch, deep_supervision, sequence)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss.item()}")
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())

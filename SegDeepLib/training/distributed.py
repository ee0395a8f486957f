"""DDP through ``torchrun``: the same command scales from one CPU process to many GPUs.

``torchrun --nproc_per_node=N -m SegDeepLib train cfg.yaml`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
each process takes ``batch_size / N`` samples of every global batch (the samples are a function of
their global index, so the union over processes is the single-process batch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from SegDeepLib.errors import SegDeepError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_pref: str) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    return info


def pick_device(pref: str, info: DistInfo) -> torch.device:
    """``auto``: the (local) GPU when usable, else the CPU; ``cuda`` without a GPU is an error."""
    if pref == "cpu":
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise SegDeepError(f"training.device {pref!r}: no CUDA GPU is available; use 'auto' or 'cpu'")
    if torch.cuda.is_available() and pref in ("auto", "cuda"):
        return torch.device("cuda", info.local_rank)
    return torch.device(pref if pref != "auto" else "cpu")


def local_batch(batch_size: int, info: DistInfo) -> int:
    if batch_size % info.world:
        raise SegDeepError(f"training.batch_size {batch_size}: must be a multiple of the {info.world} processes")
    return batch_size // info.world


def mean_across(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a scalar across processes (for logging the global batch loss)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

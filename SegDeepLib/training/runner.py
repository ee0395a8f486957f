"""The training runner: a small loop wiring data, step, validation, checkpoints and callbacks.

``train(config, overrides, resume=False, progress=None, cancel=None) -> Path`` (the model folder).
Outputs in ``output_dir``: ``config.yaml``, ``splits.json``, ``cache/``, ``checkpoints/{last,best}.pt``,
``train.log``, ``metrics.jsonl``, ``tensorboard/``, ``training_curves.png`` and ``model/``.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import CancelToken, ProgressCallback
from SegDeepLib.training import distributed as ddp
from SegDeepLib.training.callbacks import EarlyStopping, Growth, RunLogger, resolve_attribute
from SegDeepLib.training.checkpoint import (
    clean_stale_temporaries,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from SegDeepLib.training.config import ConfigSource, TrainConfig, load_config, save_config
from SegDeepLib.training.setup import (
    DataSetup,
    augment_settings,
    build_network,
    load_initial_weights,
    model_config,
    prepare_data,
    sampling_settings,
)
from SegDeepLib.training.steps import build_optimizer, lr_factor, train_step
from SegDeepLib.training.validation import mean_dice, validate_case


@dataclass
class Position:
    epoch: int = 0
    step: int = 0  # steps done in the current epoch
    global_step: int = 0
    best_dice: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class Runner:
    """Holds one run's objects; :meth:`fit` runs the loop."""

    def __init__(self, c: TrainConfig, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.c, self.cancel = c, cancel
        self.dist = ddp.init_distributed(c.training.device)
        self.device = ddp.pick_device(c.training.device, self.dist)
        if c.training.num_threads:
            torch.set_num_threads(c.training.num_threads)
        seed_everything(c.seed, c.training.deterministic)
        self.setup: DataSetup = prepare_data(c)
        self.augment = augment_settings(c, self.setup.mapping.names)
        self.model_cfg = model_config(c, self.setup)
        self.model = build_network(self.model_cfg, c.sampling.mode).to(self.device)
        if c.training.init_from:
            skipped = load_initial_weights(self.model, c.training.init_from, c.training.init_strict)
            self._init_note = f"initialised from {c.training.init_from} ({len(skipped)} tensors not copied)"
        else:
            self._init_note = "initialised randomly"
        self._fit_patch_size()
        self.net = self._wrap(self.model)
        from SegDeepLib.losses import build_loss

        self.loss_fn = build_loss(dict(c.loss))
        self.deep_supervision = c.loss.get("name") == "deep_supervision"
        self.optimizer = build_optimizer(self.model.parameters(), c.optimizer)
        total = c.training.epochs * c.training.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c.schedule, c.optimizer.lr, total))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.training.precision == "amp" and self.device.type == "cuda")
        self.stopper = EarlyStopping(c.training.early_stopping_patience)
        g = c.training.growth
        self.growth = Growth(g.attribute, g.maximum, g.patience_epochs, g.min_delta)
        self.pos = Position()
        self._crf_backend_logged = False
        self.logger = RunLogger(c.out, progress, enabled=self.dist.is_main)
        self.ckpt_dir = c.out / "checkpoints"

    def _fit_patch_size(self) -> None:
        """Round the patch up to a size the network accepts (e.g. valid-convolution U-Net)."""
        if not hasattr(self.model, "valid_input_size"):
            return
        size = [int(s) for s in self.model.valid_input_size(tuple(self.c.sampling.patch_size))]
        if size != list(self.c.sampling.patch_size):
            self._init_note += f"; patch size {self.c.sampling.patch_size} -> {size} (accepted by the network)"
            self.c.sampling.patch_size = size
        if self.c.validation.tile_size:
            self.c.validation.tile_size = [int(s) for s in self.model.valid_input_size(tuple(self.c.validation.tile_size))]

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        net = model
        if self.c.training.compile:
            net = torch.compile(net)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return net

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        growth_value = int(getattr(*resolve_attribute(self.model, self.growth.attribute))) if self.growth.attribute else 0
        return {
            "format": "segdeep-checkpoint/1",
            "model": self.model.state_dict(),
            "model_config": self.model_cfg,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"last_epoch": self.scheduler.last_epoch},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "position": {"epoch": self.pos.epoch, "step": self.pos.step, "global_step": self.pos.global_step,
                         "best_dice": self.pos.best_dice, "history": self.pos.history},
            "early_stopping": self.stopper.state_dict(),
            "growth": {**self.growth.state_dict(), "value": growth_value},
            "config": self.c.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.growth.attribute:
            setattr(*resolve_attribute(self.model, self.growth.attribute), int(state["growth"]["value"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.last_epoch = int(state["scheduler"]["last_epoch"])
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scaler.load_state_dict(state["scaler"])
        p = state["position"]
        self.pos = Position(int(p["epoch"]), int(p["step"]), int(p["global_step"]), float(p["best_dice"]),
                            list(p["history"]))
        self.stopper.load_state_dict(state["early_stopping"])
        self.growth.load_state_dict(state["growth"])
        set_rng_state(state["rng"])

    def save(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(self.ckpt_dir / f"{name}.pt", self.state_dict())
        ddp.barrier(self.dist)

    def resume(self) -> None:
        clean_stale_temporaries(self.ckpt_dir)
        self.load_state_dict(load_checkpoint(self.ckpt_dir / "last.pt"))
        self.logger.truncate_after(self.pos.global_step)
        self.logger.info(f"resumed at epoch {self.pos.epoch} step {self.pos.step} (global {self.pos.global_step})")

    # ----- data ------------------------------------------------------------------------------
    def loader(self, epoch: int, first_step: int) -> torch.utils.data.DataLoader:
        """Batches of this process for steps ``first_step..steps_per_epoch-1`` of ``epoch``."""
        from SegDeepLib.data.sampling import PatchDataset

        t = self.c.training
        local = ddp.local_batch(t.batch_size, self.dist)
        dataset = PatchDataset(self.setup.train_ids, self.setup.cache.get, sampling_settings(self.c),
                               self.augment, self.c.seed, epoch, t.steps_per_epoch * t.batch_size)
        indices = [s * t.batch_size + self.dist.rank * local + j
                   for s in range(first_step, t.steps_per_epoch) for j in range(local)]
        workers = self.c.data.num_workers
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, indices), batch_size=local, shuffle=False, num_workers=workers,
            persistent_workers=False, pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None)

    def warm_cache(self) -> None:
        """Preprocess every case once (main process first, so workers only read)."""
        ids = self.setup.train_ids + self.setup.val_ids
        if self.dist.is_main:
            for i, case_id in enumerate(ids):
                self.logger.step_progress(i / max(len(ids), 1), f"preprocessing {case_id}", None)
                self.setup.cache.get(case_id)
        ddp.barrier(self.dist)

    # ----- loop ------------------------------------------------------------------------------
    def fit(self) -> Path:
        c, t = self.c, self.c.training
        self.logger.info(f"{c.name}: {len(self.setup.train_ids)} training / {len(self.setup.val_ids)} validation cases, "
                         f"classes {list(self.setup.mapping.names)}, device {self.device}, {self._init_note}")
        self.warm_cache()
        self.preflight()
        while self.pos.epoch < t.epochs:
            losses = self.run_epoch()
            self.end_epoch(losses)
            if self.stopper.should_stop:
                self.logger.info(f"early stopping after epoch {self.pos.epoch}")
                break
        return self.finish()

    def preflight(self) -> None:
        """One forward pass on a real batch: shape/memory problems surface before long work."""
        from SegDeepLib.data.sampling import draw_sample

        case = self.setup.cache.get(self.setup.train_ids[0])
        sample = draw_sample(case, np.random.default_rng(0), sampling_settings(self.c), None)
        image = torch.from_numpy(sample["image"])
        if self.c.sampling.mode != "sequence2d":  # a sequence (T, C, H, W) is already one batch
            image = image[None]
        try:
            with torch.no_grad():
                self.model.eval()
                self.model(image.to(self.device))
        except torch.cuda.OutOfMemoryError:
            raise SegDeepError("out of GPU memory in the first forward pass; reduce training.batch_size or "
                               "sampling.patch_size, or use training.precision: amp") from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                raise SegDeepError("out of memory in the first forward pass; reduce training.batch_size or "
                                   "sampling.patch_size") from None
            raise SegDeepError(f"model {self.model_cfg.get('name')!r} fails on a training batch of shape "
                               f"{tuple(image.shape)}: {str(exc).splitlines()[0]}") from None

    def run_epoch(self) -> list[float]:
        t = self.c.training
        losses: list[float] = []
        start = time.perf_counter()
        bar = _bar(t.progress_bar and self.dist.is_main, t.steps_per_epoch, self.pos.step, self.pos.epoch)
        for batch in self.loader(self.pos.epoch, self.pos.step):
            if self.cancel is not None:
                self.cancel.check()
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss = train_step(self.net, self.loss_fn, batch, self.optimizer, self.scaler, t.precision, self.device,
                              t.grad_clip, self.deep_supervision, self.c.sampling.mode == "sequence2d")
            self.scheduler.step()
            loss = ddp.mean_across(loss, self.dist, self.device)
            losses.append(loss)
            self.pos.step += 1
            self.pos.global_step += 1
            self.after_step(loss, start, bar)
            self._log_crf_backend()
        if bar is not None:
            bar.close()
        return losses

    def _log_crf_backend(self) -> None:
        """Name the backend(s) a CRF-RNN in the model ran with, once per run."""
        if self._crf_backend_logged:
            return
        self._crf_backend_logged = True
        names = sorted({m.last_backend for m in self.model.modules() if getattr(m, "last_backend", None)})
        if names:
            self.logger.info(f"CRF backend: {', '.join(names)}")

    def after_step(self, loss: float, start: float, bar: Any) -> None:
        t, p = self.c.training, self.pos
        lr = self.optimizer.param_groups[0]["lr"]
        done = p.step / t.steps_per_epoch
        elapsed = time.perf_counter() - start
        self.logger.record("step", p.global_step, epoch=p.epoch, step=p.step, loss=loss, lr=lr,
                           seconds=round(elapsed, 3))
        self.logger.step_progress((p.epoch + done) / t.epochs, f"epoch {p.epoch + 1}/{t.epochs} step {p.step} "
                                  f"loss {loss:.4f}", elapsed / max(done, 1e-9) * (1 - done))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
        if p.global_step % t.checkpoint_every_steps == 0 and p.step < t.steps_per_epoch:
            self.save("last")

    def end_epoch(self, losses: list[float]) -> None:
        epoch_loss = float(np.mean(losses)) if losses else float("nan")
        grown = self.growth.update(self.model, epoch_loss)
        if grown is not None:
            self.logger.info(f"loss plateaued: {self.growth.attribute} -> {grown}")
        record: dict[str, Any] = {"epoch": self.pos.epoch + 1, "loss": epoch_loss}
        if self.setup.val_ids and (self.pos.epoch + 1) % self.c.validation.every_epochs == 0:
            record.update(self.validate())
        self.pos.history.append(record)
        self.logger.record("epoch", self.pos.global_step, **record)
        self.logger.info(" ".join(f"{k}={_fmt(v)}" for k, v in record.items()))
        self.pos.epoch += 1
        self.pos.step = 0
        self.save("last")
        if record.get("is_best"):
            self.save("best")
        self.logger.plot()

    def validate(self) -> dict[str, Any]:
        c = self.c
        ids = self.setup.val_ids[: c.validation.max_cases] if c.validation.max_cases else self.setup.val_ids
        tile = c.validation.tile_size or c.sampling.patch_size
        scores = [validate_case(self.model, self.setup.cache.get(i), c.sampling.mode, tile, c.validation.overlap,
                                c.sampling.context_slices, c.sampling.sequence_length,
                                self.setup.mapping.num_classes, self.device, c.validation.pad_mode) for i in ids]
        per_class, mean = mean_dice(scores)
        is_best = self.stopper.update(mean)
        if is_best:
            self.pos.best_dice = mean
        dice = dict(zip(self.setup.mapping.names, per_class))
        self.logger.record("validation", self.pos.global_step, epoch=self.pos.epoch + 1, mean_dice=mean, dice=dice)
        return {"val_mean_dice": mean, "val_dice": dice, "is_best": is_best}

    def finish(self) -> Path:
        from SegDeepLib.training.export import export_run

        folder = None
        if self.dist.is_main:
            best = self.ckpt_dir / "best.pt"
            state = self.state_dict()
            if best.exists():  # weights of the best validation; history of the whole run
                best_state = load_checkpoint(best)
                state["model"] = best_state["model"]
                state["position"]["best_epoch"] = int(best_state["position"]["epoch"])
            folder = export_run(self.c, self.setup, self.model_cfg, state)
            self.logger.info(f"model folder: {folder}")
        self.logger.close()
        ddp.barrier(self.dist)
        ddp.cleanup(self.dist)
        return Path(folder) if folder else Path(self.c.export.folder or self.c.out / "model")


def _worker_init(worker_id: int) -> None:
    """Workers compute with one thread each (samples are seeded by index, not by worker)."""
    torch.set_num_threads(1)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _bar(enabled: bool, total: int, initial: int, epoch: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True)


def train(config: ConfigSource, overrides: list[str] | None = None, resume: bool = False,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          **kwargs: Any) -> Path:
    """Train from a config (YAML path, dict or :class:`TrainConfig`); returns the model folder.

    ``kwargs`` are extra overrides (``optimizer__lr=1e-3`` or ``{"optimizer.lr": 1e-3}``-style).
    """
    c = load_config(config, list(overrides or []))
    if kwargs:
        data = c.to_dict()
        for key, value in kwargs.items():
            node, parts = data, key.replace("__", ".").split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        c = load_config(data)
    runner = Runner(c, progress, cancel)
    if runner.dist.is_main:
        c.out.mkdir(parents=True, exist_ok=True)
        save_config(c, c.out / "config.yaml")
    if resume:
        runner.resume()
    elif (runner.ckpt_dir / "last.pt").exists():
        raise SegDeepError(f"{c.out}: already holds a training run; pass --resume to continue it or choose "
                           "another output_dir")
    return runner.fit()

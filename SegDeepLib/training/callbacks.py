"""Runner callbacks: logging (text, JSONL, TensorBoard, curves PNG, progress events), early stopping,
layer-wise growth. Each one is small and keeps its state as plain types (stored in checkpoints)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from SegDeepLib.progress import ProgressCallback, ProgressEvent


class RunLogger:
    """Writes ``train.log``, ``metrics.jsonl``, TensorBoard events (when installed) and
    ``training_curves.png`` (when matplotlib is installed); forwards events to a progress callback."""

    def __init__(self, folder: Path, progress: ProgressCallback | None = None, enabled: bool = True) -> None:
        self.folder, self.progress, self.enabled = Path(folder), progress, enabled
        self.metrics_path = self.folder / "metrics.jsonl"
        self.log = logging.getLogger(f"segdeep.train.{id(self)}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._tb = None
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.folder / "train.log")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.log.addHandler(handler)
            self._tb = _tensorboard(self.folder / "tensorboard")

    def truncate_after(self, global_step: int) -> None:
        """On resume: drop records newer than the checkpoint so the curves stay exact."""
        if not self.enabled or not self.metrics_path.exists():
            return
        keep = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("global_step", 0) <= global_step]
        self.metrics_path.write_text("".join(line + "\n" for line in keep))

    def info(self, message: str) -> None:
        if self.enabled:
            self.log.info(message)
            if self.progress is not None:
                self.progress(ProgressEvent(event="log", message=message))

    def record(self, kind: str, global_step: int, **values: Any) -> None:
        """Append one metrics record (``kind``: step | epoch | validation)."""
        if not self.enabled:
            return
        entry = {"kind": kind, "global_step": global_step, **values}
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, global_step)
        if self.progress is not None and kind != "step":
            self.progress(ProgressEvent(event="metrics", stage=kind, data=entry))

    def step_progress(self, fraction: float, message: str, eta_s: float | None) -> None:
        if self.enabled and self.progress is not None:
            self.progress(ProgressEvent(stage="train", fraction=fraction, message=message, eta_s=eta_s))

    def records(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def plot(self) -> Path | None:
        """Refresh ``training_curves.png`` (loss, validation Dice, learning rate)."""
        if not self.enabled:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        records = self.records()
        steps = [r for r in records if r["kind"] == "step"]
        vals = [r for r in records if r["kind"] == "validation"]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        axes[0].plot([r["global_step"] for r in steps], [r["loss"] for r in steps], lw=0.8)
        axes[0].set_title("training loss")
        axes[1].plot([r["global_step"] for r in vals], [r["mean_dice"] for r in vals], "o-")
        axes[1].set_title("validation Dice (mean)")
        axes[2].plot([r["global_step"] for r in steps], [r["lr"] for r in steps])
        axes[2].set_title("learning rate")
        for ax in axes:
            ax.set_xlabel("step")
        fig.tight_layout()
        path = self.folder / "training_curves.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)
        if self._tb is not None:
            self._tb.close()


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 (tensorboard missing or broken: it is optional)
        return None
    return SummaryWriter(str(folder))


class EarlyStopping:
    """Stop after ``patience`` validations without a better mean Dice (None = never)."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best = -1.0
        self.bad = 0

    def update(self, score: float) -> bool:
        """Record a validation score; True when it is a new best."""
        if score > self.best:
            self.best, self.bad = score, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = float(state["best"]), int(state["bad"])


class Growth:
    """Layer-wise training: ``model.<attribute> += 1`` when the epoch loss has not improved by
    ``min_delta`` for ``patience`` epochs (PNet-MSA: add module k+1 when module k plateaus)."""

    def __init__(self, attribute: str, maximum: int, patience: int, min_delta: float) -> None:
        self.attribute, self.maximum, self.patience, self.min_delta = attribute, maximum, patience, min_delta
        self.best = math.inf
        self.bad = 0

    def update(self, model: Any, epoch_loss: float) -> int | None:
        """Return the new value when the model grew, else None."""
        if not self.attribute:
            return None
        if epoch_loss < self.best - self.min_delta:
            self.best, self.bad = epoch_loss, 0
            return None
        self.bad += 1
        owner, name = resolve_attribute(model, self.attribute)
        current = int(getattr(owner, name))
        if self.bad < self.patience or current >= self.maximum:
            return None
        setattr(owner, name, current + 1)
        self.best, self.bad = math.inf, 0
        return current + 1

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = float(state["best"]), int(state["bad"])


def resolve_attribute(obj: Any, dotted: str) -> tuple[Any, str]:
    """``("cnn.num_active_modules")`` -> (obj.cnn, "num_active_modules")."""
    *path, name = dotted.split(".")
    for part in path:
        obj = getattr(obj, part)
    return obj, name

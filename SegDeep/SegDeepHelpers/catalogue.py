"""The model catalogue as the panel shows it: shipped models + the user's models folder.

Where the files are and how a user's model folder becomes an entry come from SegDeepLib's torch-free
core (:mod:`SegDeepLib.core.catalogue`, the reader ``segdeep models`` uses too), never from
``SegDeepLib.inference``, which would import torch into Slicer's process. SegDeepLib is installed with
the extension; where it is not importable (a module folder added by hand without it), the panel
lists no models and says why (:data:`CORE_MISSING`) instead of failing to load.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, Path]

try:
    from SegDeepLib.core import catalogue as core
except ImportError as exc:  # SegDeepLib not on the path: the panel still loads and says so
    core = None
    CORE_MISSING = (f"SegDeepLib is not importable ({exc}): install the SegDeep extension, or put "
                    "the folder containing SegDeepLib on Slicer's Python path, then restart Slicer.")
else:
    CORE_MISSING = ""


@dataclass(frozen=True)
class ModelEntry:
    """The fields of one catalogue model the panel needs (the full dict is kept in ``raw``)."""

    id: str
    title: str
    organs: tuple[str, ...]
    modality: str = ""
    method: str = ""
    licence: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    folder: str = field(default="", compare=False)  # the model folder (its model.json), if known

    @property
    def accuracy(self) -> Any:
        return self.raw.get("accuracy", self.raw.get("metrics"))

    @property
    def timing(self) -> Any:
        return self.raw.get("timing")

    def timeSeconds(self, device: str) -> Optional[float]:
        """Measured seconds for a typical volume on ``"cpu"`` or ``"gpu"``, when the card has it."""
        timing = self.timing
        if not isinstance(timing, dict):
            return None
        wanted = ("cuda", "gpu") if device in ("gpu", "cuda") else ("cpu",)
        for key, value in timing.items():
            if any(w in key.lower() for w in wanted) and isinstance(value, (int, float)):
                return float(value)
        return None


def defaultCataloguePath() -> Optional[Path]:
    """Where SegDeepLib ships its catalogue (``None`` when SegDeepLib is not importable)."""
    return core.CATALOGUE_FILE if core is not None else None


def _organNames(model: dict[str, Any]) -> tuple[str, ...]:
    organs = model.get("organs", model.get("labels", []))
    if isinstance(organs, dict):
        organs = organs.get("labels", list(organs))
    names = [o.get("name", "") if isinstance(o, dict) else str(o) for o in organs]
    return tuple(n for n in names if n)


def _licence(model: dict[str, Any]) -> str:
    training = model.get("training") if isinstance(model.get("training"), dict) else {}
    value = model.get("licence", model.get("license", training.get("licence", "")))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def entryFromDict(model: dict[str, Any], folder: PathLike = "") -> ModelEntry:
    if not isinstance(model, dict) or not model.get("id"):
        raise ValueError(f"catalogue entry without an 'id': {model!r:.80}")
    return ModelEntry(
        id=str(model["id"]), title=str(model.get("title", model["id"])),
        organs=_organNames(model), modality=str(model.get("modality", "")),
        method=str(model.get("method", "")), licence=_licence(model), raw=dict(model),
        folder=str(folder))


def userModelsDir() -> Optional[Path]:
    """``$SEGDEEP_MODELS_DIR`` or ``~/.segdeep/models`` (SegDeepLib's rule; ``None`` without it)."""
    return core.user_models_dir() if core is not None else None


def _readJson(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); reinstall SegDeep") from None


def _userModels(folder: Optional[Path], taken: set[str]) -> list[ModelEntry]:
    """The user's model folders, made into entries by SegDeepLib itself (broken ones skipped)."""
    if core is None or folder is None:
        return []
    return [entryFromDict(model, model["path"]) for model in core.user_models(taken, folder)]


def _shippedFolder(cataloguePath: Path, model: Any) -> str:
    """A shipped entry's model folder: ``folder`` relative to the catalogue file (as SegDeepLib)."""
    name = model.get("folder") if isinstance(model, dict) else None
    return str(cataloguePath.parent / name) if isinstance(name, str) and name else ""


def loadCatalogue(path: Optional[PathLike] = None, userDir: Optional[PathLike] = None) -> list[ModelEntry]:
    """Shipped models (``[]`` while the file does not exist) followed by the user's models; ``[]``
    when SegDeepLib is not importable (:data:`CORE_MISSING` says why)."""
    path = Path(path) if path is not None else defaultCataloguePath()
    data = _readJson(path) if path is not None and path.exists() else []
    entries = data.get("models", []) if isinstance(data, dict) else data
    models = [entryFromDict(m, _shippedFolder(path, m)) for m in entries]
    folder = Path(userDir) if userDir is not None else userModelsDir()
    return models + _userModels(folder, {m.id for m in models})


def _formatValue(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_formatValue(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_formatValue(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def accuracyText(accuracy: Any) -> str:
    """A model card's accuracy in one line: mean Dice per organ on the unseen cases, when the card
    has the shipped models' layout (``mean_dsc`` + ``held_out``); any other layout as it is."""
    if isinstance(accuracy, dict) and isinstance(accuracy.get("mean_dsc"), dict):
        cases = list(accuracy.get("held_out") or {})
        dice = ", ".join(f"{organ} {_formatValue(v)}" for organ, v in accuracy["mean_dsc"].items())
        where = f" ({', '.join(cases)})" if cases else ""
        return f"mean Dice on {len(cases)} unseen case(s){where}: {dice}"
    return _formatValue(accuracy or "")


def timingText(timing: Any) -> str:
    """A model card's timing in one line (``cpu_seconds``/``gpu_seconds`` + ``volume``), else as it is."""
    if isinstance(timing, dict) and ("cpu_seconds" in timing or "gpu_seconds" in timing):
        parts = [f"{device.upper()} {_formatValue(float(timing[f'{device}_seconds']))} s"
                 for device in ("cpu", "gpu") if isinstance(timing.get(f"{device}_seconds"), (int, float))]
        volume = f" for {timing['volume']}" if timing.get("volume") else ""
        threads = f" ({timing['cpu_threads']} CPU threads)" if timing.get("cpu_threads") else ""
        return " / ".join(parts) + volume + threads
    return _formatValue(timing or "")


def detailsHtml(model: ModelEntry) -> str:
    """HTML shown under the model chooser: organs, modality, accuracy, time, licence."""
    rows = [
        ("Method", model.method), ("Organs", ", ".join(model.organs)),
        ("Modality", model.modality), ("Measured accuracy", accuracyText(model.accuracy)),
        ("Measured time", timingText(model.timing)), ("Licence", model.licence),
    ]
    body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                   for k, v in rows if v)
    return f"<h4>{html.escape(model.title)}</h4><table>{body}</table>"


def cpuWarning(model: ModelEntry, fast: bool = False) -> str:
    """The warning shown when a run will happen on the CPU, with the measured time if known."""
    seconds = model.timeSeconds("cpu")
    estimate = f"about {formatDuration(seconds)}" if seconds else "much longer than on a GPU"
    hint = "" if fast else " Tick 'Fast (low resolution)' or select fewer organs to speed it up."
    return f"No usable GPU: this run will be on the CPU and take {estimate}.{hint}"


def formatDuration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""The model catalogue (torch-free core, read by the library and the Slicer module): shipped models (``SegDeepLib/resources/models``) plus the user's models folder.

``catalogue.json`` (schema ``catalogue.schema.json`` next to it) lists each shipped model folder with
what a user needs to choose one: organs and label table, modality, input and preprocessing,
weights + sha256, training data and licence, measured accuracy and time, recommended settings.
Entries are generated from the model folders (:func:`catalogue_entry`) so they cannot drift.

User models: every model folder (``model.json`` + weights, e.g. from ``segdeep import``) inside
``$SEGDEEP_MODELS_DIR`` (default ``~/.segdeep/models``) is listed too, without touching the repo.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from SegDeepLib.core.model_card import SPEC_FILE, read_spec
from SegDeepLib.errors import SegDeepError

MODELS_DIR = Path(__file__).resolve().parent.parent / "resources" / "models"
CATALOGUE_FILE = MODELS_DIR / "catalogue.json"
SCHEMA_FILE = MODELS_DIR / "catalogue.schema.json"
FORMAT = "segdeep-catalogue/1"
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def user_models_dir() -> Path:
    """``$SEGDEEP_MODELS_DIR`` or ``~/.segdeep/models``."""
    return Path(
        os.environ.get("SEGDEEP_MODELS_DIR") or Path.home() / ".segdeep" / "models"
    ).expanduser()


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def schema_errors(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, where: str = "$"
) -> list[str]:
    """Problems of ``value`` against a JSON schema (keywords: type, enum, required, properties,
    additionalProperties, items, minItems, maxItems, minimum, maximum, minLength, pattern, $ref)."""
    root = root or schema
    schema = _resolve(schema, root)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(value, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not one of {schema['enum']}")
    if isinstance(value, dict):
        errors += _object_errors(value, schema, root, where)
    if isinstance(value, list):
        errors += _array_errors(value, schema, root, where)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: empty or too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if _type_ok(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > maximum {schema['maximum']}")
    return errors


def _object_errors(
    value: dict, schema: Mapping[str, Any], root: Mapping[str, Any], where: str
) -> list[str]:
    errors = [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
    props = schema.get("properties", {})
    for key, item in value.items():
        if key in props:
            errors += schema_errors(item, props[key], root, f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            errors.append(f"{where}: unknown key {key!r}")
    return errors


def _array_errors(
    value: list, schema: Mapping[str, Any], root: Mapping[str, Any], where: str
) -> list[str]:
    errors = []
    if len(value) < schema.get("minItems", 0):
        errors.append(f"{where}: needs at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where}: at most {schema['maxItems']} items")
    if "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], root, f"{where}[{i}]")
    return errors


def validate(catalogue: Mapping[str, Any], name: str = "catalogue") -> None:
    """Raise :class:`SegDeepError` listing every schema problem of a catalogue dict."""
    schema = json.loads(SCHEMA_FILE.read_text())
    errors = schema_errors(catalogue, schema)
    ids = [m.get("id") for m in catalogue.get("models", []) if isinstance(m, dict)]
    if len(set(ids)) != len(ids):
        errors.append("$.models: duplicate model ids")
    if errors:
        raise SegDeepError(f"{name}: invalid model catalogue: {'; '.join(errors[:10])}")


def catalogue_entry(
    folder: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A catalogue entry built from a model folder's ``model.json`` (the single source of truth)."""
    from SegDeepLib.core.preprocessing_spec import num_channels

    folder = Path(folder)
    spec = read_spec(folder)
    training = dict(spec.get("training") or {})
    inference = spec.get("inference") or {}
    weights = folder / spec["weights"]["file"]
    entry = {
        "id": spec["id"],
        "version": str(spec.get("version", "0")),
        "title": spec.get("title", spec["id"]),
        "method": spec.get("method", ""),
        "folder": folder.name,
        "modality": spec.get("modality", "CT"),
        "organs": spec["labels"].get("labels", []),
        "input": {
            "channels": num_channels(spec.get("preprocessing")),
            "preprocessing": spec.get("preprocessing") or {},
            "mode": inference.get("mode", "3d"),
        },
        "weights": {
            **spec["weights"],
            "size_bytes": weights.stat().st_size if weights.exists() else 1,
        },
        "training": {
            "data": str(training.get("data", "unknown")),
            "cases": int(training.get("cases", 0)),
            **{k: v for k, v in training.items() if k in ("licence", "synthetic_only")},
        },
        "licence": spec.get("licence", training.get("licence", "unknown")),
        "accuracy": spec.get("metrics") or {},
        "timing": spec.get("timing") or {},
        "recommended": spec.get("recommended") or {},
    }
    for key in ("parameters", "notes"):
        if key in spec:
            entry[key] = spec[key]
    entry.update(extra or {})
    return entry


def build_catalogue(
    models_dir: str | os.PathLike = MODELS_DIR, default_model: str | None = None
) -> dict[str, Any]:
    """A catalogue of every model folder directly inside ``models_dir`` (sorted by id)."""
    folders = sorted(p for p in Path(models_dir).iterdir() if (p / SPEC_FILE).exists())
    catalogue = {
        "format": FORMAT,
        "default_model": default_model,
        "models": sorted((catalogue_entry(f) for f in folders), key=lambda e: e["id"]),
    }
    validate(catalogue, str(models_dir))
    return catalogue


def rebuild_catalogue(
    models_dir: str | os.PathLike = MODELS_DIR, default_model: str | None = None
) -> Path:
    """Regenerate ``catalogue.json`` from the model folders in ``models_dir`` (keeps the old default
    unless ``default_model`` is given). Call it after adding or retraining a shipped model."""
    path = Path(models_dir) / CATALOGUE_FILE.name
    if default_model is None and path.exists():
        default_model = json.loads(path.read_text()).get("default_model")
    catalogue = build_catalogue(models_dir, default_model)
    if default_model and default_model not in {m["id"] for m in catalogue["models"]}:
        raise SegDeepError(
            f"default model {default_model!r} is not among the folders in {models_dir}"
        )
    path.write_text(json.dumps(catalogue, indent=2) + "\n")
    return path


def load_catalogue(
    path: str | os.PathLike = CATALOGUE_FILE, include_user: bool = True
) -> dict[str, Any]:
    """Shipped catalogue (validated) + user models (``source`` = ``shipped`` | ``user``, ``path`` set)."""
    path = Path(path)
    if path.exists():
        try:
            catalogue = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SegDeepError(f"{path}: not valid JSON ({exc})") from None
        validate(catalogue, str(path))
    else:
        catalogue = {"format": FORMAT, "default_model": None, "models": []}
    models = [
        dict(m, source="shipped", path=str(path.parent / m["folder"])) for m in catalogue["models"]
    ]
    if include_user:
        models += user_models({m["id"] for m in models})
    return {**catalogue, "models": models}


def user_models(taken: set[str], root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Entries (``source`` = ``user``, ``path`` set) of the model folders in ``root`` (default
    :func:`user_models_dir`) whose id is not in ``taken`` (updated); broken folders are skipped."""
    root = Path(root) if root is not None else user_models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if (p / SPEC_FILE).exists()):
        try:
            entry = catalogue_entry(folder)
        except (SegDeepError, OSError, KeyError, TypeError):
            continue  # a broken user folder must not hide the others
        if entry["id"] not in taken:
            taken.add(entry["id"])
            found.append(dict(entry, source="user", path=str(folder)))
    return found


def resolve_model(model: str | None, catalogue: Mapping[str, Any] | None = None) -> Path:
    """A model folder from a folder path or a catalogue id (``None`` = the catalogue's default)."""
    if model and (Path(model) / SPEC_FILE).exists():
        return Path(model)
    catalogue = catalogue or load_catalogue()
    model = model or catalogue.get("default_model")
    ids = [m["id"] for m in catalogue["models"]]
    if not model:
        raise SegDeepError(
            "no model given and the catalogue has no default; pass --model ID "
            f"(available: {', '.join(ids) or 'none'})"
        )
    for entry in catalogue["models"]:
        if entry["id"] == model:
            return Path(entry["path"])
    if Path(model).exists():
        raise SegDeepError(f"{model}: not a SegDeep model folder (no {SPEC_FILE})")
    raise SegDeepError(
        f"model {model!r}: not in the catalogue nor a folder; available: {', '.join(ids) or 'none'} "
        f"(user models go in {user_models_dir()})"
    )

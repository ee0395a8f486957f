"""The model catalogue, as :mod:`SegDeepLib.inference` has always offered it.

It lives in the torch-free core (:mod:`SegDeepLib.core.catalogue`), which the Slicer module reads
too; this module re-exports its names so existing imports keep working.
"""

from SegDeepLib.core.catalogue import (
    CATALOGUE_FILE,
    FORMAT,
    MODELS_DIR,
    SCHEMA_FILE,
    build_catalogue,
    catalogue_entry,
    load_catalogue,
    rebuild_catalogue,
    resolve_model,
    schema_errors,
    user_models_dir,
    validate,
)

__all__ = [
    "CATALOGUE_FILE",
    "FORMAT",
    "MODELS_DIR",
    "SCHEMA_FILE",
    "build_catalogue",
    "catalogue_entry",
    "load_catalogue",
    "rebuild_catalogue",
    "resolve_model",
    "schema_errors",
    "user_models_dir",
    "validate",
]

"""A process that builds and loads one extension kind, for the interruption tests.

    python extension_child.py SOURCE.cpp        # kind "probe" built from SOURCE (plain C API)
    python extension_child.py --kind cpu        # a real kind of extension.KINDS

Progress events are JSON lines on stdout, then one ``{"event": "result", ...}`` line; SIGINT and
SIGTERM end it with exit code 130 (as ``segdeep``). ``PROBE_SOURCE`` is a module that builds in
about a second (no torch headers), so the tests can slow its compiler down at will (``CXX``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROBE_SOURCE = r"""
#include <Python.h>
#define SEGDEEP_CAT2(a, b) a##b
#define SEGDEEP_CAT(a, b) SEGDEEP_CAT2(a, b)
#define SEGDEEP_STR2(a) #a
#define SEGDEEP_STR(a) SEGDEEP_STR2(a)

static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, nullptr},
                                {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, SEGDEEP_STR(TORCH_EXTENSION_NAME),
                                 nullptr, -1, methods};
PyMODINIT_FUNC SEGDEEP_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  return PyModule_Create(&module_def);
}
"""


def register_probe(source: Path) -> None:
    from SegDeepLib.crf import extension

    extension.KINDS["probe"] = extension.ExtensionKind(
        (source.name,), cflags=("-O0",), ldflags=(), source_dir=source.parent, estimate_s=5.0
    )


def main(argv: list[str]) -> int:
    from SegDeepLib.crf import extension
    from SegDeepLib.progress import JsonLinesReporter

    if argv[0] == "--kind":
        kind = argv[1]
    else:
        register_probe(Path(argv[0]).resolve())
        kind = "probe"
    module = extension.load_extension(kind, progress=JsonLinesReporter(sys.stdout))
    result = {
        "event": "result",
        "loaded": module is not None,
        "error": extension.extension_error(kind),
        "answer": module.answer() if kind == "probe" and module is not None else None,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

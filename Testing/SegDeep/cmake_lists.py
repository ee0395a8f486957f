"""Expected CMake file lists (every .py and every resource on disk) and their rendering.

``python -m Testing.SegDeep.cmake_lists --write`` rewrites the generated blocks of
``SegDeepLib/CMakeLists.txt`` and ``SegDeep/CMakeLists.txt`` after files were added or removed;
``Testing/SegDeep/test_cmake.py`` fails until that was done.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"__pycache__", "build", ".segdeep_cache"}
SKIP_SUFFIXES = {".pyc", ".so", ".o", ".pyd", ".dll", ".dylib"}
BEGIN, END = "# BEGIN generated lists (python -m Testing.SegDeep.cmake_lists --write)", "# END generated lists"


def files_on_disk(folder: Path) -> tuple[list[str], list[str]]:
    """(python scripts, resources) under ``folder``, relative, sorted; CMakeLists.txt excluded."""
    scripts, resources = [], []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or SKIP_DIRS & set(relative.parts) or path.suffix in SKIP_SUFFIXES:
            continue
        if relative.name == "CMakeLists.txt" or relative.name.startswith("."):
            continue
        (scripts if path.suffix == ".py" else resources).append(relative.as_posix())
    return scripts, resources


def render(folder: Path) -> str:
    scripts, resources = files_on_disk(folder)
    lines = [BEGIN, "set(MODULE_PYTHON_SCRIPTS"] + [f"  {s}" for s in scripts] + ["  )", ""]
    lines += ["set(MODULE_PYTHON_RESOURCES"] + [f"  {r}" for r in resources] + ["  )", END]
    return "\n".join(lines)


def listed(cmake_text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", cmake_text, re.DOTALL)
    return match.group(1).split() if match else []


def write(folder: Path) -> None:
    path = folder / "CMakeLists.txt"
    text = path.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    path.write_text(text[:start] + render(folder) + text[stop:])


if __name__ == "__main__":
    if "--write" in sys.argv:
        for name in ("SegDeepLib", "SegDeep"):
            write(REPO / name)
    else:
        print(render(REPO / "SegDeepLib"))

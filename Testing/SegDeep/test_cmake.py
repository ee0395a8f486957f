"""The extension's CMake files: metadata, every .py and resource listed, and a real CMake configure
against a fake Slicer package whose macros check what they are given (as Slicer's macro does)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from Testing.SegDeep.cmake_lists import REPO, files_on_disk, listed

FIX = "run `python -m Testing.SegDeep.cmake_lists --write` and commit the CMakeLists.txt"


@pytest.mark.parametrize("package", ["SegDeepLib", "SegDeep"])
def test_every_file_on_disk_is_listed(package):
    folder = REPO / package
    text = (folder / "CMakeLists.txt").read_text()
    scripts, resources = files_on_disk(folder)
    assert listed(text, "MODULE_PYTHON_SCRIPTS") == scripts, f"{package}: .py list is stale; {FIX}"
    assert listed(text, "MODULE_PYTHON_RESOURCES") == resources, f"{package}: resources stale; {FIX}"
    assert all(s.endswith(".py") for s in scripts) and "__init__.py" in " ".join(scripts)


def test_lists_are_complete_by_an_independent_walk():
    """Every .py under SegDeepLib/ and SegDeep/ (os.walk, not the helper) is in a CMake list."""
    import os

    for package in ("SegDeepLib", "SegDeep"):
        text = (REPO / package / "CMakeLists.txt").read_text()
        for root, dirs, files in os.walk(REPO / package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    relative = Path(root, name).relative_to(REPO / package).as_posix()
                    assert re.search(rf"^\s+{re.escape(relative)}$", text, re.MULTILINE), relative


def test_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert values["EXTENSION_HOMEPAGE"].startswith("https://")
    assert values["EXTENSION_CONTRIBUTORS"] and len(values["EXTENSION_DESCRIPTION"]) > 40
    assert values["EXTENSION_ICONURL"].endswith("Resources/Icons/SegDeep.png")
    assert (REPO / "Resources" / "Icons" / "SegDeep.png").exists()
    for url in values["EXTENSION_SCREENSHOTURLS"].split():
        assert (REPO / url.split("/main/", 1)[1]).exists(), url
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    order = [re.search(pattern, text).start() for pattern in (
        r"project\(SegDeep\)", r"find_package\(Slicer REQUIRED\)", r"include\(\$\{Slicer_USE_FILE\}\)",
        r"add_subdirectory\(SegDeepLib\)", r"add_subdirectory\(SegDeep\)",
        r"Slicer_EXTENSION_GENERATE_CONFIG", r"Slicer_EXTENSION_CPACK")]
    assert order == sorted(order)


FAKE_SLICER = r'''
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
'''
FAKE_USE = r'''
set(BUILD_TESTING ON)
set(REPORT "${CMAKE_BINARY_DIR}/segdeep_report.txt")
file(WRITE "${REPORT}" "")
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  foreach(value ${MY_SCRIPTS} ${MY_RESOURCES})
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${value}")
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file '${value}'")
    endif()
  endforeach()
  get_filename_component(_dir "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
  list(LENGTH MY_SCRIPTS _ns)
  list(LENGTH MY_RESOURCES _nr)
  file(APPEND "${REPORT}" "module ${MY_NAME} dir=${_dir} scripts=${_ns} resources=${_nr} subdir=${MY_WITH_SUBDIR} generic=${MY_WITH_GENERIC_TESTS}\n")
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest: no ${MY_SCRIPT}")
  endif()
  file(APPEND "${REPORT}" "unittest ${MY_SCRIPT}\n")
endmacro()
'''


def test_cmake_configure_with_a_fake_slicer(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("cmake or a C compiler is not installed")
    fake = tmp_path / "fake-slicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(FAKE_SLICER)
    (fake / "UseSlicer.cmake").write_text(FAKE_USE)
    (fake / "empty.cmake").write_text("")
    build = tmp_path / "build"
    result = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={fake}"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = (build / "segdeep_report.txt").read_text().splitlines()
    lib = next(line for line in report if line.startswith("module SegDeepLib "))
    module = next(line for line in report if line.startswith("module SegDeep "))
    assert "dir=SegDeepLib" in lib and "subdir=TRUE" in lib and "generic=FALSE" in lib
    assert "subdir=FALSE" in module and "generic=TRUE" in module
    n_lib = len(files_on_disk(REPO / "SegDeepLib")[0])
    assert f"scripts={n_lib} " in lib
    assert "unittest SegDeep.py" in report

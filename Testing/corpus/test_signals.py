"""Cancel from outside: SIGTERM (the Slicer module's Cancel) and SIGINT during the output write.

A real subprocess runs ``segdeep segment`` with a tiny model; the writer is slowed down so the
signal arrives while the temporary file exists. Expected: exit 130, one line, no output and no
temporary file left beside it, the input unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from Testing.conftest import REPO
from Testing.corpus.resources import build_resources

SCRIPT = """
import sys, time
import SimpleITK as sitk
import Testing.SegDeepLib.inference.tiny_nets  # registers test_centres
from SegDeepLib.cli.main import main

real_write = sitk.WriteImage

def slow_write(image, path, *args, **kwargs):
    real_write(image, path, *args, **kwargs)
    sys.stderr.write("WRITING\\n")
    sys.stderr.flush()
    time.sleep(60)

sitk.WriteImage = slow_write
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_write_exits_130_and_leaves_nothing(tmp_path: Path, signum: int) -> None:
    res = build_resources(tmp_path / "res")
    ws = tmp_path / "ws"
    ws.mkdir()
    image_path = ws / "ct.nii.gz"
    sitk.WriteImage(res.ct, str(image_path))
    before = image_path.read_bytes()
    out = ws / "out.nii.gz"
    argv = ["segment", str(image_path), "-o", str(out), "--model", str(res.model), "--device", "cpu",
            "--progress", "none"]
    env = dict(os.environ, PYTHONPATH=str(REPO), SEGDEEP_MODELS_DIR=str(tmp_path / "none"))
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, *argv], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and "WRITING" not in line:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
    assert "WRITING" in line, f"the run never reached the write: {process.stderr.read()}"
    assert any(p.name.startswith(".out.") for p in ws.iterdir()), "no temporary file to clean up"
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines == ["segdeep: interrupted"], err
    assert not out.exists()
    assert sorted(p.name for p in ws.iterdir()) == ["ct.nii.gz"], "temporary files left behind"
    assert image_path.read_bytes() == before

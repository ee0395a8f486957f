"""The subprocess runner, for real: real child processes, the real SegDeepLib CLI, real cancel."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from Testing.SegDeep.helpers import (
    fake_python,
    oblique_ijk_to_ras,
    phantom_array,
    segdeep_temp_dirs,
)


@pytest.fixture
def process_module(helpers_path):
    from SegDeepHelpers import process

    return process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_parse_line_json_and_plain_text(process_module):
    parse = process_module.parseLine
    event = parse('{"event": "progress", "stage": "tiles", "fraction": 0.5, "eta_s": 3}\n')
    assert event == {"event": "progress", "stage": "tiles", "fraction": 0.5, "eta_s": 3}
    assert parse("Traceback (most recent call last):\n") == {
        "event": "log", "level": "info", "message": "Traceback (most recent call last):"}
    # JSON that is not an event, or broken JSON, is kept verbatim as a log line
    assert parse('{"a": 1}')["message"] == '{"a": 1}'
    assert parse('{"event": ')["message"] == '{"event": '


def test_runner_reads_real_cli_info(process_module):
    """`python -m SegDeepLib info --json` through the runner: every output line arrives, exit 0."""
    from SegDeepHelpers.jobs import childEnvironment

    lines, codes = [], []
    runner = process_module.ProcessRunner(
        [sys.executable, "-m", "SegDeepLib", "info", "--json"], env=childEnvironment("cpu"),
        onEvent=lambda e: lines.append(e["message"]), onFinished=codes.append)
    runner.start()
    assert runner.wait(timeout=120) == 0
    info = json.loads("\n".join(lines))
    assert codes == [0]
    assert info["python"] == sys.version.split()[0]
    assert "torch" in info and "crf_backends" in info


def test_runner_reports_exit_code_and_error_line(process_module, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys, json\nprint(json.dumps({'event': 'error', 'message': 'bad input'}))\n"
                      "print('segdeep: error: bad input', file=sys.stderr)\nsys.exit(2)\n")
    events = []
    runner = process_module.ProcessRunner([sys.executable, str(script)], onEvent=events.append)
    runner.start()
    assert runner.wait(timeout=60) == 2
    assert events[0] == {"event": "error", "message": "bad input"}
    assert events[1]["message"] == "segdeep: error: bad input"  # stderr is merged


def test_cancel_kills_the_whole_process_tree(process_module, tmp_path):
    """A child that started a grandchild: cancel must leave neither running."""
    script = tmp_path / "tree.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n")
    pids = []
    runner = process_module.ProcessRunner([sys.executable, str(script)],
                                          onEvent=lambda e: pids.append(int(e["message"])))
    runner.start()
    deadline = time.monotonic() + 30
    while not pids and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    grandchild, child = pids[0], runner.process.pid
    assert _alive(grandchild) and _alive(child)
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(timeout=30) == process_module.EXIT_CANCELLED
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not _alive(child)
    assert not _alive(grandchild)


def test_segmentation_job_cancel_removes_temp_files(helpers_path, tmp_path, monkeypatch):
    """Cancel a run mid-way: exit 130, child gone, the job's temporary folder removed."""
    from SegDeepHelpers import jobs

    monkeypatch.setenv("FAKE_SLEEP", "1.0")
    monkeypatch.setenv("FAKE_PID_FILE", str(tmp_path / "pid"))
    before = segdeep_temp_dirs()
    codes, events = [], []
    job = jobs.SegmentationJob(fake_python(tmp_path), onEvent=events.append)
    job.start(phantom_array(), oblique_ijk_to_ras(), "fake-abdomen", jobs.SegmentOptions(device="cpu"),
              lambda code: (codes.append(code), job.cleanup()))
    assert job.tempDir is not None and (job.tempDir / "input.nrrd").exists()
    deadline = time.monotonic() + 60
    while (not (tmp_path / "pid").exists() or not events) and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert events, "the fake CLI printed nothing"
    job.cancel()
    assert job.wait(timeout=30) == 130 and codes == [130]
    assert not _alive(int((tmp_path / "pid").read_text()))
    assert job.tempDir is None
    assert segdeep_temp_dirs() == before


def test_cli_arguments_from_options(helpers_path):
    from SegDeepHelpers.jobs import SegmentOptions

    assert SegmentOptions().cliArguments() == ["--device", "auto"]
    args = SegmentOptions(device="cuda", crf=False, fast=True, tta=True, organs=("liver", "spleen"))
    assert args.cliArguments() == ["--device", "cuda", "--no-crf", "--fast", "--tta",
                                   "--organs", "liver,spleen"]
    with pytest.raises(ValueError, match="device"):
        SegmentOptions(device="gpu").cliArguments()
    crf = SegmentOptions(crf=True, crfParams={"num_iterations": 3, "theta_alpha": 6.5})
    assert crf.cliArguments() == ["--device", "auto", "--crf", "--crf-param", "theta_alpha=6.5",
                                  "--crf-param", "num_iterations=3"]
    with pytest.raises(ValueError, match="switched off"):
        SegmentOptions(crf=False, crfParams={"w1": 1.0}).cliArguments()
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        SegmentOptions(crf=True, crfParams={"alpha": 1.0}).cliArguments()

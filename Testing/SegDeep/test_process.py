"""The subprocess runner, for real: real child processes, the real SegDeepLib CLI, real cancel."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

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



def test_new_option_is_one_table_row(helpers_path, monkeypatch, tmp_path):
    """Issue 13: a new run option is a parameter-node field plus one row of
    Resources/SegDeepRunOptions.json; the job turns it into argv through the table, with no change to
    the logic or the job."""
    from types import SimpleNamespace

    from SegDeepHelpers import crf, jobs

    data = json.loads(jobs.RUN_OPTIONS_FILE.read_text(encoding="utf-8"))
    data["options"].append({"field": "denoise", "flag": "--denoise", "kind": "switch"})
    (tmp_path / "options.json").write_text(json.dumps(data), encoding="utf-8")
    table = jobs.loadCliOptions(tmp_path / "options.json")
    assert table == (*jobs.CLI_OPTIONS, jobs.CliOption("denoise", "--denoise", "switch"))
    node = SimpleNamespace(device="cpu", crf=True, fast=False, tta=True, organs="liver,spleen",
                           denoise=True, **{p.attribute: p.clean(p.default) for p in crf.PARAMETERS})
    theta = crf.BY_NAME["theta_alpha"]
    setattr(node, theta.attribute, theta.clean(theta.default) + 1)  # one changed CRF value
    options = jobs.NodeOptions(node, crf.libraryDefaults(), table)
    launched = []
    monkeypatch.setattr(jobs.CliJob, "launch", lambda self, args, env, done: launched.append(args))
    job = jobs.SegmentationJob("python")
    job.start(phantom_array(), oblique_ijk_to_ras(), "m", options, lambda code: None)
    job.cleanup()
    flags = launched[0][launched[0].index("m") + 1:]
    assert flags == ["--device", "cpu", "--crf", "--crf-param",
                     f"theta_alpha={theta.clean(theta.default) + 1!r}", "--tta",
                     "--organs", "liver,spleen", "--denoise", "--progress", "json"]
    node.denoise, node.crf, node.organs = False, False, ""
    assert jobs.NodeOptions(node, crf.libraryDefaults(), table).cliArguments() == [
        "--device", "cpu", "--no-crf", "--tta"]
    assert jobs.NodeOptions(node).cliArguments() == ["--device", "cpu", "--no-crf", "--tta"]
    data["options"][-1]["kind"] = "flag"
    (tmp_path / "options.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"options\.json: unknown kind of run option\(s\) \['denoise'\]"):
        jobs.loadCliOptions(tmp_path / "options.json")

# ---- issue 11: no GUI freeze on cancel, no orphan after a crash, no console window on Windows ------
def test_cancel_returns_at_once_and_a_child_ignoring_sigterm_is_killed_later(process_module):
    """Cancel (button, scene close, cleanup) must not block the GUI: it used to wait up to 3 s."""
    runner = process_module.ProcessRunner(["sh", "-c", "trap '' TERM; echo started; sleep 60"])
    lines = []
    runner.onEvent = lambda e: lines.append(e["message"])
    runner.start()
    deadline = time.monotonic() + 30
    while not lines and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.01)
    started = time.monotonic()
    runner.cancel()
    assert time.monotonic() - started < 0.5
    assert runner.poll() and _alive(runner.process.pid)  # still there: SIGTERM is ignored
    assert runner.wait(timeout=30) == process_module.EXIT_CANCELLED
    assert process_module.KILL_GRACE_S - 0.5 < time.monotonic() - started < 15


def test_a_child_stops_when_slicer_dies_and_its_temp_folder_goes(helpers_path, tmp_path):
    """Kill -9 the 'Slicer' process mid-run: the child sees its stdin close and stops, removing
    the job folder (it used to run on, its folder left behind)."""
    import signal
    import subprocess

    parent = tmp_path / "slicer.py"
    parent.write_text(f"""
import sys, time
sys.path[:0] = [{str(helpers_path)!r}, {str(helpers_path.parent)!r}]
from SegDeepHelpers import jobs
from Testing.SegDeep.helpers import oblique_ijk_to_ras, phantom_array
job = jobs.SegmentationJob({fake_python(tmp_path)!r})
job.start(phantom_array(), oblique_ijk_to_ras(), "fake-abdomen", jobs.SegmentOptions(), lambda code: None)
print(job.tempDir, flush=True)
time.sleep(120)
""")
    env = {**os.environ, "FAKE_SLEEP": "30", "FAKE_PID_FILE": str(tmp_path / "pid"), "TMPDIR": str(tmp_path)}
    slicer = subprocess.Popen([sys.executable, str(parent)], stdout=subprocess.PIPE, text=True, env=env)
    folder = slicer.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "pid").read_text())
    assert _alive(child) and os.path.isdir(folder) and folder.startswith(str(tmp_path))
    slicer.send_signal(signal.SIGKILL)
    slicer.wait()
    deadline = time.monotonic() + 20
    while (_alive(child) or os.path.isdir(folder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the child outlived its Slicer"
    assert not os.path.isdir(folder), "the job folder outlived its Slicer"


def test_stale_job_folders_of_a_dead_slicer_are_swept(process_module, tmp_path, monkeypatch):
    import subprocess
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, mine, unknown = (tmp_path / f"SegDeep-{n}" for n in ("stale", "mine", "unknown"))
    for folder, owner in ((stale, dead.pid), (mine, os.getpid())):
        folder.mkdir()
        (folder / "owner.pid").write_text(str(owner))
    unknown.mkdir()  # no owner recorded: left alone
    assert process_module.sweepStaleJobDirs() == [str(stale)]
    assert not stale.exists() and mine.exists() and unknown.exists()
    fresh = Path(process_module.makeJobDir())
    assert fresh.parent == tmp_path and (fresh / "owner.pid").read_text() == str(os.getpid())


def test_no_console_window_on_windows(process_module, monkeypatch):
    """Every child (runs, the info check, taskkill on cancel) gets CREATE_NO_WINDOW and a hidden
    STARTUPINFO, as slicer.util.launchConsoleProcess sets."""
    import subprocess

    class StartupInfo:
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 1

    monkeypatch.setattr(process_module, "IS_WINDOWS", True)
    monkeypatch.setattr(subprocess, "STARTUPINFO", StartupInfo, raising=False)
    monkeypatch.setattr(subprocess, "STARTF_USESHOWWINDOW", 1, raising=False)
    calls = []

    class Popen:
        def __init__(self, args, **kwargs):
            calls.append(("Popen", kwargs))
            self.pid, self.stdout, self.stdin = 4242, io.StringIO(""), None

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", Popen)
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: calls.append((args[0], kwargs)))
    runner = process_module.ProcessRunner(["python", "-m", "SegDeepLib", "info", "--json"])
    runner.start()
    runner.cancel()
    assert [name for name, _ in calls] == ["Popen", "taskkill"]
    for _name, kwargs in calls:
        assert kwargs["creationflags"] & process_module.CREATE_NO_WINDOW
        info = kwargs["startupinfo"]
        assert info.dwFlags & 1 and info.wShowWindow == 0  # STARTF_USESHOWWINDOW, SW_HIDE
    assert calls[0][1]["creationflags"] & process_module.CREATE_NEW_PROCESS_GROUP
    assert "start_new_session" not in calls[0][1]

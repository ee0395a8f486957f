"""Extension builds killed at any point recover by themselves (issue 18), with real builds.

Each test uses its own cache (``SEGDEEP_EXT_CACHE`` in a temporary folder). Most use the small
"probe" kind of ``extension_child.py`` (about a second to build), with a compiler that waits
before compiling while a test needs a build in progress; one uses the real CPU extension.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from SegDeepLib.crf import extension
from SegDeepLib.crf.build_lock import FileLock
from Testing.SegDeepLib.crf.extension_child import PROBE_SOURCE

CHILD = Path(__file__).with_name("extension_child.py")
pytestmark = pytest.mark.skipif(
    extension.toolchain_problem("cpu") is not None,
    reason=f"cannot build extensions here: {extension.toolchain_problem('cpu')}",
)


@pytest.fixture
def probe(tmp_path):
    """(source, cache, env): the probe's source and a private cache."""
    source = tmp_path / "src" / "probe.cpp"
    source.parent.mkdir()
    source.write_text(PROBE_SOURCE)
    cache = tmp_path / "cache"
    env = {**os.environ, "SEGDEEP_EXT_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    return source, cache, env


def _slow_compiler(tmp_path: Path, seconds: float) -> tuple[Path, Path]:
    """A CXX that touches a marker, then waits ``seconds`` before each compile (not the link)."""
    marker = tmp_path / "compiling"
    script = tmp_path / "slow-cxx"
    script.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -c "*) touch "{marker}"; sleep {seconds};; esac\n'
        f'exec {extension._cxx()} "$@"\n'
    )
    script.chmod(0o755)
    return script, marker


def _start(args: list[str], env: dict, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        env={**env, **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the test ends the whole group, orphaned compilers included
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, events, err


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _result(events: list[dict]) -> dict:
    results = [e for e in events if e.get("event") == "result"]
    assert len(results) == 1, events
    return results[0]


def _lock_is_free(cache: Path) -> bool:
    (lock_path,) = cache.glob("*.lock")
    lock = FileLock(lock_path)
    try:
        return lock.try_acquire()
    finally:
        lock.release()


def _probe_name(source: Path) -> str:
    from Testing.SegDeepLib.crf.extension_child import register_probe

    register_probe(source)
    try:
        return extension.build_name("probe")
    finally:
        del extension.KINDS["probe"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_build_recovers_at_once(probe, tmp_path, signum):
    source, cache, env = probe
    cxx, marker = _slow_compiler(tmp_path, 120)
    builder = _start([str(source)], env, CXX=str(cxx))
    _wait_for(marker, builder)  # the compiler runs: the build is in progress
    os.kill(builder.pid, signum)  # the Python process only, like `kill -TERM PID`
    start = time.monotonic()
    code, events, err = _finish(builder, timeout=30)
    stopped_in = time.monotonic() - start
    name = _probe_name(source)
    assert code == (130 if signum != signal.SIGKILL else -signal.SIGKILL), err
    assert stopped_in < 15, f"took {stopped_in:.1f} s to stop"
    assert any(e.get("stage") == extension.BUILD_STAGE for e in events), events
    assert not (cache / name).exists()  # nothing half-built was published
    leftovers = list(cache.glob(".build-*"))
    assert bool(leftovers) == (signum == signal.SIGKILL)  # a caught signal cleans up itself
    assert _lock_is_free(cache)  # the lock died with its owner

    start = time.monotonic()
    code, events, err = _finish(_start([str(source)], env), timeout=120)
    seconds = time.monotonic() - start
    assert code == 0, err
    assert _result(events) == {"event": "result", "loaded": True, "error": None, "answer": 42}
    assert seconds < 60, f"recovery took {seconds:.1f} s"
    assert (cache / name / "build.json").is_file()
    assert not list(cache.glob(".build-*")) and not list(cache.glob(".stage-*"))


@pytest.mark.slow
def test_live_build_is_waited_for_and_the_waiter_can_cancel(probe, tmp_path):
    source, cache, env = probe
    cxx, marker = _slow_compiler(tmp_path, 8)
    builder = _start([str(source)], env, CXX=str(cxx))
    try:
        _wait_for(marker, builder)
        waiter = _start([str(source)], env)
        line = waiter.stdout.readline()  # first progress event: waiting, with the owner
        first = json.loads(line)
        assert first["stage"] == extension.BUILD_STAGE
        assert first["message"].startswith("waiting for the CRF extension build")
        assert f"PID {builder.pid} " in first["message"]
        assert first["eta_s"] > 0 and first["data"] == {"estimate_s": 5.0}
        waiter.send_signal(signal.SIGTERM)
        code, _, err = _finish(waiter, timeout=15)
        assert code == 130, err
        assert builder.poll() is None  # cancelling a waiter leaves the builder alone

        second = _start([str(source)], env)  # waits for the builder, then loads its build
        code, events, err = _finish(second, timeout=120)
        assert code == 0, err
        assert _result(events)["answer"] == 42
        messages = [e["message"] for e in events if e.get("stage") == extension.BUILD_STAGE]
        assert messages[0].startswith("waiting") and not any("building" in m for m in messages)
        assert events[-2]["fraction"] == 1.0
    finally:
        code, events, err = _finish(builder, timeout=120)
    assert code == 0 and _result(events)["answer"] == 42, err


@pytest.mark.slow
def test_unreadable_cached_binary_is_rebuilt(probe):
    source, cache, env = probe
    name = _probe_name(source)
    broken = cache / name
    broken.mkdir(parents=True)
    (broken / f"{name}{extension.LIB_EXT}").write_bytes(b"\x7fELF truncated")
    (broken / "build.json").write_text("{}")
    code, events, err = _finish(_start([str(source)], env), timeout=120)
    assert code == 0, err
    assert _result(events)["answer"] == 42
    assert (broken / f"{name}{extension.LIB_EXT}").stat().st_size > 1000


@pytest.mark.slow
def test_real_build_killed_then_info_answers_and_a_later_run_recovers(tmp_path):
    """Issue 18's steps with the real CPU extension: SIGTERM mid-build, then ``segdeep info``."""
    cache = tmp_path / "cache"
    env = {**os.environ, "SEGDEEP_EXT_CACHE": str(cache)}
    builder = _start(["--kind", "cpu"], env)
    end = time.monotonic() + 120
    while not list(cache.glob(".build-*/build.ninja")):
        assert builder.poll() is None and time.monotonic() < end, builder.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # ninja and the compiler are running
    builder.send_signal(signal.SIGTERM)
    code, _, err = _finish(builder, timeout=30)
    assert code == 130, err

    start = time.monotonic()
    info = subprocess.run(
        [sys.executable, "-m", "SegDeepLib", "info", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert info.returncode == 0, info.stderr
    assert time.monotonic() - start < 30
    report = json.loads(info.stdout)["crf_backends"]  # stdout is pure JSON
    assert report["cpp"]["state"] == "buildable", report
    assert not [p for p in cache.glob("segdeep_crf_cpu_*") if p.is_dir()]  # info built nothing

    code, events, err = _finish(_start(["--kind", "cpu"], env), timeout=400)
    assert code == 0, err
    assert _result(events) == {"event": "result", "loaded": True, "error": None, "answer": None}

"""``python childguard.py -m MODULE ARGS...``: run ``python -m MODULE ARGS...`` that stops when its
parent (Slicer) is gone.

The parent keeps the child's stdin open and never writes to it, so end-of-file on stdin means the
parent died (crashed or was killed). A daemon thread waits for it, then removes the job's temporary
folder (``SEGDEEP_JOB_DIR``) and kills the child's own process group (POSIX: the child leads its
session) or process tree (Windows) - the guard included. Standard library only; no Slicer import.
"""

from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading

JOB_DIR_VARIABLE = "SEGDEEP_JOB_DIR"


def _stopWhenParentDies(jobDir: str) -> None:
    try:  # os.read on the descriptor: a buffered read would hold a lock that blocks interpreter exit
        descriptor = sys.stdin.fileno()
        while os.read(descriptor, 4096):
            pass
    except (OSError, ValueError, AttributeError):
        return  # no usable stdin: nothing to watch
    if jobDir:
        shutil.rmtree(jobDir, ignore_errors=True)
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(os.getpid())], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, creationflags=0x08000000)
    else:
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        except OSError:
            pass
    os._exit(137)


def startWatching() -> threading.Thread:
    """Start the thread that ends this process (and its children) once stdin reaches end-of-file."""
    watcher = threading.Thread(target=_stopWhenParentDies, args=(os.environ.get(JOB_DIR_VARIABLE, ""),),
                               daemon=True, name="segdeep-parent-watch")
    watcher.start()
    return watcher


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "-m":
        print("usage: childguard.py -m MODULE [ARGS...]", file=sys.stderr)
        return 2
    startWatching()
    sys.path[0] = os.getcwd()  # as `python -m` has it (not this helper's folder)
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One-shot GPU check of SegDeep (see benchmarks/README.md; run through ``check.sh``).

    bash benchmarks/gpu/check.sh [--dry-run] [--out FILE] [--budget SECONDS] [--only a,b]

Builds the CRF extensions, runs the CUDA tests, compute-sanitizer memcheck and racecheck on a
small CRF case, the CRF targets of shared/docs/crf.md (512x512x300, 5 iterations, 2 and 14
labels), sliding-window inference of the default model (fp32, fp16, bf16) and one training step,
each in its own process with a time limit, within a total budget (default 450 s). Writes one
Markdown results file (rewritten after every step, so a killed run keeps what it measured).

``--dry-run``: the same steps on the CPU at tiny sizes, with the modules the GPU image lacks made
unimportable: validates the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# (step, time limit in seconds), in order of importance.
STEPS = (
    ("env", 60),
    ("build", 300),
    ("tests", 240),
    ("crf", 180),
    ("memcheck", 150),
    ("racecheck", 150),
    ("inference", 150),
    ("training", 90),
)
KEYS = {  # the numbers shown in the summary table
    "env": ("gpu", "torch", "torch_cuda", "nvcc"),
    "build": ("cpu_seconds", "cuda_seconds", "cuda_error", "nvcc_sm_90"),
    "tests": ("tests", "failures", "errors", "skipped"),
    "crf": (
        "backend",
        "L2_seconds",
        "L2_meets_goal",
        "L14_seconds",
        "L14_meets_goal",
        "L2_lattice_build_seconds",
        "L2_deterministic_bit_identical",
    ),
    "memcheck": ("summary",),
    "racecheck": ("summary",),
    "inference": ("stage2_fp32_seconds", "stage2_bf16_seconds", "stage2_full_512_bf16_seconds"),
    "training": ("fp32_step_seconds", "bf16_step_seconds"),
}


def main() -> int:
    args = _parse()
    out = Path(args.out) if args.out else _default_out()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    env.setdefault("SEGDEEP_EXT_CACHE", tempfile.mkdtemp(prefix="segdeep_gpu_check_ext_"))
    only = set(args.only.split(",")) if args.only else None
    start = time.monotonic()
    results: list[dict] = []
    for name, limit in STEPS:
        if only is not None and name not in only:
            continue
        left = args.budget - (time.monotonic() - start)
        if left < 20:
            results.append({"step": name, "status": "skip", "note": "not run: time budget spent"})
        else:
            results.append(_run_step(name, min(limit, int(left)), args.dry_run, env))
        print(f"[gpu-check] {name}: {results[-1]['status']} ({results[-1].get('seconds', 0)} s)")
        _write(out, results, args, time.monotonic() - start)
    print(f"[gpu-check] results: {out}")
    return 0 if all(r["status"] != "fail" for r in results) else 1


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no CUDA")
    parser.add_argument("--out", default=None, help="results file (Markdown)")
    parser.add_argument("--budget", type=float, default=450.0, help="total seconds")
    parser.add_argument("--only", default=None, help="comma-separated steps to run")
    return parser.parse_args()


def _default_out() -> Path:
    folder = os.environ.get("OUT")
    base = Path(folder) if folder and Path(folder).is_dir() else HERE
    return base / "gpu_check_results.md"


def _run_step(name: str, limit: int, dry: bool, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(HERE / "steps.py"), name, str(result_file)]
        cmd += ["--dry-run"] if dry else []
        begin = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit, check=False
            )
            log, timed_out = proc.stdout + proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            log = _text(exc.stdout) + _text(exc.stderr)
            timed_out = True
        seconds = round(time.monotonic() - begin, 1)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            why = f"timed out after {limit} s" if timed_out else "the step wrote no result"
            result = {"status": "fail", "note": why}
    result = {"step": name, "seconds": seconds, **result}
    if result["status"] == "fail" or name == "tests":
        result["log_tail"] = "\n".join(log.splitlines()[-40:])
    return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _write(out: Path, results: list[dict], args: argparse.Namespace, elapsed: float) -> None:
    lines = [
        "# SegDeep GPU check results",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `bash benchmarks/gpu/check.sh {' '.join(sys.argv[1:])}`".rstrip(),
        f"- mode: {'DRY RUN (CPU, tiny sizes: no GPU numbers)' if args.dry_run else 'GPU'}",
        f"- elapsed: {elapsed:.0f} s of a {args.budget:.0f} s budget",
        "",
        "| step | status | seconds | numbers |",
        "|---|---|---|---|",
    ]
    for r in results:
        nums = ", ".join(f"{k}={r[k]}" for k in KEYS.get(r["step"], ()) if r.get(k) is not None)
        note = r.get("note") or r.get("error") or ""
        lines.append(f"| {r['step']} | {r['status']} | {r.get('seconds', '')} | {nums} {note} |")
    lines += ["", "## All numbers", "", "```json"]
    lines += [json.dumps({k: v for k, v in r.items() if k != "log_tail"}) for r in results]
    lines += ["```"]
    for r in results:
        if r.get("log_tail"):
            lines += [
                "",
                f"## {r['step']}: last lines of its output",
                "",
                "```",
                r["log_tail"],
                "```",
            ]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())

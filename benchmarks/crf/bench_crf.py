"""SegDeep CRF benchmark, side by side with SimpleCRF and pydensecrf in one run.

Same synthetic pelvic-CT case, same model and parameters as the CRF survey
(``../shared/bench/crf``, whose ``bench_common.py`` generates the case and converts units):
case M = 64x128x128 or L = 128x256x256, 2 labels, 5 mean-field iterations, setting A
(theta_alpha = 4 voxels, theta_beta = 15 HU, theta_gamma = 2 voxels, w1 = 5, w2 = 3), 1 mm voxels.

    python benchmarks/crf/bench_crf.py all [--sizes M,L] [--out results.jsonl]
    python benchmarks/crf/bench_crf.py IMPL SIZE [--repeats R] [--config A|P] [--one-call]

IMPL: segdeep (backend auto) | segdeep_torch | segdeep_grad (forward + backward) | simplecrf |
pydensecrf. Each implementation runs in its own process (so peak memory is its own); threads:
BENCH_THREADS (default 2). Prints one ``RESULT {json}`` line per run and a summary table.

On an oversubscribed machine OpenMP's default spin-waiting makes the short parallel regions of
case M several times slower than their CPU time; ``OMP_WAIT_POLICY=PASSIVE`` (recorded in each
result) measures the work instead of the scheduler.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SURVEY = Path(os.environ.get("CRF_SURVEY_DIR", REPO.parent / "shared" / "bench" / "crf"))
sys.path.insert(0, str(SURVEY))
sys.path.insert(0, str(REPO))
IMPLS = ("segdeep", "segdeep_torch", "segdeep_grad", "simplecrf", "pydensecrf")


def _bc():
    try:
        import bench_common
    except ImportError as exc:
        raise SystemExit(
            f"needs the survey's bench_common.py in {SURVEY} (CRF_SURVEY_DIR)"
        ) from exc
    return bench_common


def _segdeep(impl, u8, p, gt, cfg, tb):
    import torch

    from SegDeepLib.crf import CRFRNN

    backend = "torch" if impl == "segdeep_torch" else "auto"
    crf = CRFRNN(
        2,
        cfg["theta_alpha"],
        tb,
        cfg["theta_gamma"],
        cfg["w1"],
        cfg["w2"],
        cfg["iters"],
        backend=backend,
    )
    logits = torch.log(torch.from_numpy(np.stack([1 - p, p], 0)))[None]
    img = torch.from_numpy(u8.astype(np.float32))[None, None]
    target = torch.from_numpy(gt.astype(np.int64))[None]
    out = {}

    def fn():
        if impl == "segdeep_grad":
            lg = logits.clone().requires_grad_(True)
            res = crf(lg, img, (1.0, 1.0, 1.0))
            torch.nn.functional.cross_entropy(res, target).backward()
            out["q"] = res.detach()
        else:
            with torch.no_grad():
                out["q"] = crf(logits, img, (1.0, 1.0, 1.0))

    return fn, lambda: out["q"][0].argmax(0).numpy() == 1, lambda: crf.last_backend


def _simplecrf(u8, p, cfg, tb):
    import denseCRF3D

    # SimpleCRF derives positions correctly only when shape[0] == shape[2]: (D,H,W) -> (H,D,W)
    perm = (1, 0, 2)
    img = np.ascontiguousarray(u8.transpose(perm)[..., None])
    probs = np.ascontiguousarray(np.stack([1 - p, p], -1).astype(np.float32).transpose(perm + (3,)))
    prm = {
        "MaxIterations": float(cfg["iters"]),
        "PosRStd": cfg["theta_gamma"],
        "PosCStd": cfg["theta_gamma"],
        "PosZStd": cfg["theta_gamma"],
        "PosW": cfg["w2"],
        "BilateralRStd": cfg["theta_alpha"],
        "BilateralCStd": cfg["theta_alpha"],
        "BilateralZStd": cfg["theta_alpha"],
        "ModalityNum": 1.0,
        "BilateralW": cfg["w1"],
        "BilateralModsStds": (float(tb),),
    }
    out = {}

    def fn():
        fd, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        sys.stdout.flush()
        os.dup2(null, 1)
        try:
            out["lab"] = denseCRF3D.densecrf3d(img, probs, prm)
        finally:
            os.dup2(fd, 1)
            os.close(null)
            os.close(fd)

    return fn, lambda: out["lab"].transpose(np.argsort(perm)) == 1, lambda: "simplecrf"


def _pydensecrf(u8, p, cfg, bc):
    import pydensecrf.densecrf as dcrf
    import torch

    fb, fs = bc.features(u8, cfg, dtype=torch.float32)
    fb, fs = np.ascontiguousarray(fb.numpy()), np.ascontiguousarray(fs.numpy())
    unary = np.ascontiguousarray(-np.log(np.stack([1 - p, p], 0)).reshape(2, -1).astype(np.float32))
    out = {}

    def fn():
        d = dcrf.DenseCRF(u8.size, 2)
        d.setUnaryEnergy(unary)
        d.addPairwiseEnergy(
            fb, compat=cfg["w1"], kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_AFTER
        )
        d.addPairwiseEnergy(
            fs, compat=cfg["w2"], kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_AFTER
        )
        out["q"] = np.array(d.inference(cfg["iters"]))

    return fn, lambda: out["q"].reshape(2, *u8.shape).argmax(0) == 1, lambda: "pydensecrf"


def run_one(impl: str, size: str, repeats: int, config: str = "A", one_call: bool = False) -> dict:
    import torch

    bc = _bc()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    cfg = bc.CONFIGS[config]
    hu, gt, p = bc.get_case(size)
    u8, tb = bc.hu_to_u8(hu), bc.theta_beta_u8(cfg)

    def make(u8, p, gt):
        if impl.startswith("segdeep"):
            return _segdeep(impl, u8, p, gt, cfg, tb)
        if impl == "simplecrf":
            return _simplecrf(u8, p, cfg, tb)
        if impl == "pydensecrf":
            return _pydensecrf(u8, p, cfg, bc)
        raise SystemExit(f"unknown implementation {impl}; one of {IMPLS}")

    if one_call:  # warm up on a tiny crop (loads extensions), then measure a single call
        tiny = (slice(0, 8),) * 3
        make(np.ascontiguousarray(u8[tiny]), np.ascontiguousarray(p[tiny]), np.ascontiguousarray(gt[tiny]))[0]()
    fn, post, backend = make(u8, p, gt)
    base = bc.rss_mb()
    if not one_call:
        fn()  # warm-up (builds/loads extensions)
    times, rss, cpu, faults = [], [], [], []
    for _ in range(1 if one_call else repeats):
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append((u1.ru_utime - u0.ru_utime, u1.ru_stime - u0.ru_stime))
        faults.append(u1.ru_minflt - u0.ru_minflt)
        rss.append(round(bc.rss_mb() - base, 1))
    return {
        "impl": impl,
        "backend": backend(),
        "size": size,
        "config": config,
        "one_call": one_call,
        "shape": list(gt.shape),
        "threads": torch.get_num_threads(),
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "times_s": [round(t, 4) for t in times],
        "user_s": round(statistics.median(c[0] for c in cpu), 4),
        "sys_s": round(statistics.median(c[1] for c in cpu), 4),
        "page_faults": int(statistics.median(faults)),
        "delta_peak_rss_mb": round(bc.peak_rss_mb() - base, 1),
        "rss_after_each_mb": rss,
        "dice_unary": round(bc.dice(p > 0.5, gt), 4),
        "dice_crf": round(bc.dice(post(), gt), 4),
        "load": round(bc.loadavg(), 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }


def run_all(sizes: list[str], out: str | None, repeats: int, config: str = "A") -> None:
    bc = _bc()
    results = [{"impl": "calibration_start", **bc.calibrate(), "load": round(bc.loadavg(), 2)}]
    print("RESULT " + json.dumps(results[0]), flush=True)
    for size in sizes:
        for impl in IMPLS:
            cmd = [sys.executable, __file__, impl, size, "--repeats", str(repeats), "--config", config]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            res = (
                json.loads(lines[-1][7:])
                if lines
                else {"impl": impl, "size": size, "error": (proc.stderr or proc.stdout)[-300:]}
            )
            results.append(res)
            print("RESULT " + json.dumps(res), flush=True)
    results.append({"impl": "calibration_end", **bc.calibrate(), "load": round(bc.loadavg(), 2)})
    print("RESULT " + json.dumps(results[-1]), flush=True)
    if out:
        with open(out, "a") as f:
            for res in results:
                f.write(json.dumps(res) + "\n")
    print(summary(results))


def summary(results: list[dict]) -> str:
    """Markdown table with speed-ups against SimpleCRF of the same size."""
    rows = [
        (
            "| impl | size | backend | median s | extra RSS MB (peak; after each call) | Dice "
            "unary -> CRF | speed-up vs SimpleCRF |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    ref = {
        r["size"]: r["median_s"]
        for r in results
        if r.get("impl") == "simplecrf" and "median_s" in r
    }
    for r in results:
        if "size" not in r:
            continue
        if "error" in r:
            rows.append(f"| {r['impl']} | {r['size']} | error: {r['error'][-80:]!r} | | | | |")
            continue
        sp = ref.get(r["size"])
        speed = f"{sp / r['median_s']:.2f}x" if sp else "n/a"
        rows.append(
            f"| {r['impl']} | {r['size']} | {r['backend']} | {r['median_s']:.3f} | "
            f"{r['delta_peak_rss_mb']}; {r['rss_after_each_mb']} | {r['dice_unary']} -> "
            f"{r['dice_crf']} | {speed} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("impl", help="all | " + " | ".join(IMPLS))
    ap.add_argument("size", nargs="?", default="M")
    ap.add_argument("--sizes", default="M,L")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one-call", action="store_true",
                    help="one call in a fresh process (warm-up on an 8^3 crop): its time and extra peak memory")
    ap.add_argument("--config", default="A", choices=("A", "P"),
                    help="crf.md parameter setting: A (default) or P (theta 1 voxel, a lattice ~2x the voxels)")
    args = ap.parse_args()
    if args.impl == "all":
        run_all(args.sizes.split(","), args.out, args.repeats, args.config)
    else:
        print("RESULT " + json.dumps(run_one(args.impl, args.size, args.repeats, args.config, args.one_call)), flush=True)


if __name__ == "__main__":
    main()

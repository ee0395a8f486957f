"""The runner end to end on tiny phantoms: outputs, exact resume, SIGKILL, DDP, fine-tuning, logging."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from SegDeepLib.errors import CancelledError, SegDeepError
from SegDeepLib.io.model_folder import load_weights, read_spec
from SegDeepLib.progress import CancelToken
from SegDeepLib.training import train
from SegDeepLib.training.checkpoint import load_checkpoint
from Testing.SegDeepLib.training.helpers import make_msd_dataset, tiny_config

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_msd_dataset(tmp_path_factory.mktemp("ds"), cases=3)


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["global_step"] for r in steps] == list(range(1, len(steps) + 1))
    return [r["loss"] for r in steps]


def test_training_writes_a_self_describing_model_folder(dataset, tmp_path):
    events = []
    folder = train(tiny_config(dataset, tmp_path / "run"), progress=events.append)
    spec = read_spec(folder)
    assert spec["networks"]["main"] == {"name": "test_tiny3d", "width": 4, "in_channels": 1, "num_classes": 3}
    assert [lab["name"] for lab in spec["labels"]["labels"]] == ["liver", "spleen"]
    assert spec["preprocessing"]["intensity"]["kind"] == "window"
    assert spec["inference"]["tile_size"] == [8, 16, 16] and spec["library_version"]
    assert spec["inference"]["mode"] == "3d" and spec["inference"]["overlap"] == 0.0
    import SimpleITK as sitk

    from SegDeepLib.inference.predictor import Predictor

    image = sitk.ReadImage(str(dataset / "imagesTr" / "case1.nii.gz"))
    result = Predictor.from_folder(folder).predict(image, device="cpu")
    assert result.labelmap.GetSize() == image.GetSize() and result.table.names == ["liver", "spleen"]
    assert len(spec["metrics"]["history"]) == 2 and "val_dice" in spec["metrics"]["history"][0]
    weights = load_weights(folder)["main"]
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    for key, value in best["model"].items():
        assert torch.equal(weights[key], value)
    assert len(_losses(tmp_path / "run")) == 8
    for name in ("train.log", "config.yaml", "splits.json", "training_curves.png"):
        assert (tmp_path / "run" / name).exists()
    kinds = {e.event for e in events}
    assert {"progress", "metrics", "log"} <= kinds
    with pytest.raises(SegDeepError, match="already holds a training run"):
        train(tiny_config(dataset, tmp_path / "run"))


def test_resume_after_cancel_reproduces_the_uninterrupted_losses(dataset, tmp_path):
    reference = tmp_path / "ref"
    train(tiny_config(dataset, reference, augmentation={"enabled": True, "affine_probability": 0.5,
                                                          "rotation_deg": 10, "intensity_probability": 0.5,
                                                          "noise_std": 0.05}))
    run = tmp_path / "run"
    config = tiny_config(dataset, run, augmentation={"enabled": True, "affine_probability": 0.5, "rotation_deg": 10,
                                                     "intensity_probability": 0.5, "noise_std": 0.05})
    token = CancelToken()

    def cancel_at_step_7(event):
        if event.event == "progress" and event.stage == "train" and "step 3 " in event.message \
                and "epoch 2/" in event.message:
            token.cancel()

    with pytest.raises(CancelledError):
        train(config, progress=cancel_at_step_7, cancel=token)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["position"]["global_step"] == 6  # checkpoint every 2 steps: step 7 is lost
    train(config, resume=True)
    assert _losses(run) == _losses(reference)
    a = load_weights(run / "model")["main"]
    b = load_weights(reference / "model")["main"]
    # losses are bit-identical; the last update may differ by an ulp (CPU conv reduction order)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


AUGMENT = {"enabled": True, "affine_probability": 0.5, "rotation_deg": 10, "intensity_probability": 0.5,
           "noise_std": 0.05}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(dataset, tmp_path):
    # Bit-exact with augmentation on. The killed run is a separate process with one thread; the
    # reference and the resumed run use one thread too, since the CPU convolutions' reduction
    # order (and so the last bits of every step) depends on the thread count, not on the resume.
    torch.set_num_threads(1)
    steps = {"epochs": 2, "steps_per_epoch": 12, "checkpoint_every_steps": 3}
    reference = tmp_path / "ref"
    train(tiny_config(dataset, reference, training=steps, augmentation=AUGMENT))
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(dataset, run, training=steps, augmentation=AUGMENT)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = ("import sys, time, torch; torch.set_num_threads(1); import Testing.SegDeepLib.training.helpers; "
            "import SegDeepLib.training.steps as s; f = s.train_step\n"
            "def slow(*a, **k):\n    time.sleep(0.25); return f(*a, **k)\n"
            "s.train_step = slow; import SegDeepLib.training.runner as r; r.train_step = slow\n"
            "from SegDeepLib.cli.main import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "train", str(cfg), "--progress", "json"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and sum(1 for line in metrics.read_text().splitlines() if '"step"' in line) >= 16:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(run / "checkpoints" / "last.pt")  # never corrupt
    assert 15 <= state["position"]["global_step"] <= 18 and state["position"]["epoch"] == 1
    # a temporary as a kill during a checkpoint write leaves it: removed on resume
    stale = run / "checkpoints" / ".last.pt.killed.tmp"
    stale.write_bytes(b"partial")
    train(tiny_config(dataset, run, training=steps, augmentation=AUGMENT), resume=True)
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert _losses(run) == _losses(reference)
    a, b = load_weights(run / "model")["main"], load_weights(reference / "model")["main"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_single_process(dataset, tmp_path):
    common = {"training": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "checkpoint_every_steps": 10},
              "loss": {"name": "ce"}, "validation": {"every_epochs": 5}}
    single = tmp_path / "single"
    train(tiny_config(dataset, single, **common))
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(dataset, tmp_path / "ddp", **common)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = ("import sys, torch; torch.set_num_threads(1); import Testing.SegDeepLib.training.helpers\n"
            "from SegDeepLib.cli.main import main; sys.exit(main(sys.argv[1:]))")
    script = tmp_path / "entry.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port=29517", str(script), "train", str(cfg)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    a = load_weights(single / "model")["main"]
    b = load_weights(tmp_path / "ddp" / "model")["main"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(single), rel=1e-5)


def test_fine_tuning_new_label_set_copies_matching_weights(dataset, tmp_path):
    first = train(tiny_config(dataset, tmp_path / "a", training={"epochs": 1, "steps_per_epoch": 2}))
    second = tiny_config(dataset, tmp_path / "b", training={"epochs": 1, "steps_per_epoch": 1,
                                                             "init_from": str(first)},
                         data={"labels": ["liver", "spleen", "kidney_left"]}, optimizer={"lr": 1e-3})
    from SegDeepLib.training.config import load_config
    from SegDeepLib.training.runner import Runner

    runner = Runner(load_config(second))
    old = load_weights(first)["main"]
    new = runner.model.state_dict()
    assert torch.equal(new["body.0.weight"], old["body.0.weight"])  # shared trunk copied
    assert new["body.2.weight"].shape[0] == 4 and old["body.2.weight"].shape[0] == 3  # new head
    with pytest.raises(SegDeepError, match="init_strict"):
        Runner(load_config({**second, "training": {**second["training"], "init_strict": True}}))


def test_cli_json_progress_and_python_api(dataset, tmp_path, capsys):
    import SegDeepLib
    from SegDeepLib.cli.main import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(dataset, tmp_path / "cli")))
    assert main(["train", str(cfg), "training.epochs=1", "training.steps_per_epoch=2", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "done" and lines[-1]["data"]["outputs"]["model"] == str(tmp_path / "cli" / "model")
    assert any(e["event"] == "metrics" and e["stage"] == "validation" for e in lines)
    assert any(e["event"] == "progress" and e.get("stage") == "train" for e in lines)
    folder = SegDeepLib.train(str(cfg), output_dir=str(tmp_path / "api"), training__epochs=1,
                              training__steps_per_epoch=1)
    assert read_spec(folder)["training"]["epochs"] == 1


def test_cascade_stage2_exports_a_folder_the_predictor_runs(dataset, tmp_path):
    import SimpleITK as sitk

    from SegDeepLib.inference.predictor import Predictor

    stage1 = train(tiny_config(dataset, tmp_path / "s1", training={"epochs": 1, "steps_per_epoch": 2},
                               data={"preprocessing": {"intensity": {"kind": "window", "window": [-200, 300]},
                                                       "crop": "body"}}))
    cfg = tiny_config(dataset, tmp_path / "s2", training={"epochs": 1, "steps_per_epoch": 2},
                      data={"region_from": str(stage1), "region_dilation_mm": 20.0,
                            "preprocessing": {"intensity": {"kind": "window", "window": [-200, 300]},
                                              "crop": "mask", "margin_mm": 5.0}})
    folder = train(cfg)
    spec = read_spec(folder)
    assert spec["inference"]["mode"] == "cascade" and set(spec["networks"]) == {"stage1", "stage2"}
    assert spec["inference"]["cascade"]["stage1"]["preprocessing"]["crop"] == "body"
    image = sitk.ReadImage(str(dataset / "imagesTr" / "case0.nii.gz"))
    result = Predictor.from_folder(folder).predict(image, device="cpu")
    assert result.labelmap.GetSize() == image.GetSize() and result.labelmap.GetOrigin() == image.GetOrigin()
    cached = list((tmp_path / "s2" / "cache").glob("case*/region.npy"))
    assert cached  # the stage-1 C2 regions were computed and cached with the cases


def test_worker_count_does_not_change_the_samples(dataset, tmp_path):
    steps = {"epochs": 1, "steps_per_epoch": 3}
    aug = {"enabled": True, "elastic_probability": 1.0, "elastic_grid_spacing": 8, "intensity_probability": 1.0,
           "noise_std": 0.1}
    train(tiny_config(dataset, tmp_path / "w0", training=steps, augmentation=aug, data={"num_workers": 0}))
    train(tiny_config(dataset, tmp_path / "w2", training=steps, augmentation=aug, data={"num_workers": 2}))
    assert _losses(tmp_path / "w0") == _losses(tmp_path / "w2")


def test_bf16_autocast_clipping_cosine_and_early_stopping(dataset, tmp_path):
    config = tiny_config(dataset, tmp_path / "bf16", schedule={"name": "cosine"},
                         training={"epochs": 6, "steps_per_epoch": 1, "precision": "bf16", "grad_clip": 0.5,
                                   "early_stopping_patience": 1}, optimizer={"lr": 1e-6})
    folder = train(config)
    history = read_spec(folder)["metrics"]["history"]
    assert 2 <= len(history) < 6  # stopped early: the lr is too small for the Dice to improve twice
    records = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "step"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-6


def test_torch_compile_option_trains_like_eager(dataset, tmp_path):
    # torch.compile (inductor, CPU) must give the eager losses to float tolerance, and the saved
    # model must be the plain network (no "_orig_mod." keys), loadable without compiling.
    pytest.importorskip("torch._inductor")
    steps = {"epochs": 1, "steps_per_epoch": 3, "deterministic": True}
    eager = train(tiny_config(dataset, tmp_path / "eager", training=steps, data={"num_workers": 0}))
    compiled = train(tiny_config(dataset, tmp_path / "compiled", training={**steps, "compile": True},
                                 data={"num_workers": 0}))
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4, abs=1e-6)
    weights = load_weights(compiled)["main"]
    assert not any(key.startswith("_orig_mod.") for key in weights)
    for key, value in load_weights(eager)["main"].items():
        assert torch.allclose(weights[key].float(), value.float(), rtol=1e-3, atol=1e-5), key


def test_cnn_crf_trains_end_to_end_and_logs_its_crf_backend(dataset, tmp_path):
    # the bladder stage-2 model (a CNN + CRF-RNN) through the runner: finite CRF parameters after
    # training, the exported folder loads, and the log names the CRF backend that ran
    model = {"name": "cnn_crf", "cnn": {"name": "test_tiny3d", "width": 4},
             "crf": {"theta_alpha": 4.0, "theta_beta": 0.05, "theta_gamma": 1.0, "num_iterations": 2},
             "spacing": [1.0, 1.0, 1.0], "feature_channels": [0]}
    config = tiny_config(dataset, tmp_path / "crf", model=model,
                         training={"epochs": 1, "steps_per_epoch": 3, "batch_size": 1})
    config["model"] = model  # not merged with the tiny net's settings
    folder = train(config)
    weights = load_weights(folder)["main"]
    crf = {k: v for k, v in weights.items() if k.startswith("crf.")}
    assert crf and all(torch.isfinite(v.float()).all() for v in crf.values())
    log = (tmp_path / "crf" / "train.log").read_text()
    assert re.search(r"CRF backend: (cpp|torch|cuda)", log)

"""Fingerprint statistics against brute force; the plan respects the memory budget."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.data.datasets import load_dataset
from SegDeepLib.data.fingerprint import (
    ACTIVATION_BYTES_PER_VOXEL,
    compute_fingerprint,
    propose_plan,
    target_spacing,
)
from Testing.SegDeepLib.training.helpers import make_msd_dataset


def test_fingerprint_against_brute_force(tmp_path):
    ds = load_dataset(make_msd_dataset(tmp_path, cases=2, shape=(12, 20, 24)))
    fp = compute_fingerprint(ds, max_voxels_per_case=10**9)
    assert fp["num_cases"] == 2 and fp["cases"][0]["shape_zyx"] == [12, 20, 24]
    assert fp["cases"][0]["spacing_zyx"] == pytest.approx([6.0, 9.0, 9.0])
    values = []
    for case in ds.cases:
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[0])))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        values.append(img[lab > 0])
    values = np.concatenate(values).astype(float)
    assert fp["foreground_intensity"]["mean"] == pytest.approx(values.mean())
    assert fp["foreground_intensity"]["percentile_99_5"] == pytest.approx(np.percentile(values, 99.5))


def test_target_spacing_rules():
    iso = np.array([[1.0, 0.8, 0.8], [1.5, 0.7, 0.7], [1.2, 0.9, 0.9]])
    assert target_spacing(iso) == pytest.approx([1.2, 0.8, 0.8])
    aniso = np.array([[5.0, 0.7, 0.7], [5.0, 0.8, 0.8], [1.0, 0.8, 0.8], [5.0, 0.7, 0.7], [5.0, 0.75, 0.75]])
    spacing = target_spacing(aniso)
    assert spacing[0] == pytest.approx(np.percentile(aniso[:, 0], 10)) and spacing[1] == pytest.approx(0.75)


@pytest.mark.parametrize("memory_gb", [0.5, 4.0, 40.0])
def test_plan_fits_the_budget(memory_gb):
    fp = {"cases": [{"spacing_zyx": [1.5, 1.5, 1.5], "shape_zyx": [200, 300, 300]}], "foreground_intensity": {}}
    plan = propose_plan(fp, memory_gb=memory_gb)
    used = plan["batch_size"] * np.prod(plan["patch_size"]) * ACTIVATION_BYTES_PER_VOXEL
    assert used <= memory_gb * 1024**3 or min(plan["patch_size"]) == 16
    assert all(p % 16 == 0 for p in plan["patch_size"]) and 2 <= plan["batch_size"] <= 16
    bigger = propose_plan(fp, memory_gb=memory_gb * 4)
    assert np.prod(bigger["patch_size"]) * bigger["batch_size"] >= np.prod(plan["patch_size"]) * plan["batch_size"]


def test_cli_fingerprint(tmp_path, capsys):
    import json

    import yaml

    from SegDeepLib.cli.main import main

    root = make_msd_dataset(tmp_path / "ds", cases=2, shape=(12, 20, 24))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"root": str(root)}, "model": {"name": "vnet"}}))
    assert main(["train", str(cfg), "--fingerprint", "--memory-gb", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fingerprint"]["num_cases"] == 2 and out["plan"]["spacing"] == [6.0, 9.0, 9.0]
    assert out["plan"]["intensity"]["kind"] == "ct_nnunet"

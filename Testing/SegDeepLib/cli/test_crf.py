"""``segdeep crf``: offline CRF post-processing keeps the image geometry and improves a noisy map."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.cli.main import main
from Testing.SegDeepLib.crf import helpers


@pytest.fixture
def case(tmp_path):
    hu, mask = helpers.real_crop()
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((3.0, 3.0, 3.0))
    img.SetOrigin((10.0, -5.0, 2.5))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    p = helpers.noisy_probabilities(mask)
    np.save(tmp_path / "probs.npy", np.stack([1 - p, p], 0))
    return tmp_path, img, mask, p


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_crf_cli_writes_label_map_on_image_grid(case):
    tmp, img, mask, p = case
    out = tmp / "refined.nii.gz"
    rc = main(
        [
            "crf",
            str(tmp / "probs.npy"),
            str(tmp / "ct.nii.gz"),
            "-o",
            str(out),
            "--probabilities-out",
            str(tmp / "q.npy"),
        ]
    )
    assert rc == 0
    res = sitk.ReadImage(str(out))
    assert res.GetSize() == img.GetSize() and res.GetSpacing() == img.GetSpacing()
    assert res.GetOrigin() == img.GetOrigin() and res.GetDirection() == img.GetDirection()
    labels = sitk.GetArrayFromImage(res)
    q = np.load(tmp / "q.npy")
    assert q.shape == (2, *mask.shape) and np.array_equal(q.argmax(0), labels)
    assert _dice(labels == 1, mask == 1) >= _dice(p > 0.5, mask == 1) - 0.01
    # refuses to overwrite without --overwrite
    assert main(["crf", str(tmp / "probs.npy"), str(tmp / "ct.nii.gz"), "-o", str(out)]) == 2


def test_crf_cli_reads_vector_nifti(case):
    tmp, img, _, p = case
    vec = sitk.GetImageFromArray(np.stack([1 - p, p], -1), isVector=True)
    vec.CopyInformation(img)
    sitk.WriteImage(vec, str(tmp / "probs.nii.gz"))
    rc = main(
        [
            "crf",
            str(tmp / "probs.nii.gz"),
            str(tmp / "ct.nii.gz"),
            "-o",
            str(tmp / "q.npy"),
            "--backend",
            "torch",
            "--iterations",
            "2",
        ]
    )
    assert rc == 0 and np.load(tmp / "q.npy").shape == (2, *p.shape)


def test_crf_cli_bad_input_exits_2(case, capsys):
    tmp, _, _, p = case
    np.save(tmp / "bad.npy", np.stack([1 - p, p], 0)[:, :-1])
    rc = main(["crf", str(tmp / "bad.npy"), str(tmp / "ct.nii.gz"), "-o", str(tmp / "x.nii.gz")])
    assert rc == 2 and "expected" in capsys.readouterr().err
    assert main(["crf", str(tmp / "probs.npy")]) == 2

"""`segdeep demo` on a fresh machine: the phantom is made on the fly, the shipped demo model runs."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SegDeepLib.cli.main import main
from SegDeepLib.inference.catalogue import MODELS_DIR
from SegDeepLib.inference.montage import views, write_png
from SegDeepLib.io import load_label_table, read_segmentation
from SegDeepLib.io.layout import same_grid


def test_demo_writes_segmentation_and_montage(tmp_path, capsys):
    demo = MODELS_DIR / "demo-phantom-unet" / "model.json"
    assert demo.exists(), f"the demo model is missing: {demo}"
    assert main(["demo", "--output", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("phantom_ct.nii.gz", "phantom_segmentation.seg.nrrd", "phantom_montage.png"):
        assert (tmp_path / name).exists() and str(tmp_path / name) in out
    assert "took" in out and "not an accuracy claim" in out
    ct = sitk.ReadImage(str(tmp_path / "phantom_ct.nii.gz"))
    labelmap, table = read_segmentation(tmp_path / "phantom_segmentation.seg.nrrd")
    assert same_grid(labelmap, ct, tol=1e-4) and table.names[0] == "liver"
    assert (sitk.GetArrayViewFromImage(labelmap) == 1).sum() > 1000  # the liver was found
    import matplotlib.pyplot as plt

    png = plt.imread(str(tmp_path / "phantom_montage.png"))
    assert png.ndim == 3 and png.shape[1] > png.shape[0]


def test_demo_without_a_model_still_exits_cleanly(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--model", "no-such-model"]) == 0
    out = capsys.readouterr().out
    assert "no usable demo model" in out and (tmp_path / "phantom_ct.nii.gz").exists()


def test_plain_png_writer_round_trips():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 11, 3)).astype(np.float64) / 255
    path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "x.png"
    write_png(rgb, path)
    back = plt.imread(str(path))[..., :3]
    np.testing.assert_allclose(back, rgb, atol=1 / 255 + 1e-6)


def test_views_follow_patient_axes_whatever_the_file_orientation():
    array = np.zeros((6, 8, 10), np.float32)
    array[5, 0, 0] = 1000  # voxel (i=0, j=0, k=5)
    labels = (array > 0).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    flipped = sitk.GetImageFromArray(array[::-1].copy())
    flipped.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # k runs toward inferior: same anatomy
    flipped.SetOrigin((0, 0, 5))
    lab_flipped = sitk.GetImageFromArray(labels[::-1].copy())
    lab_flipped.CopyInformation(flipped)
    lab = sitk.GetImageFromArray(labels)
    table = load_label_table("phantom")
    assert table.names
    for (n1, g1, l1, _), (n2, g2, l2, _) in zip(views(image, lab), views(flipped, lab_flipped)):
        assert n1 == n2
        np.testing.assert_array_equal(g1, g2)
        np.testing.assert_array_equal(l1, l2)

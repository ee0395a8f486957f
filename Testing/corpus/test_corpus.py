"""The bad-input corpus: hostile but realistic inputs to every command, one test per case.

Every case asserts the README's promise: the exit code; on failure exactly one line
``segdeep: error: ...`` naming the file, no traceback; inputs and pre-existing outputs byte-for-byte
unchanged; no temporary file left behind. Cases that must keep working (oblique, flipped,
permuted, unicode paths...) assert the output lies on the input grid. Inputs are made at test time
from ../shared/data (synthetic stand-ins when it is absent); the CLI runs in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegDeepLib.cli.main import main
from SegDeepLib.io import read_image
from SegDeepLib.io.layout import same_grid
from SegDeepLib.io.model_folder import sha256_file
from Testing.corpus.resources import (
    Resources,
    Spec,
    build_resources,
    copy_series,
    cut,
    snapshot,
    with_array,
    write,
)
from Testing.SegDeepLib.training.helpers import make_msd_dataset, tiny_config

CASES: dict[str, Callable[[Resources, Path], Spec]] = {}


def case(name: str) -> Callable:
    def register(function: Callable[[Resources, Path], Spec]) -> Callable:
        assert name not in CASES, name
        CASES[name] = function
        return function

    return register


@pytest.fixture(scope="module")
def res(tmp_path_factory) -> Resources:
    return build_resources(tmp_path_factory.mktemp("corpus-resources"))


def seg(r: Resources, inp: Path | str, out: Path | str, *extra: str, model: Path | None = None) -> list[str]:
    return ["segment", str(inp), "-o", str(out), "--model", str(model or r.model), "--device", "cpu",
            "--progress", "none", *extra]


def ct_file(r: Resources, ws: Path, name: str = "ct.nii.gz", image: sitk.Image | None = None) -> Path:
    return write(r.ct if image is None else image, ws / name)


def on_grid(out: Path, reference: Path) -> Callable[[], None]:
    def check() -> None:
        assert same_grid(read_image(out), read_image(reference), tol=1e-4)

    return check


# ------------------------------------------------------------------------------------------------
# segment: input formats and content
# ------------------------------------------------------------------------------------------------


@case("segment/missing-file")
def _(r, ws):
    return Spec(seg(r, ws / "nope.nii.gz", ws / "o.nii.gz"), names="nope.nii.gz", absent=[ws / "o.nii.gz"])


@case("segment/empty-file")
def _(r, ws):
    (ws / "empty.nii.gz").write_bytes(b"")
    return Spec(seg(r, ws / "empty.nii.gz", ws / "o.nii.gz"), names="empty.nii.gz", protect=[ws / "empty.nii.gz"])


@case("segment/random-bytes")
def _(r, ws):
    (ws / "noise.nii.gz").write_bytes(np.random.default_rng(0).bytes(5000))
    return Spec(seg(r, ws / "noise.nii.gz", ws / "o.nii.gz"), names="noise.nii.gz", protect=[ws / "noise.nii.gz"])


@case("segment/text-named-nii")
def _(r, ws):
    (ws / "notes.nii").write_text("this is not an image\n" * 20)
    return Spec(seg(r, ws / "notes.nii", ws / "o.nii.gz"), names="notes.nii", protect=[ws / "notes.nii"])


for _fraction in (0.1, 0.5, 0.9, 0.99):

    @case(f"segment/truncated-nii-gz-{int(_fraction * 100)}pct")
    def _(r, ws, fraction=_fraction):
        path = cut(ct_file(r, ws), fraction)
        return Spec(seg(r, path, ws / "o.nii.gz"), names="ct.nii.gz", protect=[path], absent=[ws / "o.nii.gz"])

    @case(f"segment/truncated-nii-{int(_fraction * 100)}pct")
    def _(r, ws, fraction=_fraction):
        path = cut(write(r.ct, ws / "ct.nii", compress=False), fraction)
        return Spec(seg(r, path, ws / "o.nii.gz"), names="ct.nii", protect=[path], absent=[ws / "o.nii.gz"])


@case("segment/truncated-nii-header-only")
def _(r, ws):
    path = write(r.ct, ws / "ct.nii", compress=False)
    path.write_bytes(path.read_bytes()[:352])
    return Spec(seg(r, path, ws / "o.nii.gz"), names="ct.nii", protect=[path])


@case("segment/gzip-corrupt-middle")
def _(r, ws):
    path = ct_file(r, ws)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return Spec(seg(r, path, ws / "o.nii.gz"), names="ct.nii.gz", protect=[path])


@case("segment/gzip-crc-wrong")
def _(r, ws):
    path = ct_file(r, ws)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    path.write_bytes(bytes(data))
    return Spec(seg(r, path, ws / "o.nii.gz"), names="ct.nii.gz", protect=[path])


for _suffix, _compress in ((".nrrd", False), (".nrrd", True), (".mha", False), (".mha", True)):

    @case(f"segment/truncated{_suffix}{'-compressed' if _compress else ''}")
    def _(r, ws, suffix=_suffix, compress=_compress):
        path = cut(write(r.ct, ws / f"ct{suffix}", compress=compress), 0.5)
        return Spec(seg(r, path, ws / "o.nii.gz"), names=f"ct{suffix}", protect=[path])


@case("segment/png-2d")
def _(r, ws):
    path = shutil.copy(r.png, ws / "slice.png")
    return Spec(seg(r, path, ws / "o.nii.gz"), names="slice.png", protect=[Path(path)])


@case("segment/nifti-2d")
def _(r, ws):
    path = write(r.ct[:, :, 3], ws / "slice.nii.gz")
    return Spec(seg(r, path, ws / "o.nii.gz"), names="slice.nii.gz", protect=[path])


@case("segment/nifti-4d")
def _(r, ws):
    vol = sitk.GetArrayFromImage(r.ct)
    path = write(sitk.GetImageFromArray(np.stack([vol, vol, vol])), ws / "series4d.nii.gz")
    return Spec(seg(r, path, ws / "o.nii.gz"), names="series4d.nii.gz", protect=[path])


@case("segment/rgb-vector")
def _(r, ws):
    vol = sitk.GetArrayFromImage(r.ct).astype(np.float32)
    image = sitk.GetImageFromArray(np.stack([vol] * 3, axis=-1), isVector=True)
    path = write(image, ws / "rgb.nrrd")
    return Spec(seg(r, path, ws / "o.nii.gz"), names="rgb.nrrd", protect=[path])


for _bad in ("nan", "inf", "-inf"):
    for _suffix in (".nii.gz", ".nii", ".nrrd"):

        @case(f"segment/{_bad}-voxels{_suffix}")
        def _(r, ws, bad=_bad, suffix=_suffix):
            array = sitk.GetArrayFromImage(r.ct).astype(np.float32)
            array[2, 3, 4] = float(bad)
            path = write(with_array(r.ct, array), ws / f"{bad}{suffix}", compress=suffix != ".nii")
            return Spec(seg(r, path, ws / "o.nii.gz"), names=f"{bad}{suffix}", protect=[path])


for _value in (0, -1000, 40):

    @case(f"segment/constant-{_value}")
    def _(r, ws, value=_value):
        array = np.full(sitk.GetArrayFromImage(r.ct).shape, value, dtype=np.int16)
        path = ct_file(r, ws, "blank.nii.gz", with_array(r.ct, array))
        return Spec(seg(r, path, ws / "o.nii.gz"), names="blank.nii.gz", protect=[path])


@case("segment/empty-folder")
def _(r, ws):
    (ws / "series").mkdir()
    return Spec(seg(r, ws / "series", ws / "o.nii.gz"), names="series")


@case("segment/folder-of-notes")
def _(r, ws):
    (ws / "series").mkdir()
    (ws / "series" / "README.txt").write_text("no images here")
    return Spec(seg(r, ws / "series", ws / "o.nii.gz"), names="series", protect=[ws / "series"])


@case("segment/corrupt-seg-nrrd")
def _(r, ws):
    (ws / "in.seg.nrrd").write_bytes(b"NRRD0004\n# broken\ntype: what\n\n")
    return Spec(seg(r, ws / "in.seg.nrrd", ws / "o.nii.gz"), names="in.seg.nrrd", protect=[ws / "in.seg.nrrd"])


@case("segment/npy-input")
def _(r, ws):
    np.save(ws / "volume.npy", np.zeros((4, 4, 4)))
    return Spec(seg(r, ws / "volume.npy", ws / "o.nii.gz"), names="volume.npy", protect=[ws / "volume.npy"])


@case("segment/zero-voxels")
def _(r, ws):
    path = ws / "zero.nii"
    header = bytearray(write(r.ct, path, compress=False).read_bytes()[:352])
    header[42:48] = np.array([0, 0, 0], dtype="<i2").tobytes()
    path.write_bytes(bytes(header))
    return Spec(seg(r, path, ws / "o.nii.gz"), names="zero.nii", protect=[path])


# content that must work, with or without a warning


@case("segment/ok-real-ct")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


@case("segment/4d-singleton-ok")
def _(r, ws):
    path, out = write(sitk.JoinSeries([r.ct]), ws / "t1.nii.gz"), ws / "o.nii.gz"
    return Spec(seg(r, path, out), rc=0, protect=[path])


@case("segment/uint8-ct-warns")
def _(r, ws):
    array = np.clip(sitk.GetArrayFromImage(r.ct) / 8 + 128, 0, 255).astype(np.uint8)
    path, out = ct_file(r, ws, "u8.nii.gz", with_array(r.ct, array)), ws / "o.nii.gz"
    return Spec(seg(r, path, out), rc=0, warn="u8.nii.gz", protect=[path], check=on_grid(out, path))


@case("segment/mr-to-ct-model-warns")
def _(r, ws):
    path, out = write(r.mr, ws / "mr.nii.gz"), ws / "o.nii.gz"
    return Spec(seg(r, path, out), rc=0, warn="mr.nii.gz", protect=[path], check=on_grid(out, path))


@case("segment/ct-to-mr-model-warns")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out, model=r.model_mr), rc=0, warn="ct.nii.gz", protect=[path])


@case("segment/warning-as-json-event")
def _(r, ws):
    path, out = write(r.mr, ws / "mr.nii.gz"), ws / "o.nii.gz"
    argv = [a if a != "none" else "json" for a in seg(r, path, out)]
    return Spec(argv, rc=0, warn="mr.nii.gz", protect=[path])


for _dtype in ("int32", "float64", "uint16", "int8"):

    @case(f"segment/dtype-{_dtype}")
    def _(r, ws, dtype=_dtype):
        array = sitk.GetArrayFromImage(r.ct).astype(np.float64)
        if dtype in ("uint16",):
            array = array + 1024
        if dtype == "int8":
            array = np.clip(array / 10, -128, 127)
        image = with_array(r.ct, array.astype(dtype))
        path, out = ct_file(r, ws, f"{dtype}.nii.gz", image), ws / "o.nii.gz"
        return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


# ------------------------------------------------------------------------------------------------
# geometry extremes that must keep working
# ------------------------------------------------------------------------------------------------


def _rotation(angle_deg: float, axis: int) -> tuple[float, ...]:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return tuple(m.ravel())


GEOMETRIES: dict[str, dict] = {
    "oblique-30": {"direction": _rotation(30, 2)},
    "oblique-45-x": {"direction": _rotation(45, 0)},
    "oblique-triple": {"direction": tuple((np.array(_rotation(20, 0)).reshape(3, 3)
                                           @ np.array(_rotation(25, 1)).reshape(3, 3)
                                           @ np.array(_rotation(15, 2)).reshape(3, 3)).ravel())},
    "flip-x": {"direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)},
    "flip-z": {"direction": (1, 0, 0, 0, 1, 0, 0, 0, -1)},
    "flip-all": {"direction": (-1, 0, 0, 0, -1, 0, 0, 0, -1)},
    "permuted-xy": {"direction": (0, 1, 0, 1, 0, 0, 0, 0, 1)},
    "permuted-coronal": {"direction": (1, 0, 0, 0, 0, 1, 0, -1, 0)},
    "permuted-sagittal": {"direction": (0, 0, -1, 1, 0, 0, 0, -1, 0)},
    "anisotropic": {"spacing": (0.4, 0.4, 7.5)},
    "tiny-spacing": {"spacing": (0.01, 0.01, 0.02)},
    "far-origin": {"origin": (-1.0e5, 2.5e4, 9.9e4)},
}


for _name, _geometry in GEOMETRIES.items():

    @case(f"geometry/{_name}")
    def _(r, ws, geometry=_geometry):
        image = sitk.Image(r.ct)
        if "direction" in geometry:
            image.SetDirection(tuple(float(v) for v in geometry["direction"]))
        if "spacing" in geometry:
            image.SetSpacing(geometry["spacing"])
        if "origin" in geometry:
            image.SetOrigin(geometry["origin"])
        path, out = ct_file(r, ws, "in.nii.gz", image), ws / "out.seg.nrrd"
        return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


for _label, _dir, _file in (
    ("unicode", "ünïcødé 名前", "腹部 ct.nii.gz"),
    ("spaces", "my scans", "case 01.nii.gz"),
    ("quotes-dashes", "a'b-c", "-leading-dash.nii.gz"),
):

    @case(f"geometry/path-{_label}")
    def _(r, ws, folder=_dir, name=_file):
        path, out = ct_file(r, ws / folder, name), ws / folder / f"{name}.seg.nrrd"
        return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


for _in, _out in ((".nrrd", ".nii.gz"), (".mha", ".nrrd"), (".nii", ".mha"), (".nii.gz", ".nii"),
                  (".nrrd", ".seg.nrrd")):

    @case(f"geometry/format{_in}-to{_out}")
    def _(r, ws, suffix_in=_in, suffix_out=_out):
        path = write(r.ct, ws / f"in{suffix_in}", compress=suffix_in != ".nii")
        out = ws / f"out{suffix_out}"
        return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


@case("geometry/tiny-volume-2x2x2")
def _(r, ws):
    tiny = r.ct[60:62, 50:52, 5:7]
    tiny = with_array(tiny, (np.arange(8).reshape(2, 2, 2) * 100 - 500).astype(np.int16))
    path, out = ct_file(r, ws, "tiny.nii.gz", tiny), ws / "o.nii.gz"
    return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


@case("geometry/single-slice-3d")
def _(r, ws):
    path, out = ct_file(r, ws, "one.nii.gz", r.ct[:, :, 5:6]), ws / "o.nii.gz"
    return Spec(seg(r, path, out), rc=0, protect=[path], check=on_grid(out, path))


# ------------------------------------------------------------------------------------------------
# DICOM series faults (copies of the real series, damaged in the test's folder)
# ------------------------------------------------------------------------------------------------


def _series(r: Resources, ws: Path) -> tuple[Path, list[Path]]:
    folder = copy_series(r.dicom, ws / "series")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return folder, files


DICOM_FAULTS: dict[str, tuple[Callable[[list[Path]], None], int]] = {
    # name: (damage(files), index of the file the message must name; -1: no check of the name)
    "missing-middle-slice": (lambda f: f[9].unlink(), 10),
    "missing-second-slice": (lambda f: f[1].unlink(), 2),
    "missing-two-slices": (lambda f: (f[4].unlink(), f[12].unlink()), 13),
    "truncated-slice-header": (lambda f: cut(f[9], 0.02), 9),
    "truncated-slice-pixels": (lambda f: cut(f[9], 0.7), 9),
    "garbage-slice": (lambda f: f[9].write_bytes(b"\x00garbage" * 300), 9),
    "empty-slice": (lambda f: f[9].write_bytes(b""), 9),
    "corrupt-last-slice": (lambda f: cut(f[-1], 0.5), -1),
    "corrupt-first-slice": (lambda f: cut(f[0], 0.5), 0),
}


for _name, (_damage, _index) in DICOM_FAULTS.items():

    @case(f"dicom/{_name}")
    def _(r, ws, damage=_damage, index=_index):
        folder, files = _series(r, ws)
        named = files[index].name if index >= 0 else files[-1].name
        damage(files)
        return Spec(seg(r, folder, ws / "o.nii.gz"), names=named, protect=[folder], absent=[ws / "o.nii.gz"])

    @case(f"dicom/{_name}-allow-gaps")
    def _(r, ws, damage=_damage, index=_index):
        folder, files = _series(r, ws)
        damage(files)
        out = ws / "o.nii.gz"
        # an interior slice lost: the grid is the intact series' grid (the slice interpolated)
        interior = 0 < index < len(files) - 1
        return Spec(seg(r, folder, out, "--allow-gaps"), rc=0, warn="series", protect=[folder],
                    check=on_grid(out, r.dicom) if interior else None)


@case("dicom/intact-series")
def _(r, ws):
    folder, _ = _series(r, ws)
    out = ws / "o.nii.gz"
    return Spec(seg(r, folder, out), rc=0, protect=[folder], check=on_grid(out, folder))


@case("dicom/notes-beside-series")
def _(r, ws):
    folder, _ = _series(r, ws)
    (folder / "README.txt").write_text("exported by PACS")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    out = ws / "o.nii.gz"
    return Spec(seg(r, folder, out), rc=0, protect=[folder], check=on_grid(out, folder))


@case("dicom/two-series")
def _(r, ws):
    if r.dicom_3slice is None:
        pytest.skip("second real DICOM series not available")
    folder, _ = _series(r, ws)
    for path in r.dicom_3slice.iterdir():
        shutil.copy(path, folder / f"other-{path.name}")
    return Spec(seg(r, folder, ws / "o.nii.gz"), names="--series-uid", protect=[folder])


@case("dicom/unknown-series-uid")
def _(r, ws):
    folder, _ = _series(r, ws)
    return Spec(seg(r, folder, ws / "o.nii.gz", "--series-uid", "1.2.3"), names="1.2.3", protect=[folder])


@case("dicom/three-slice-ct")
def _(r, ws):
    if r.dicom_3slice is None:
        pytest.skip("3-slice DICOM series not available")
    folder = copy_series(r.dicom_3slice, ws / "ct3")
    out = ws / "o.nii.gz"
    return Spec(seg(r, folder, out), rc=0, protect=[folder], check=on_grid(out, folder))


# ------------------------------------------------------------------------------------------------
# output-path faults (all checked before any work)
# ------------------------------------------------------------------------------------------------


@case("output/same-as-input-overwrite")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, path, "--overwrite"), names="ct.nii.gz", protect=[path])


@case("output/same-as-input-other-spelling")
def _(r, ws):
    path = ct_file(r, ws)
    other = ws / "sub" / ".." / "ct.nii.gz"
    (ws / "sub").mkdir()
    return Spec(seg(r, path, other, "--overwrite"), names="ct.nii.gz", protect=[path])


@case("output/same-as-input-symlink")
def _(r, ws):
    path = ct_file(r, ws)
    (ws / "link.nii.gz").symlink_to(path)
    return Spec(seg(r, path, ws / "link.nii.gz", "--overwrite"), names="link.nii.gz", protect=[path])


@case("output/exists-no-overwrite")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    out.write_bytes(b"previous result")
    return Spec(seg(r, path, out), names="o.nii.gz", protect=[path, out])


@case("output/is-a-folder-overwrite")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "results.nii.gz"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return Spec(seg(r, path, out, "--overwrite"), names="results.nii.gz", protect=[path, out])


@case("output/missing-folder")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, ws / "nowhere" / "o.nii.gz"), names="nowhere", protect=[path])


@case("output/parent-is-a-file")
def _(r, ws):
    path = ct_file(r, ws)
    (ws / "afile").write_text("x")
    return Spec(seg(r, path, ws / "afile" / "o.nii.gz"), names="afile", protect=[path, ws / "afile"])


@case("output/unsupported-suffix")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, ws / "o.txt"), names="o.txt", protect=[path], absent=[ws / "o.txt"])


@case("output/unwritable-folder")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, "/proc/segdeep-out.nii.gz"), names="/proc", protect=[path])


@case("output/probabilities-missing-folder")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out, "--probabilities", str(ws / "no" / "p.npy")), names="no",
                protect=[path], absent=[out])


@case("output/probabilities-same-as-input")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out, "--probabilities", str(path), "--overwrite"), names="ct.nii.gz",
                protect=[path], absent=[out])


@case("output/probabilities-same-as-output")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out, "--probabilities", str(out)), names="o.nii.gz", protect=[path], absent=[out])


@case("output/probabilities-exist-no-overwrite")
def _(r, ws):
    path, out, probs = ct_file(r, ws), ws / "o.nii.gz", ws / "p.npy"
    probs.write_bytes(b"old probabilities")
    return Spec(seg(r, path, out, "--probabilities", str(probs)), names="p.npy", protect=[path, probs], absent=[out])


@case("output/probabilities-bad-suffix")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out, "--probabilities", str(ws / "p.txt")), names="p.txt", protect=[path], absent=[out])


@case("output/probabilities-is-folder")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    (ws / "p.npy").mkdir()
    return Spec(seg(r, path, out, "--probabilities", str(ws / "p.npy"), "--overwrite"), names="p.npy",
                protect=[path], absent=[out])


def _mode_is_umask(*paths: Path, folder: bool = False) -> Callable[[], None]:
    def check() -> None:
        for path in paths:
            expected = (0o777 if folder and path.is_dir() else 0o666) & ~0o022
            assert path.stat().st_mode & 0o777 == expected, (path, oct(path.stat().st_mode))

    return check


@case("output/overwrite-replaces-and-follows-umask")
def _(r, ws):
    path, out, probs = ct_file(r, ws), ws / "o.nii.gz", ws / "p.npy"
    out.write_bytes(b"old")
    return Spec(seg(r, path, out, "--overwrite", "--probabilities", str(probs)), rc=0, protect=[path],
                check=_mode_is_umask(out, probs))


@case("output/seg-nrrd-follows-umask")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.seg.nrrd"
    return Spec(seg(r, path, out), rc=0, protect=[path], check=_mode_is_umask(out))


@case("output/probabilities-vector-image")
def _(r, ws):
    path, out, probs = ct_file(r, ws), ws / "o.nii.gz", ws / "p.nrrd"
    return Spec(seg(r, path, out, "--probabilities", str(probs)), rc=0, protect=[path], check=on_grid(out, path))


# ------------------------------------------------------------------------------------------------
# memory guard and bad options
# ------------------------------------------------------------------------------------------------


def _huge_spacing(r: Resources, ws: Path) -> Path:
    image = sitk.Image(r.ct)
    image.SetSpacing((100.0, 100.0, 100.0))
    return ct_file(r, ws, "spacing100.nii.gz", image)


@case("memory/100mm-spacing-over-limit")
def _(r, ws):
    path = _huge_spacing(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz", "--memory-limit", "2", model=r.model_resample),
                names="spacing100.nii.gz", protect=[path], absent=[ws / "o.nii.gz"])


@case("memory/100mm-spacing-default-budget")
def _(r, ws):
    image = sitk.Image(r.ct)
    image.SetSpacing((1000.0, 1000.0, 1000.0))  # beyond any machine's memory
    path = ct_file(r, ws, "spacing1000.nii.gz", image)
    return Spec(seg(r, path, ws / "o.nii.gz", model=r.model_resample), names="spacing1000.nii.gz", protect=[path])


@case("memory/env-limit")
def _(r, ws):
    path = _huge_spacing(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz", model=r.model_resample), names="spacing100.nii.gz",
                protect=[path], env={"SEGDEEP_MEMORY_LIMIT_GB": "1"})


@case("memory/env-limit-not-a-number")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz"), names="SEGDEEP_MEMORY_LIMIT_GB", protect=[path],
                env={"SEGDEEP_MEMORY_LIMIT_GB": "lots"})


@case("memory/limit-zero")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz", "--memory-limit", "0"), names="memory limit", protect=[path])


@case("memory/within-budget-resampled")
def _(r, ws):
    path, out = ct_file(r, ws), ws / "o.nii.gz"
    return Spec(seg(r, path, out, "--memory-limit", "2", model=r.model_resample), rc=0, protect=[path],
                check=on_grid(out, path))


@case("segment/unknown-model")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(["segment", str(path), "-o", str(ws / "o.nii.gz"), "--model", "no-such-model",
                 "--progress", "none"], names="no-such-model", protect=[path])


@case("segment/unknown-organ")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz", "--organs", "brain"), names="brain", protect=[path])


@case("segment/bad-crf-param")
def _(r, ws):
    path = ct_file(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz", "--crf-param", "theta_alpha=-1"), names="theta_alpha",
                protect=[path])


def _broken_model(r: Resources, ws: Path, edit: Callable[[dict, Path], None]) -> Path:
    folder = Path(shutil.copytree(r.model, ws / "model"))
    spec = json.loads((folder / "model.json").read_text())
    edit(spec, folder)
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


MODEL_FAULTS: dict[str, Callable[[dict, Path], None]] = {
    "weights-outside": lambda s, f: s["weights"].update(file="../../x.pt"),
    "weights-absolute": lambda s, f: s["weights"].update(file="/etc/passwd"),
    "weights-missing": lambda s, f: (f / "weights.pt").unlink(),
    "weights-sha-mismatch": lambda s, f: s["weights"].update(sha256="0" * 64),
    "unknown-inference-key": lambda s, f: s["inference"].update(speed="max"),
    "no-networks": lambda s, f: s.pop("networks"),
    "bad-preprocessing": lambda s, f: s.update(preprocessing={"spacing": [0, 1, 1]}),
}


for _name, _edit in MODEL_FAULTS.items():

    @case(f"model/{_name}")
    def _(r, ws, edit=_edit):
        folder, path = _broken_model(r, ws, edit), ct_file(r, ws)
        return Spec(seg(r, path, ws / "o.nii.gz", model=folder), names="model", protect=[path, folder])


@case("model/weights-symlink-outside")
def _(r, ws):
    folder, path = _broken_model(r, ws, lambda s, f: None), ct_file(r, ws)
    outside = ws / "elsewhere.pt"
    shutil.move(folder / "weights.pt", outside)
    (folder / "weights.pt").symlink_to(outside)
    return Spec(seg(r, path, ws / "o.nii.gz", model=folder), names="weights.pt", protect=[path, outside])


@case("model/pickled-weights")
def _(r, ws):
    def edit(spec: dict, folder: Path) -> None:
        torch.save({"main": {"centres": torch.zeros(3)}, "evil": Path("/")}, folder / "weights.pt")
        spec["weights"]["sha256"] = sha256_file(folder / "weights.pt")

    folder, path = _broken_model(r, ws, edit), ct_file(r, ws)
    return Spec(seg(r, path, ws / "o.nii.gz", model=folder), names="weights.pt", protect=[path, folder])


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------


def _labels(r: Resources, ws: Path, name: str, shift: int = 0) -> Path:
    array = (sitk.GetArrayFromImage(r.ct) > 0).astype(np.uint8)
    array = np.roll(array, shift, axis=2)
    return write(with_array(r.ct, array), ws / name)


def ev(pred: Path, gt: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", str(pred), str(gt), "--output-dir", str(out), *extra]


@case("evaluate/ok")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz", 1), _labels(r, ws, "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval"), rc=0, protect=[pred, gt])


@case("evaluate/missing-prediction")
def _(r, ws):
    gt = _labels(r, ws, "gt.nii.gz")
    return Spec(ev(ws / "pred.nii.gz", gt, ws / "eval"), names="pred.nii.gz", protect=[gt])


for _which in ("pred", "gt"):

    @case(f"evaluate/truncated-{_which}")
    def _(r, ws, which=_which):
        pred, gt = _labels(r, ws, "pred.nii.gz", 1), _labels(r, ws, "gt.nii.gz")
        cut(pred if which == "pred" else gt, 0.5)
        return Spec(ev(pred, gt, ws / "eval"), names=f"{which}.nii.gz", protect=[pred, gt], absent=[ws / "eval"])

    @case(f"evaluate/truncated-uncompressed-{_which}")
    def _(r, ws, which=_which):
        pred = write(read_image(_labels(r, ws, "p.nii.gz", 1)), ws / "pred.nii", compress=False)
        gt = write(read_image(_labels(r, ws, "g.nii.gz")), ws / "gt.nii", compress=False)
        cut(pred if which == "pred" else gt, 0.6)
        return Spec(ev(pred, gt, ws / "eval"), names=f"{which}.nii", protect=[pred, gt], absent=[ws / "eval"])


@case("evaluate/grid-mismatch")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), write(r.ct[:, :, :6] > 0, ws / "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval"), names="pred.nii.gz", protect=[pred, gt])


@case("evaluate/output-dir-is-file")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    (ws / "eval").write_text("a file")
    return Spec(ev(pred, gt, ws / "eval"), names="eval", protect=[pred, gt, ws / "eval"])


@case("evaluate/output-dir-under-file")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    (ws / "afile").write_text("a file")
    return Spec(ev(pred, gt, ws / "afile" / "eval"), names="afile", protect=[pred, gt, ws / "afile"])


@case("evaluate/output-dir-is-input-folder")
def _(r, ws):
    (ws / "preds").mkdir()
    (ws / "refs").mkdir()
    _labels(r, ws / "preds", "c1.nii.gz"), _labels(r, ws / "refs", "c1.nii.gz")
    return Spec(ev(ws / "preds", ws / "refs", ws / "preds"), names="preds", protect=[ws / "preds", ws / "refs"])


@case("evaluate/existing-results-no-overwrite")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    (ws / "eval").mkdir()
    (ws / "eval" / "per_case.csv").write_text("old results")
    return Spec(ev(pred, gt, ws / "eval"), names="per_case.csv", protect=[pred, gt, ws / "eval"])


@case("evaluate/results-csv-is-folder")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    (ws / "eval" / "per_case.csv").mkdir(parents=True)
    return Spec(ev(pred, gt, ws / "eval", "--overwrite"), names="per_case.csv", protect=[pred, gt])


@case("evaluate/4d-label-map")
def _(r, ws):
    array = (sitk.GetArrayFromImage(r.ct) > 0).astype(np.uint8)
    pred = write(sitk.GetImageFromArray(np.stack([array, array])), ws / "pred.nii.gz")
    gt = _labels(r, ws, "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval"), names="pred.nii.gz", protect=[pred, gt])


@case("evaluate/fractional-labels")
def _(r, ws):
    array = (sitk.GetArrayFromImage(r.ct) > 0).astype(np.float32) * 0.5
    pred = write(with_array(r.ct, array), ws / "pred.nii.gz")
    gt = _labels(r, ws, "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval"), names="pred.nii.gz", protect=[pred, gt])


@case("evaluate/negative-tolerance")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval", "--tolerance-mm", "-1"), names="--tolerance-mm", protect=[pred, gt])


@case("evaluate/label-zero")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval", "--labels", "0"), names="--labels", protect=[pred, gt])


@case("evaluate/unknown-label-table")
def _(r, ws):
    pred, gt = _labels(r, ws, "pred.nii.gz"), _labels(r, ws, "gt.nii.gz")
    return Spec(ev(pred, gt, ws / "eval", "--label-table", "nope-table"), names="nope-table", protect=[pred, gt])


@case("evaluate/em-png-ok")
def _(r, ws):
    pred = Path(shutil.copy(r.png, ws / "pred.png"))
    gt = Path(shutil.copy(r.png, ws / "gt.png"))
    return Spec(ev(pred, gt, ws / "eval", "--em"), rc=0, protect=[pred, gt])


@case("evaluate/unicode-paths")
def _(r, ws):
    pred, gt = _labels(r, ws / "prédiction", "foie.nii.gz", 1), _labels(r, ws / "référence", "foie.nii.gz")
    return Spec(ev(pred, gt, ws / "résultats"), rc=0, protect=[pred, gt])


# ------------------------------------------------------------------------------------------------
# train --check and bad configs
# ------------------------------------------------------------------------------------------------


def _dataset(ws: Path, shape=(8, 16, 16)) -> Path:
    return make_msd_dataset(ws / "data", cases=3, shape=shape)


def _config(ws: Path, root: Path, **sections) -> Path:
    path = ws / "config.yaml"
    path.write_text(json.dumps(tiny_config(root, ws / "run", **sections)))
    return path


def check(config: Path, *extra: str) -> list[str]:
    return ["train", str(config), "--check", *extra]


@case("train/check-ok")
def _(r, ws):
    root = _dataset(ws)
    return Spec(check(_config(ws, root)), rc=0, protect=[root])


@case("train/check-truncated-image")
def _(r, ws):
    root = _dataset(ws)
    cut(root / "imagesTr" / "case1.nii.gz", 0.5)
    return Spec(check(_config(ws, root)), names="case1.nii.gz", protect=[root])


@case("train/check-truncated-label")
def _(r, ws):
    root = _dataset(ws)
    cut(root / "labelsTr" / "case2.nii.gz", 0.5)
    return Spec(check(_config(ws, root)), names="case2.nii.gz", protect=[root])


@case("train/check-truncated-uncompressed")
def _(r, ws):
    root = _dataset(ws)
    meta = json.loads((root / "dataset.json").read_text())
    image = read_image(root / "imagesTr" / "case0.nii.gz")
    write(image, root / "imagesTr" / "case0.nii", compress=False)
    cut(root / "imagesTr" / "case0.nii", 0.5)
    meta["training"][0]["image"] = "./imagesTr/case0.nii"
    (root / "dataset.json").write_text(json.dumps(meta))
    return Spec(check(_config(ws, root)), names="case0.nii", protect=[root])


@case("train/check-label-off-grid")
def _(r, ws):
    root = _dataset(ws)
    label = read_image(root / "labelsTr" / "case0.nii.gz")
    write(label[:, :, :4], root / "labelsTr" / "case0.nii.gz")
    return Spec(check(_config(ws, root)), names="case0.nii.gz", protect=[root])


@case("train/check-2d-image")
def _(r, ws):
    root = _dataset(ws)
    image = read_image(root / "imagesTr" / "case1.nii.gz")
    write(image[:, :, 0], root / "imagesTr" / "case1.nii.gz")
    return Spec(check(_config(ws, root)), names="case1.nii.gz", protect=[root])


@case("train/check-memory-guard")
def _(r, ws):
    root = _dataset(ws)
    image = read_image(root / "imagesTr" / "case1.nii.gz")
    image.SetSpacing((100.0, 100.0, 100.0))
    write(image, root / "imagesTr" / "case1.nii.gz")
    label = read_image(root / "labelsTr" / "case1.nii.gz")
    label.SetSpacing((100.0, 100.0, 100.0))
    write(label, root / "labelsTr" / "case1.nii.gz")
    pre = {"spacing": [1.0, 1.0, 1.0], "intensity": {"kind": "window", "window": [-200, 300]}}
    config = _config(ws, root, data={"preprocessing": pre})
    return Spec(check(config, "--memory-limit", "1"), names="case1.nii.gz", protect=[root])


@case("train/check-missing-image")
def _(r, ws):
    root = _dataset(ws)
    (root / "imagesTr" / "case2.nii.gz").unlink()
    return Spec(check(_config(ws, root)), names="case2", protect=[root])


@case("train/missing-dataset")
def _(r, ws):
    return Spec(check(_config(ws, ws / "no-data")), names="no-data")


@case("train/missing-config")
def _(r, ws):
    return Spec(check(ws / "missing.yaml"), names="missing.yaml")


@case("train/malformed-yaml")
def _(r, ws):
    (ws / "bad.yaml").write_text("data: [unclosed\n  root: x\n")
    return Spec(check(ws / "bad.yaml"), names="bad.yaml", protect=[ws / "bad.yaml"])


@case("train/unknown-key")
def _(r, ws):
    root = _dataset(ws)
    return Spec(check(_config(ws, root), "training.epochz=3"), names="epochz")


@case("train/wrong-type")
def _(r, ws):
    root = _dataset(ws)
    return Spec(check(_config(ws, root), "training.epochs=many"), names="epochs")


@case("train/unknown-label")
def _(r, ws):
    root = _dataset(ws)
    return Spec(check(_config(ws, root, data={"labels": ["liver", "heart"]})), names="heart")


@case("train/config-is-folder")
def _(r, ws):
    (ws / "cfg.yaml").mkdir()
    return Spec(check(ws / "cfg.yaml"), names="cfg.yaml")


# ------------------------------------------------------------------------------------------------
# crf
# ------------------------------------------------------------------------------------------------


def _crf_inputs(r: Resources, ws: Path) -> tuple[Path, Path]:
    image = r.ct[:8, :8, :4]
    path = ct_file(r, ws, "img.nii.gz", image)
    probs = np.random.default_rng(0).dirichlet([1, 1], size=(4, 8, 8)).transpose(3, 0, 1, 2).astype(np.float32)
    np.save(ws / "probs.npy", probs)
    return ws / "probs.npy", path


def crf(probs: Path, image: Path, out: Path | str, *extra: str) -> list[str]:
    return ["crf", str(probs), str(image), "-o", str(out), "--backend", "exact", "--iterations", "1", *extra]


@case("crf/ok")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    out = ws / "refined.nii.gz"
    return Spec(crf(probs, image, out), rc=0, protect=[probs, image], check=on_grid(out, image))


NPY_FAULTS: dict[str, Callable[[Path], None]] = {
    "text": lambda p: p.write_text("0.1 0.9\n"),
    "truncated": lambda p: cut(p, 0.5),
    "pickled-object": lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    "wrong-shape": lambda p: np.save(p, np.ones((2, 3, 3, 3), np.float32) / 2),
    "nan": lambda p: np.save(p, np.full((2, 4, 8, 8), np.nan, np.float32)),
    "negative": lambda p: np.save(p, -np.ones((2, 4, 8, 8), np.float32)),
    "one-class": lambda p: np.save(p, np.ones((1, 4, 8, 8), np.float32)),
    "empty": lambda p: p.write_bytes(b""),
}


for _name, _damage in NPY_FAULTS.items():

    @case(f"crf/npy-{_name}")
    def _(r, ws, damage=_damage):
        probs, image = _crf_inputs(r, ws)
        damage(probs)
        return Spec(crf(probs, image, ws / "o.nii.gz"), names="probs.npy", protect=[probs, image],
                    absent=[ws / "o.nii.gz"])


@case("crf/output-is-image")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    return Spec(crf(probs, image, image, "--overwrite"), names="img.nii.gz", protect=[probs, image])


@case("crf/output-is-probabilities")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    return Spec(crf(probs, image, probs, "--overwrite"), names="probs.npy", protect=[probs, image])


@case("crf/output-missing-folder")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    return Spec(crf(probs, image, ws / "no" / "o.nii.gz"), names="no", protect=[probs, image])


@case("crf/output-is-folder")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    (ws / "out.nii.gz").mkdir()
    return Spec(crf(probs, image, ws / "out.nii.gz", "--overwrite"), names="out.nii.gz", protect=[probs, image])


@case("crf/output-exists")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    (ws / "o.nii.gz").write_bytes(b"old")
    return Spec(crf(probs, image, ws / "o.nii.gz"), names="o.nii.gz", protect=[probs, image, ws / "o.nii.gz"])


@case("crf/probabilities-out-missing-folder")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    return Spec(crf(probs, image, ws / "o.nii.gz", "--probabilities-out", str(ws / "no" / "p.npy")), names="no",
                protect=[probs, image], absent=[ws / "o.nii.gz"])


@case("crf/unsupported-output")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    return Spec(crf(probs, image, ws / "o.png"), names="o.png", protect=[probs, image])


@case("crf/truncated-image")
def _(r, ws):
    probs, image = _crf_inputs(r, ws)
    cut(image, 0.5)
    return Spec(crf(probs, image, ws / "o.nii.gz"), names="img.nii.gz", protect=[probs, image])


@case("crf/missing-arguments")
def _(r, ws):
    return Spec(["crf"], names="PROBS")


@case("crf/missing-probabilities")
def _(r, ws):
    _, image = _crf_inputs(r, ws)
    return Spec(crf(ws / "none.npy", image, ws / "o.nii.gz"), names="none.npy", protect=[image])


# ------------------------------------------------------------------------------------------------
# export and import (hostile model zips)
# ------------------------------------------------------------------------------------------------


@case("export/ok-follows-umask")
def _(r, ws):
    folder = Path(shutil.copytree(r.model, ws / "m"))
    out = ws / "m.zip"
    return Spec(["export", str(folder), "-o", str(out)], rc=0, protect=[folder], check=_mode_is_umask(out))


@case("export/missing-folder")
def _(r, ws):
    return Spec(["export", str(ws / "nomodel"), "-o", str(ws / "m.zip")], names="nomodel")


@case("export/not-a-model-folder")
def _(r, ws):
    (ws / "plain").mkdir()
    return Spec(["export", str(ws / "plain"), "-o", str(ws / "m.zip")], names="plain", absent=[ws / "m.zip"])


@case("export/output-is-folder-overwrite")
def _(r, ws):
    folder = Path(shutil.copytree(r.model, ws / "m"))
    (ws / "out.zip").mkdir()
    (ws / "out.zip" / "keep").write_text("mine")
    return Spec(["export", str(folder), "-o", str(ws / "out.zip"), "--overwrite"], names="out.zip",
                protect=[folder, ws / "out.zip"])


@case("export/output-exists")
def _(r, ws):
    folder = Path(shutil.copytree(r.model, ws / "m"))
    (ws / "m.zip").write_bytes(b"old zip")
    return Spec(["export", str(folder), "-o", str(ws / "m.zip")], names="m.zip", protect=[folder, ws / "m.zip"])


@case("export/output-missing-folder")
def _(r, ws):
    folder = Path(shutil.copytree(r.model, ws / "m"))
    return Spec(["export", str(folder), "-o", str(ws / "no" / "m.zip")], names="no", protect=[folder])


@case("export/output-not-zip")
def _(r, ws):
    folder = Path(shutil.copytree(r.model, ws / "m"))
    return Spec(["export", str(folder), "-o", str(ws / "m.tar")], names="m.tar", protect=[folder])


@case("export/corrupt-weights")
def _(r, ws):
    folder = Path(shutil.copytree(r.model, ws / "m"))
    cut(folder / "weights.pt", 0.5)
    return Spec(["export", str(folder), "-o", str(ws / "m.zip")], names="weights.pt", protect=[folder],
                absent=[ws / "m.zip"])


def _zip(ws: Path, r: Resources, spec_edit: Callable[[dict], None] | None = None,
         extra: dict[str, bytes] | None = None, name: str = "model.zip", weights: bytes | None = None) -> Path:
    spec = json.loads((r.model / "model.json").read_text())
    data = weights if weights is not None else (r.model / "weights.pt").read_bytes()
    if weights is not None:
        import hashlib

        spec["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    if spec_edit:
        spec_edit(spec)
    path = ws / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", json.dumps(spec))
        archive.writestr("weights.pt", data)
        for member, content in (extra or {}).items():
            archive.writestr(member, content)
    return path


def imp(zip_path: Path | str, *extra: str) -> list[str]:
    return ["import", str(zip_path), *extra]


@case("import/ok-follows-umask")
def _(r, ws):
    path, out = _zip(ws, r), ws / "imported"
    return Spec(imp(path, "-o", str(out)), rc=0, protect=[path],
                check=_mode_is_umask(out, out / "model.json", out / "weights.pt", folder=True))


@case("import/default-folder-is-user-models")
def _(r, ws):
    path, models = _zip(ws, r), ws / "user-models"
    target = models / json.loads((r.model / "model.json").read_text())["id"]

    def check() -> None:
        assert (target / "model.json").exists() and (target / "weights.pt").exists()

    return Spec(imp(path), rc=0, protect=[path], env={"SEGDEEP_MODELS_DIR": str(models)}, check=check)


@case("import/missing-zip")
def _(r, ws):
    return Spec(imp(ws / "gone.zip", "-o", str(ws / "m")), names="gone.zip", absent=[ws / "m"])


@case("import/not-a-zip")
def _(r, ws):
    (ws / "m.zip").write_text("hello")
    return Spec(imp(ws / "m.zip", "-o", str(ws / "m")), names="m.zip", protect=[ws / "m.zip"], absent=[ws / "m"])


@case("import/truncated-zip")
def _(r, ws):
    path = cut(_zip(ws, r), 0.5)
    return Spec(imp(path, "-o", str(ws / "m")), names="model.zip", protect=[path], absent=[ws / "m"])


HOSTILE: dict[str, dict] = {
    "zip-slip": {"extra": {"../evil.txt": b"x"}},
    "zip-slip-deep": {"extra": {"a/../../evil.txt": b"x"}},
    "absolute-member": {"extra": {"/tmp/segdeep-evil.txt": b"x"}},
    "windows-drive-member": {"extra": {"C:/evil.txt": b"x"}},
    "weights-parent-path": {"edit": lambda s: s["weights"].update(file="../../x.pt")},
    "weights-absolute-path": {"edit": lambda s: s["weights"].update(file="/tmp/x.pt")},
    "weights-backslash-path": {"edit": lambda s: s["weights"].update(file="..\\..\\x.pt")},
    "weights-not-a-string": {"edit": lambda s: s["weights"].update(file=7)},
    "sha-mismatch": {"edit": lambda s: s["weights"].update(sha256="1" * 64)},
    "missing-id": {"edit": lambda s: s.pop("id")},
    "pickled-weights": {"weights": "pickle"},
    "weights-not-torch": {"weights": b"not a torch file at all"},
}


for _name, _hostile in HOSTILE.items():

    @case(f"import/{_name}")
    def _(r, ws, hostile=_hostile):
        weights = hostile.get("weights")
        if weights == "pickle":
            buffer = ws / "pickled.pt"
            torch.save({"main": {"centres": torch.zeros(3)}, "evil": Path("/")}, buffer)
            weights = buffer.read_bytes()
        path = _zip(ws, r, hostile.get("edit"), hostile.get("extra"), weights=weights)
        return Spec(imp(path, "-o", str(ws / "m")), names="model.zip", protect=[path],
                    absent=[ws / "m", ws / "x.pt", ws.parent / "evil.txt", Path("/tmp/segdeep-evil.txt")])


@case("import/symlink-member")
def _(r, ws):
    path = _zip(ws, r)
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo("link.pt")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/passwd")
    return Spec(imp(path, "-o", str(ws / "m")), names="model.zip", protect=[path], absent=[ws / "m"])


@case("import/no-model-json")
def _(r, ws):
    path = ws / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.pt", (r.model / "weights.pt").read_bytes())
    return Spec(imp(path, "-o", str(ws / "m")), names="model.zip", protect=[path], absent=[ws / "m"])


@case("import/model-json-not-json")
def _(r, ws):
    path = ws / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", "{not json")
        archive.writestr("weights.pt", (r.model / "weights.pt").read_bytes())
    return Spec(imp(path, "-o", str(ws / "m")), names="model.zip", protect=[path], absent=[ws / "m"])


@case("import/corrupt-member")
def _(r, ws):
    path = ws / "model.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        spec = json.loads((r.model / "model.json").read_text())
        archive.writestr("model.json", json.dumps(spec))
        archive.writestr("weights.pt", (r.model / "weights.pt").read_bytes() * 4)
    data = bytearray(path.read_bytes())
    start = data.find(b"weights.pt") + 40
    data[start : start + 32] = b"\xff" * 32
    path.write_bytes(bytes(data))
    return Spec(imp(path, "-o", str(ws / "m")), names="model.zip", protect=[path], absent=[ws / "m"])


@case("import/output-is-file-overwrite")
def _(r, ws):
    path = _zip(ws, r)
    (ws / "m").write_text("my notes")
    return Spec(imp(path, "-o", str(ws / "m"), "--overwrite"), names="m", protect=[path, ws / "m"])


@case("import/output-exists-no-overwrite")
def _(r, ws):
    path = _zip(ws, r)
    (ws / "m").mkdir()
    (ws / "m" / "keep.txt").write_text("mine")
    return Spec(imp(path, "-o", str(ws / "m")), names="m", protect=[path, ws / "m"])


@case("import/output-is-the-zip")
def _(r, ws):
    path = _zip(ws, r)
    return Spec(imp(path, "-o", str(path), "--overwrite"), names="model.zip", protect=[path])


@case("import/output-missing-parent")
def _(r, ws):
    path = _zip(ws, r)
    return Spec(imp(path, "-o", str(ws / "no" / "m")), names="no", protect=[path], absent=[ws / "no"])


@case("import/id-escapes-models-dir")
def _(r, ws):
    path = _zip(ws, r, lambda s: s.update(id="../escape"))
    return Spec(imp(path), names="model.zip", protect=[path], env={"SEGDEEP_MODELS_DIR": str(ws / "models")},
                absent=[ws / "escape"])


# ------------------------------------------------------------------------------------------------
# the test
# ------------------------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code or 0)


def _hidden_files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob(".*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name: str, res: Resources, tmp_path: Path, capfd, monkeypatch) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    spec = CASES[name](res, ws)
    for key, value in spec.env.items():
        monkeypatch.setenv(key, value)
    if "SEGDEEP_MEMORY_LIMIT_GB" not in spec.env:
        monkeypatch.delenv("SEGDEEP_MEMORY_LIMIT_GB", raising=False)
    if "SEGDEEP_MODELS_DIR" not in spec.env:
        monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(tmp_path / "no-user-models"))
    before, hidden = snapshot(spec.protect), _hidden_files(ws)
    old_umask = os.umask(0o022)
    start = time.perf_counter()
    try:
        rc = _run(spec.argv)
    finally:
        os.umask(old_umask)
    seconds = time.perf_counter() - start
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, err
    assert rc == spec.rc, f"exit {rc}, expected {spec.rc}\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("segdeep: error: ")]
    others = [line for line in lines if not line.startswith(("segdeep: error: ", "segdeep: warning: "))]
    if spec.rc:
        assert len(errors) == 1 and not others, f"want one error line, got:\n{err}"
        if spec.names:
            assert spec.names in errors[0], f"{spec.names!r} not named in: {errors[0]}"
        assert seconds < 5, f"refusal took {seconds:.1f} s"
    else:
        assert not errors, err
    if spec.warn:  # once: a stderr line, or with --progress json one log event (Slicer shows both)
        warnings = [line for line in err.splitlines() if line.startswith("segdeep: warning: ")]
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        logged = [e["message"] for e in events if e.get("event") == "log" and e.get("level") == "warning"]
        assert len(warnings + logged) == 1 and spec.warn in (warnings + logged)[0], err + out
    assert snapshot(spec.protect) == before, "an input or an existing output changed"
    for path in spec.absent:
        assert not path.exists(), f"{path} was created"
    assert _hidden_files(ws) - hidden == set(), "temporary files left behind"
    if spec.rc == 0 and spec.check is not None:
        spec.check()


def test_corpus_size() -> None:
    """The issue's corpus: at least 132 cases over segment/evaluate/train/crf/export/import."""
    assert len(CASES) >= 132, len(CASES)
    commands = {name.split("/")[0] for name in CASES}
    assert {"segment", "evaluate", "train", "crf", "export", "import", "dicom", "geometry", "output",
            "memory"} <= commands

"""Sliding-window tiling against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.sliding_window import (
    TileSettings,
    gaussian_weight,
    sliding_window,
    tile_grid,
    tile_starts,
)
from Testing.SegDeepLib.inference.tiny_nets import CentreNet


@pytest.mark.parametrize(
    "size,tile,overlap",
    [
        (10, 4, 0.0),
        (10, 4, 0.5),
        (17, 5, 0.25),
        (4, 4, 0.5),
        (3, 8, 0.5),
        (100, 32, 0.75),
        (9, 1, 0.0),
    ],
)
def test_tile_starts_cover_without_sticking_out(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(max(size, tile), dtype=int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered[:size].min() >= 1
    assert starts[0] == 0 and starts == sorted(set(starts))
    if size >= tile:
        assert max(starts) == size - tile  # the last tile ends at the volume's end
    step = max(1, round(tile * (1 - overlap)))
    assert all(b - a <= step for a, b in zip(starts, starts[1:]))


def test_overlap_zero_gives_disjoint_tiles_when_the_size_divides():
    assert tile_starts(12, 4, 0.0) == [0, 4, 8]
    assert tile_starts(12, 4, 0.5) == [0, 2, 4, 6, 8]
    assert len(tile_grid((12, 8, 4), (4, 4, 4), 0.0)) == 3 * 2 * 1


def test_gaussian_weight_matches_formula():
    w = gaussian_weight((5, 6, 7), 0.25).numpy()
    coords = [np.arange(n) - (n - 1) / 2 for n in (5, 6, 7)]
    ref = np.ones((5, 6, 7))
    for axis, (c, n) in enumerate(zip(coords, (5, 6, 7))):
        shape = [1, 1, 1]
        shape[axis] = n
        ref = ref * np.exp(-0.5 * (c / (0.25 * n)) ** 2).reshape(shape)
    ref = np.maximum(ref / ref.max(), 1e-3)
    np.testing.assert_allclose(w, ref, rtol=1e-5)


def _pointwise_reference(volume: torch.Tensor, centres) -> torch.Tensor:
    net = CentreNet(centres)
    with torch.no_grad():
        return torch.softmax(net(volume[None]), 1)[0]


@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap,batch", [(0.0, 1), (0.5, 3), (0.6, 8)])
def test_pointwise_network_tiles_reproduce_the_whole_volume(weighting, overlap, batch):
    torch.manual_seed(1)
    volume = torch.rand(1, 13, 10, 7) * 3
    net = CentreNet((0.0, 1.0, 2.5))
    probs = sliding_window(volume, net, TileSettings((6, 4, 5), overlap, weighting, batch))
    assert probs.shape == (3, 13, 10, 7)
    torch.testing.assert_close(
        probs, _pointwise_reference(volume, (0.0, 1.0, 2.5)), atol=1e-5, rtol=1e-5
    )
    assert max(c[0] for c in net.calls) <= batch


def test_volume_smaller_than_tile_is_padded_and_cropped_back():
    volume = torch.rand(1, 3, 5, 2)
    probs = sliding_window(volume, CentreNet(), TileSettings((8, 8, 8), 0.5))
    torch.testing.assert_close(
        probs, _pointwise_reference(volume, (0.0, 1.0)), atol=1e-6, rtol=1e-6
    )


class PositionNet(torch.nn.Module):
    """Outputs a different constant distribution for every call: checks the weighted average."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def forward(self, x):
        out = []
        for _ in range(x.shape[0]):
            self.count += 1
            logit = torch.tensor([0.0, np.log(self.count)])
            out.append(logit.view(2, 1, 1, 1).expand(2, *x.shape[2:]))
        return torch.stack(out)


@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
def test_weighted_average_matches_brute_force(weighting):
    shape, tile, overlap = (9, 7, 6), (4, 4, 4), 0.5
    probs = sliding_window(
        torch.zeros(1, *shape), PositionNet(), TileSettings(tile, overlap, weighting, 2)
    )
    w = gaussian_weight(tile).numpy() if weighting == "gaussian" else np.ones(tile)
    num, den = np.zeros(shape), np.zeros(shape)
    for index, corner in enumerate(
        itertools.product(*[tile_starts(s, t, overlap) for s, t in zip(shape, tile)])
    ):
        p1 = (index + 1) / (1 + index + 1)  # softmax([0, log n]) = n / (1 + n)
        where = tuple(slice(c, c + t) for c, t in zip(corner, tile))
        num[where] += w * p1
        den[where] += w
    np.testing.assert_allclose(probs[1].numpy(), num / den, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(0).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_valid_convolution_network_tiled_by_its_output_size(pad_mode):
    class Valid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv3d(1, 3, 5)  # valid: loses 2 voxels per side

        def forward(self, x):
            return self.conv(x)

        def output_size(self, size):
            return tuple(s - 4 for s in size)

    torch.manual_seed(2)
    volume = torch.randn(1, 11, 9, 14)
    net = Valid().eval()
    probs = sliding_window(
        volume, net, TileSettings((8, 8, 8), 0.5, "gaussian", 2, pad_mode=pad_mode)
    )
    padded = F.pad(
        volume[None], [2] * 6, mode="replicate" if pad_mode == "replicate" else "constant"
    )
    with torch.no_grad():
        ref = torch.softmax(net(padded), 1)[0]
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=1e-5)


def test_valid_margin_network_places_outputs_correctly():
    volume = torch.rand(1, 12, 11, 10) * 2
    net = CentreNet((0.0, 1.0, 2.0), margin=3)
    probs = sliding_window(volume, net, TileSettings((10, 10, 10), 0.0, "constant", 4))
    torch.testing.assert_close(
        probs, _pointwise_reference(volume, (0.0, 1.0, 2.0)), atol=1e-6, rtol=1e-6
    )
    assert all(c[2:] == (10, 10, 10) for c in net.calls)


def test_region_skips_tiles_and_leaves_background_outside():
    volume = torch.rand(1, 16, 16, 16) + 5  # every voxel nearer class 1
    region = np.zeros((16, 16, 16), bool)
    region[1:3, 1:3, 1:3] = True
    net = CentreNet((0.0, 5.5))
    probs = sliding_window(volume, net, TileSettings((4, 4, 4), 0.0, "constant", 1), region=region)
    assert len(net.calls) == 1  # only the tile holding the region ran
    assert (probs[1, :4, :4, :4] > 0.5).all()
    assert (probs[0, 4:] == 1).all() and (probs[1, :, 4:] == 0).all()


def test_bad_settings_and_bad_networks_raise_clear_errors():
    with pytest.raises(SegDeepError, match="overlap"):
        TileSettings((4, 4, 4), overlap=1.0)
    with pytest.raises(SegDeepError, match="weighting"):
        TileSettings((4, 4, 4), weighting="cosine")
    with pytest.raises(SegDeepError, match="does not match"):
        sliding_window(torch.zeros(1, 4, 4), CentreNet(), TileSettings((4, 4, 4)))

    class OneClass(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(SegDeepError, match="K >= 2"):
        sliding_window(torch.zeros(1, 4, 4, 4), OneClass(), TileSettings((4, 4, 4)))


def test_channels_last_gives_the_same_probabilities():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1))
    volume = torch.randn(2, 10, 12, 9)
    plain = sliding_window(volume, net, TileSettings((8, 8, 8), 0.5, channels_last=False))
    assert net[0].weight.is_contiguous()
    fast = sliding_window(volume, net, TileSettings((8, 8, 8), 0.5, channels_last=True))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


# ----- every TileSettings field against a reference that shares no code with the library -----
class TilePositionNet(torch.nn.Module):
    """Valid convolution (margin 1) plus a fixed bias per output-tile position: overlapping tiles
    disagree at a voxel, so the weighting (and its sigma) decides the average; the border padding
    reaches the output through the margin."""

    def __init__(self, channels: int, out_tile: tuple[int, ...], classes: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(len(out_tile) + channels)
        conv = torch.nn.Conv3d if len(out_tile) == 3 else torch.nn.Conv2d
        self.conv = conv(channels, classes, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.3)
            self.conv.bias.zero_()
        self.register_buffer("position_bias", torch.randn(1, classes, *out_tile, generator=gen) * 2)
        self.batches: list[int] = []

    def output_size(self, size):
        return tuple(int(s) - 2 for s in size)

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.conv(x) + self.position_bias


def _reference_starts(size: int, tile: int, overlap: float) -> list[int]:
    """The documented rule: steps of round(tile * (1 - overlap)); the last tile ends at the end."""
    if size <= tile:
        return [0]
    step = max(1, round(tile * (1.0 - overlap)))
    return sorted(set(list(range(0, size - tile, step)) + [size - tile]))


def _reference_weight(out_tile, weighting: str, sigma_scale: float) -> np.ndarray:
    """exp(-x^2 / (2 (sigma_scale n)^2)) per axis about the tile centre, peak 1, floor 1e-3."""
    w = np.ones(out_tile)
    if weighting == "constant":
        return w
    for axis, n in enumerate(out_tile):
        x = np.arange(n) - (n - 1) / 2.0
        shape = [1] * len(out_tile)
        shape[axis] = n
        w = w * np.exp(-(x**2) / (2.0 * (sigma_scale * n) ** 2)).reshape(shape)
    return np.maximum(w / w.max(), 1e-3)


def _reference_sliding_window(volume: np.ndarray, net, s: TileSettings) -> np.ndarray:
    """Tile by tile in float64 numpy: pad the whole volume, cut input tiles, average softmaxes."""
    in_tile = tuple(s.tile_size)
    out_tile = tuple(t - 2 for t in in_tile)
    spatial = volume.shape[1:]
    covered = [max(n, t) for n, t in zip(spatial, out_tile)]
    pads = [(0, 0)] + [(1, 1 + c - n) for n, c in zip(spatial, covered)]
    if s.pad_mode == "replicate":
        padded = np.pad(volume, pads, mode="edge")
    else:
        padded = np.pad(volume, pads, mode="constant", constant_values=s.pad_value)
    weight = _reference_weight(out_tile, s.weighting, s.sigma_scale)
    num = np.zeros((3, *covered))
    den = np.zeros(covered)
    starts = [_reference_starts(n, t, s.overlap) for n, t in zip(covered, out_tile)]
    for corner in itertools.product(*starts):
        tile = padded[(slice(None), *[slice(c, c + t) for c, t in zip(corner, in_tile)])]
        with torch.no_grad():
            logits = (net.conv(torch.from_numpy(tile[None]).float()) + net.position_bias)[0]
        e = np.exp(logits.double().numpy() - logits.double().numpy().max(0))
        probs = e / e.sum(0)
        where = tuple(slice(c, c + t) for c, t in zip(corner, out_tile))
        num[(slice(None), *where)] += weight * probs
        den[where] += weight
    crop = tuple(slice(0, n) for n in spatial)
    return (num[(slice(None), *crop)] / den[crop]).astype(np.float32)


SETTINGS_CASES = {
    "defaults": dict(tile_size=(7, 8, 6)),
    "overlap0-constant": dict(tile_size=(7, 8, 6), overlap=0.0, weighting="constant"),
    "overlap-0.7-batch5": dict(tile_size=(6, 6, 7), overlap=0.7, batch_size=5),
    "sigma-0.4": dict(tile_size=(7, 8, 6), sigma_scale=0.4),
    "sigma-0.05-overlap-0.25": dict(tile_size=(8, 7, 9), overlap=0.25, sigma_scale=0.05),
    "replicate": dict(tile_size=(7, 8, 6), pad_mode="replicate", batch_size=3),
    "pad-value": dict(tile_size=(7, 8, 6), pad_value=-2.5, sigma_scale=0.2),
    "no-channels-last": dict(tile_size=(7, 8, 6), channels_last=False, sigma_scale=0.3),
    "tile-beyond-volume": dict(tile_size=(14, 6, 16), pad_value=1.5, overlap=0.4),
    "2d": dict(tile_size=(6, 9), sigma_scale=0.3, batch_size=2, pad_mode="replicate"),
}


@pytest.mark.parametrize("case", sorted(SETTINGS_CASES))
def test_every_tile_setting_against_independent_reference(case):
    settings = TileSettings(**SETTINGS_CASES[case])
    dims = len(settings.tile_size)
    rng = np.random.default_rng(len(case))
    volume = rng.normal(size=(2, 11, 13, 9)[: dims + 1]).astype(np.float32)
    out_tile = tuple(t - 2 for t in settings.tile_size)
    net = TilePositionNet(2, out_tile)
    probs = sliding_window(torch.from_numpy(volume), net, settings)
    expected = _reference_sliding_window(volume.astype(np.float64), net, settings)
    np.testing.assert_allclose(probs.numpy(), expected, atol=2e-6, rtol=1e-5)
    assert max(net.batches) <= settings.batch_size
    assert len(net.batches) == -(-sum(net.batches) // settings.batch_size)


@pytest.mark.parametrize(
    "field,other",
    [
        ("sigma_scale", 0.4),
        ("weighting", "constant"),
        ("overlap", 0.0),
        ("pad_mode", "replicate"),
        ("pad_value", 3.0),
        ("tile_size", (6, 8, 6)),
    ],
)
def test_reference_changes_with_each_field(field, other):
    """Each field changes the expected probabilities here, so passing it on wrongly is caught."""
    base = dict(tile_size=(7, 8, 6))
    volume = np.random.default_rng(0).normal(size=(2, 11, 13, 9))
    a = TileSettings(**base)
    b = TileSettings(**{**base, field: other})
    net_a = TilePositionNet(2, tuple(t - 2 for t in a.tile_size))
    net_b = TilePositionNet(2, tuple(t - 2 for t in b.tile_size))
    ref_a = _reference_sliding_window(volume, net_a, a)
    ref_b = _reference_sliding_window(volume, net_b, b)
    assert np.abs(ref_a - ref_b).max() > 1e-2

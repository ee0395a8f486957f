"""``exact``: brute-force O(N^2) Gaussians (tiny volumes; the reference of the tests)."""

from __future__ import annotations

import torch

from SegDeepLib.crf import filters
from SegDeepLib.crf.backends.base import Backend
from SegDeepLib.crf.backends.features import bilateral_features, grid_positions


class ExactBackend(Backend):
    name = "exact"

    def appearance_filter(self, features, dtype: torch.dtype) -> filters.MessageFilter:
        return filters.ExactFilter(features, dtype)

    def image_appearance_filter(self, image, spacing, theta_alpha, theta_beta, dtype):
        feats = bilateral_features(image, spacing, theta_alpha, theta_beta)
        return self.appearance_filter(feats, dtype)

    def smoothness_filter(self, shape, spacing, theta_gamma, device, dtype):
        return filters.ExactFilter(grid_positions(shape, spacing, device) / theta_gamma, dtype)


BACKEND = ExactBackend()

"""Headless training: typed YAML config, runner with callbacks, atomic checkpoints, DDP, export.

    from SegDeepLib.training import train, load_config
    folder = train("configs/unet3d_dice.yaml", ["optimizer.lr=1e-3"])
"""

from SegDeepLib.training.config import TrainConfig, load_config


def train(config, overrides=None, resume=False, progress=None, cancel=None, **kwargs):
    """Train from a config (path, dict or TrainConfig); returns the model folder. See :mod:`.runner`."""
    from SegDeepLib.training.runner import train as _train

    return _train(config, overrides, resume=resume, progress=progress, cancel=cancel, **kwargs)


__all__ = ["TrainConfig", "load_config", "train"]

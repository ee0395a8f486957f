"""Schedules, optimizers, precision contexts, early stopping and layer-wise growth."""

from __future__ import annotations

import math

import pytest
import torch

from SegDeepLib.training.callbacks import EarlyStopping, Growth
from SegDeepLib.training.config import OptimizerConfig, ScheduleConfig
from SegDeepLib.training.steps import autocast_context, build_optimizer, lr_factor


@pytest.mark.parametrize("name, step, expected", [
    ("fixed", 50, 1.0),
    ("poly", 50, (1 - 50 / 100) ** 0.9),
    ("poly", 100, 0.0),
    ("cosine", 0, 1.0),
    ("cosine", 50, 0.5 * (1 + math.cos(math.pi / 2))),
    ("cosine", 100, 0.0),
])
def test_lr_schedules(name, step, expected):
    assert lr_factor(ScheduleConfig(name=name), 1e-2, 100)(step) == pytest.approx(expected)


def test_cosine_floor():
    f = lr_factor(ScheduleConfig(name="cosine", min_lr=1e-3), 1e-2, 10)
    assert f(10) == pytest.approx(0.1)


def test_optimizers_follow_the_config():
    p = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(p, OptimizerConfig(name="sgd", lr=1e-4, momentum=0.99, weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.99 and sgd.param_groups[0]["weight_decay"] == 5e-4
    assert isinstance(build_optimizer(p, OptimizerConfig(name="rmsprop", lr=1e-3)), torch.optim.RMSprop)


def test_bf16_autocast_on_cpu():
    with autocast_context("bf16", torch.device("cpu")):
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == torch.bfloat16
    with autocast_context("amp", torch.device("cpu")):  # fp16 autocast is CUDA-only: no-op on CPU
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32


def test_early_stopping():
    stop = EarlyStopping(2)
    assert stop.update(0.5) and not stop.update(0.4) and not stop.should_stop
    assert not stop.update(0.5) and stop.should_stop
    again = EarlyStopping(2)
    again.load_state_dict(stop.state_dict())
    assert again.should_stop


def test_growth_adds_a_module_when_the_loss_plateaus():
    class Model:
        active_modules = 1

    model, growth = Model(), Growth("active_modules", maximum=3, patience=2, min_delta=0.01)
    history = [1.0, 0.8, 0.799, 0.798, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    grown = [growth.update(model, loss) for loss in history]
    assert grown[3] == 2  # two epochs without an improvement of 0.01
    assert 3 in grown and model.active_modules == 3

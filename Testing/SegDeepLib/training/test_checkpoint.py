"""Checkpoints: atomic writes, safe loads, every RNG state restored, stale temporaries removed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.training.checkpoint import (
    clean_stale_temporaries,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _draws() -> tuple:
    return (random.random(), random.gauss(0, 1), float(np.random.random()),
            float(np.random.standard_normal()), float(torch.rand(1)))


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached second Gaussian in Python's state
    np.random.standard_normal()  # and in NumPy's
    path = save_checkpoint(tmp_path / "sub" / "last.pt", {"rng": rng_state(), "step": 7})
    assert path == tmp_path / "sub" / "last.pt"
    expected = _draws()
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    assert _draws() != expected
    state = load_checkpoint(path)
    assert state["step"] == 7
    set_rng_state(state["rng"])
    assert _draws() == expected


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"a": torch.arange(3)})
    save_checkpoint(target, {"a": torch.arange(5)})
    assert torch.equal(load_checkpoint(target)["a"], torch.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_save_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"a": torch.ones(2)})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(target, {"a": Unpicklable()})
    assert torch.equal(load_checkpoint(target)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_missing_and_unreadable_checkpoints_raise_one_clear_error(tmp_path):
    with pytest.raises(SegDeepError, match="no checkpoint to resume from"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SegDeepError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_clean_stale_temporaries_removes_only_hidden_temporaries(tmp_path):
    keep = ["last.pt", "best.pt", "notes.tmp", ".hidden"]
    for name in keep + [".last.pt.abc.tmp", ".best.pt.x.tmp"]:
        (tmp_path / name).write_bytes(b"x")
    clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_numpy_rng_keys_are_stored_as_exact_integers(tmp_path):
    np.random.seed(5)
    state = load_checkpoint(save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()}))["rng"]
    keys = state["numpy"]["keys"]
    assert keys.dtype == torch.int64
    np.testing.assert_array_equal(keys.numpy(), np.random.get_state()[1])


def test_temporary_is_hidden_beside_the_target(tmp_path, monkeypatch):
    """Written in the target's folder (an atomic rename), hidden and named so that
    clean_stale_temporaries finds it after a kill."""
    seen = []
    real_save = torch.save

    def spy(obj, handle):
        seen.extend(p.name for p in (tmp_path / "a" / "b").iterdir())
        real_save(obj, handle)

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint(tmp_path / "a" / "b" / "last.pt", {"x": 1})  # creates missing parents
    assert len(seen) == 1 and seen[0].startswith(".last.pt.") and seen[0].endswith(".tmp")
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["last.pt"]


class Arbitrary:
    """A class a pickle may name: loading it would run arbitrary code paths."""


def test_checkpoints_load_tensors_and_plain_types_only(tmp_path):
    torch.save({"x": Arbitrary()}, tmp_path / "pickle.pt")
    with pytest.raises(SegDeepError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "pickle.pt")


def test_cuda_rng_restored_only_when_saved_and_available(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.append)
    state = rng_state()
    for available in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        set_rng_state({k: v for k, v in state.items() if k != "cuda"})
        set_rng_state({**state, "cuda": ["saved"]})
    assert calls == [["saved"]]

"""The subtle-shift setting: another acquisition pipeline for the same held-out images, rows matched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib import acquisition, data
from provlib.study import artifacts
from provlib.study.run import Run


@pytest.fixture(scope="module")
def tiny():
    return Run.declared("tiny", seed=0, targets=["tiny"], probe_train_frac=0.5).target("tiny")


def test_the_default_acquisition_is_the_embedded_images_pipeline():
    ids = np.arange(40)
    again = acquisition.reacquire("fashion_mnist", ids, 16, acquisition.DEFAULT_ACQUISITION)
    torch.testing.assert_close(again, data.load_embedded("fashion_mnist", 16).images[:40], atol=1e-6, rtol=0)


def test_an_acquisition_changes_only_what_it_names():
    ids = np.arange(40)
    base = acquisition.reacquire("fashion_mnist", ids, 16, acquisition.DEFAULT_ACQUISITION)
    toned = acquisition.reacquire("fashion_mnist", ids, 16, acquisition.Acquisition(gamma=0.7))
    # a tone curve after the same crop and resampling: each pixel of the default image, through x ** 0.7 on [0, 1]
    torch.testing.assert_close(toned, (((base + 1) / 2) ** 0.7) * 2 - 1, atol=1e-5, rtol=0)
    assert (toned >= base - 1e-6).all() and (toned > base + 1e-3).any()
    with pytest.raises(ValueError, match="bad acquisition"):
        acquisition.Acquisition(kernel="lanczos")


def test_shifted_rows_are_held_out_rows_of_the_same_part(tiny):
    run = tiny.run
    n = len(tiny.image_sets["heldout"])
    pos = tiny.shifted_positions
    assert len(pos) == tiny.config.n_shifted and len(set(pos.tolist())) == len(pos)
    held, own = run.train_mask(n, "probe:heldout"), run.train_mask(len(pos), "probe:shifted")
    assert (held[pos] == own).all()              # a training row stays a training row, an evaluation row one
    matched = tiny.matched_heldout_rows()
    assert (np.flatnonzero(~held)[matched] == pos[~own]).all()


def test_the_shifted_split_is_the_held_out_images_through_the_other_pipeline(tiny):
    shifted, held = artifacts.split_images(tiny, "shifted"), artifacts.split_images(tiny, "heldout")
    pos = tiny.shifted_positions
    assert (shifted.ids == held.ids[pos]).all() and (shifted.labels == held.labels[pos]).all()
    expect = acquisition.reacquire("fashion_mnist", held.ids[pos], 16, acquisition.SHIFTED_ACQUISITION)
    torch.testing.assert_close(shifted.images, expect)
    assert not torch.allclose(shifted.images, held.images[pos])
    assert tiny.source_of("shifted") == tiny.source_of("heldout")   # the same per-sample noise stream

"""SeDID: the stepwise error is SecMI's t-error at T_SE (one kernel), its networks, and the study's rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib import attacks
from provlib.attacks import sedid
from provlib.kernels.ddim import t_error_reference, t_errors
from provlib.metrics import auc
from provlib.models import TrainConfig, UNetConfig, build_unet, make_scheduler
from provlib.study import sedid as S
from provlib.study import Run
from provlib.study.profiles import get_profile


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4)).eval()
    return net.requires_grad_(False), make_scheduler(TrainConfig())


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_sedid_error_at_t_se_is_the_round_trip_below_t_se_by_one_step(model, images):
    """T_SE is the top of the round trip (SecMI's t_sec): x_(T_SE - k) against its round trip."""
    unet, sched = model
    got = sedid.sedid_t_error(unet, sched, images, [165, 330], 33, device="cpu")
    torch.testing.assert_close(got, t_errors(unet, sched, images, [132, 297], 33, device="cpu"))
    torch.testing.assert_close(got, attacks.secmi_t_error(unet, sched, images, [165, 330], 33, device="cpu"))
    ref = t_error_reference(unet.double(), sched, images[1].double(), 132, 33)
    unet.float()
    assert got[1, 0].item() == pytest.approx(ref, rel=2e-3, abs=1e-6)
    torch.testing.assert_close(sedid.sedid_score(unet, sched, images, 165, 33, device="cpu"), -got[:, 0])


def test_sedid_states_are_the_two_intermediate_results_whose_distance_is_the_error(model, images):
    unet, sched = model
    errors, states = sedid.sedid_t_error(unet, sched, images, list(sedid.T_SE), return_states=True, device="cpu")
    assert errors.shape == (4, 6) and states.shape == (4, 6, 2, 8, 8)
    torch.testing.assert_close((states[:, :, 0] - states[:, :, 1]).pow(2).flatten(2).sum(2), errors,
                               rtol=1e-5, atol=1e-7)
    one, st = sedid.sedid_t_error(unet, sched, images, 990, return_states=True, device="cpu")
    assert one.shape == (4,) and st.shape == (4, 2, 8, 8)
    with pytest.raises(ValueError, match="at least k"):
        sedid.sedid_t_error(unet, sched, images, [20], 33, return_states=True)


def test_every_t_se_of_the_paper_lies_on_the_k_33_inversion_path():
    assert all(t % sedid.K == 0 for t in sedid.T_SE)
    assert attacks.passes("sedid_stat", sedid.T_SE, k=sedid.K)["forward"] == 29 + 2 * 6
    assert attacks.passes("sedid_stat", [330], k=10)["forward"] == 32 + 2


def test_sedid_nn_learns_a_separable_pair_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 2, 8, 8, generator=g)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    x[:40, 1] += 2.0   # the "round trip" channel differs for the positives
    a = sedid.sedid_nn(x[::2], y[::2], x[1::2], seed=1, adapted=True)
    assert auc(y[1::2], a) > 0.9
    np.testing.assert_array_equal(a, sedid.sedid_nn(x[::2], y[::2], x[1::2], seed=1, adapted=True))
    assert sedid.NN_RECIPE == {"epochs": 20, "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                               "loss": "bce"}


def test_study_rows_never_mix_and_both_classes_share_one_png_pipeline():
    run = Run.from_profile("tiny")
    names = S.splits(run)
    assert names == {"generated": f"generated#{run.n_sedid}@png", "member": f"member#{run.n_sedid}@png"}
    r = S.rows(run.target("tiny"))
    assert r.positive == "generated" and r.negative == "member"
    for part in ("train", "eval"):
        assert len(r.labels(part)) == sum(int(m.sum() if part == "train" else (~m).sum()) for m in r.masks.values())
    assert r.labels("train")[0] == 1 and r.labels("train")[-1] == 0


def test_sedid_profile_parameters_are_checked():
    with pytest.raises(ValueError, match="sedid_targets"):
        get_profile("tiny", sedid_targets=["nope"])
    with pytest.raises(ValueError, match="n_sedid"):
        get_profile("tiny", n_sedid=3)

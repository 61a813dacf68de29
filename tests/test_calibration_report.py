"""The calibration report (notebook 16): fresh negatives never seen by a probe, and the realised rates on them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib.data import reencode
from provlib.detector import origin_probe as origin
from provlib.study import Run
from provlib.study import calibration as CAL
from provlib.study.profiles import check_parameter


def _ids(x: torch.Tensor) -> set[int]:
    return set(origin.content_ids(reencode(x, origin.DEFAULT_CODEC)).tolist())


def test_the_clopper_pearson_interval_of_a_realised_rate():
    assert CAL.rate_interval(0, 60) == (0.0, pytest.approx(0.0596, abs=1e-4))
    lo, hi = CAL.rate_interval(10, 1000)
    assert lo < 0.01 < hi and 0.004 < lo and hi < 0.019
    assert CAL.rate_interval(5, 5)[1] == 1.0


def test_fresh_real_images_are_in_none_of_the_targets_splits():
    target = Run.from_profile("tiny").target("tiny")
    taken = CAL._split_content_ids(target)
    images, source, dup = CAL.fresh_real(target, "heldout", 40, taken)
    assert images.shape == (40, 1, 16, 16) and "none of tiny's splits" in source
    assert not _ids(images) & _ids(torch.cat([s.images for s in target.image_sets.values()]))
    again, _, _ = CAL.fresh_real(target, "heldout", 40, taken)
    assert torch.equal(images, again)   # seeded


def test_a_fresh_image_with_the_pixels_of_a_split_image_is_left_out_and_counted():
    target = Run.from_profile("tiny").target("tiny")
    first, _, _ = CAL.fresh_real(target, "external", 5, set())
    images, _, dup = CAL.fresh_real(target, "external", 5, _ids(first[:2]))
    assert dup == 2 and len(images) == 5 and not _ids(images) & _ids(first[:2])


def test_fresh_members_are_training_images_outside_the_evaluated_split():
    run = Run.from_profile("cpu")
    images, source = CAL.fresh_members(run.target("fm1000"), 50, set())
    target = run.target("fm1000")
    m = target.manifest
    from provlib.study.targets import embedded_images
    members = embedded_images(m.datasets["member"], 16).images[torch.as_tensor(m.indices["member"])]
    assert len(images) == 50 and _ids(images) <= _ids(members)
    assert not _ids(images) & _ids(target.image_sets["member"].images)
    none, why = CAL.fresh_members(run.target("fm500"), 50, set())
    assert none is None and "all 500 members" in why


def test_realised_rates_follow_the_decisions_and_fail_when_the_rate_is_exceeded():
    probe = origin.OriginProbe.load(CAL.probe_dir("fm500"))
    n = 200
    fresh = [CAL.FreshKind(k, c, None if k == "member" else torch.zeros(n, 1, 16, 16), "test") for k, c in probe.kinds]
    quiet = {f.kind: np.tile([0.0, 0.0, 1.0], (n, 1)) for f in fresh if f.images is not None}
    loud = {f.kind: np.tile([1.0, 1.0, 0.0], (n, 1))   # P(member) and P(generated) above any threshold
            for f in fresh if f.images is not None}
    rows = CAL.realised_rates(probe, fresh, quiet)
    assert {(r["decision"], r["max_fpr"]) for r in rows} == {(c, a) for c in ("member", "generated") for a in CAL.RATES}
    measured = [r for r in rows if r["holds"] is not None]
    assert measured and all(r["holds"] and r["fresh_above"] == 0 for r in measured)
    assert all(r["refused"] for r in rows if r["max_fpr"] == 0.001)          # 300 rows per kind cannot certify 0.1%
    assert all(r["holds"] is None and r["fresh_negatives"] == 0 for r in rows if r["kind"] == "member")
    loud_rows = [r for r in CAL.realised_rates(probe, fresh, loud) if r["holds"] is not None]
    assert loud_rows and not any(r["holds"] for r in loud_rows)             # every fresh negative above the threshold
    assert all(r["fresh_above"] == n and r["realised_lo"] > r["certified_fpr"] for r in loud_rows)


def test_the_probes_parameter_names_shipped_probes():
    assert check_parameter("probes", ["fm500"]) == ["fm500"]
    for bad in (["nope"], "fm500", [], ["fm500", "fm500"]):
        with pytest.raises(ValueError, match="shipped probes"):
            check_parameter("probes", bad)

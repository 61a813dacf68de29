"""The 3-way origin probe: codecs, content-seeded features, the pickle-free probe artifact, fit and verdicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib.detector import origin_probe as origin
from provlib.data import reencode, to_uint8, to_model_range
from provlib.io import ArtifactError
from provlib.models import load_model
from provlib.paths import EMBEDDED_MODELS_DIR
from provlib.probe import LinearProbe


@pytest.fixture(scope="module")
def tiny():
    return load_model(EMBEDDED_MODELS_DIR / "tiny")


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- codecs

def test_codecs_keep_shape_and_range_and_png_is_the_8_bit_round_trip():
    x = _images(5, 0)
    assert reencode(x, "none") is x
    png = reencode(x, "png")
    assert torch.equal(png, to_model_range(to_uint8(x)))
    assert (png - x).abs().max() <= 1 / 127.5 / 2 + 1e-6
    for codec in ("jpeg90", "jpeg75", "resize"):
        y = reencode(x, codec)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
        assert not torch.equal(y, png)
        assert torch.equal(y, reencode(x, codec))          # deterministic
        assert torch.equal(y[2:3], reencode(x[2:3], codec))  # per image, not per batch
    assert (reencode(x, "jpeg75") - png).abs().mean() > (reencode(x, "jpeg90") - png).abs().mean()


def test_an_unknown_codec_is_named():
    with pytest.raises(ValueError, match="unknown codec 'gif'"):
        reencode(_images(1, 0), "gif")


def test_an_8_bit_image_is_its_own_png_and_a_constant_image_survives_resizing():
    x = to_model_range(np.full((1, 1, 16, 16), 77, np.uint8))
    assert torch.equal(reencode(x, "png"), x)
    assert torch.equal(reencode(x, "resize"), x)


# ----------------------------------------------------------------------------- features seeded by content

def test_content_ids_follow_the_pixels_not_the_position():
    x = _images(4, 1)
    ids = origin.content_ids(x)
    assert len(set(ids)) == 4 and (ids >= 0).all()
    assert np.array_equal(origin.content_ids(x.flip(0)), ids[::-1])
    assert origin.content_ids(reencode(x, "png"))[0] == ids[0]   # same 8-bit pixels, same id


def test_origin_features_do_not_depend_on_the_batch(tiny):
    x = _images(6, 2)
    cols = [*origin.trajectory_columns([10, 500]), ("sima_l4", 20), ("pia", 100)]
    a, _ = origin.origin_features(*tiny, x, cols)
    b, _ = origin.origin_features(*tiny, x[3:], cols)
    assert a.shape == (6, 8)
    np.testing.assert_allclose(a[3:], b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the probe as plain arrays

@pytest.mark.parametrize("k", [2, 3])
def test_an_exported_probe_gives_the_decision_function(k):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5)) + np.repeat(np.arange(k), 90 // k)[:, None]
    y = np.repeat(np.arange(k), 90 // k)
    probe = LinearProbe(seed=0).fit(X, y)
    e = probe.export()
    d = ((X - e["mean"]) / e["scale"]) @ e["coef"].T + e["intercept"]
    np.testing.assert_allclose(d[:, 0] if k == 2 else d, probe.decision_function(X), rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def fitted(tiny):
    sets = {"member": _images(20, 3), "generated": _images(20, 4) * 0.2, "external": _images(20, 5).abs() - 0.5}
    return origin.fit(*tiny, sets, timesteps=[10, 500], seed=0, calibration_rows=6)


def test_fit_holds_back_calibration_rows_and_records_what_it_needs(fitted, tiny):
    assert fitted.info["calibration_rows"] == {"member": 6, "generated": 6, "external": 6}
    assert fitted.calib_probs.shape == (18, 3) and fitted.calib_ids.shape == (18,)
    assert fitted.kinds == [("member", "member"), ("generated", "generated"), ("external", "external")]
    np.testing.assert_allclose(fitted.calib_probs.sum(1), 1)
    assert fitted.columns == [("loss", 10), ("loss", 500), ("grad_x", 10), ("grad_x", 500), ("grad_theta", 10),
                              ("grad_theta", 500)]
    assert fitted.families == ["loss", "grad_x", "grad_theta"] and fitted.passes == {"forward": 2, "backward": 2}
    from provlib.models import model_fingerprint
    assert fitted.fingerprint == model_fingerprint(tiny[0])


def test_a_decision_is_certified_on_each_kind_of_negative_or_refused(fitted):
    # 6 negatives of a kind certify at best 1 - 0.05 ** (1 / 6) = 39.3%
    dec = fitted.decision("member", 0.5)
    assert not dec.refused and {k.kind for k in dec.kinds} == {"generated", "external"}
    for k in dec.kinds:
        fp = int((fitted.negatives("member")[k.kind] > dec.threshold).sum())
        assert k.negatives == 6 and k.above == fp <= k.allowed and k.certified <= 0.5
    refused = fitted.decision("generated", 0.1)
    assert refused.refused and "6 'member' calibration negatives certify at best 39.30%" in refused.reason()
    assert "29 per kind are needed for 0.1" in refused.reason()
    assert all(r["generated_at_fpr"] is None for r in origin.verdicts(fitted, *_tiny(), _images(2, 9), max_fpr=0.1))
    assert fitted.info["certifiable_fpr"]["member"] == pytest.approx(1 - 0.05 ** (1 / 6))


def _tiny():
    return load_model(EMBEDDED_MODELS_DIR / "tiny")


def test_each_reference_source_is_a_kind_calibrated_on_its_own(tiny):
    sets = {"member": _images(20, 3), "generated": _images(20, 4) * 0.2,
            "external": {"near": _images(20, 5).abs() - 0.5, "far": _images(20, 6).abs()}}
    probe = origin.fit(*tiny, sets, timesteps=[10], seed=0, calibration_rows=8)
    assert probe.info["calibration_rows"] == {"member": 8, "generated": 8, "near": 8, "far": 8}
    assert set(probe.negatives("member")) == {"generated", "near", "far"}
    assert set(probe.negatives("generated")) == {"member", "near", "far"}


def test_two_kinds_that_share_images_are_refused(tiny):
    x = _images(20, 3)
    sets = {"member": x, "generated": _images(20, 4), "external": torch.cat([x[:7], _images(13, 5)])}
    with pytest.raises(ValueError, match="member and external share 7"):
        origin.fit(*tiny, sets, timesteps=[10])


def test_a_saved_probe_loads_to_the_same_answers(fitted, tiny, tmp_path):
    fitted.save(tmp_path / "p")
    loaded = origin.OriginProbe.load(tmp_path / "p")
    x = _images(3, 9)
    a = origin.verdicts(fitted, *tiny, x)
    b = origin.verdicts(loaded, *tiny, x)
    for ra, rb in zip(a, b):
        assert ra["verdict"] == rb["verdict"]
        assert ra["p_member"] == pytest.approx(rb["p_member"], abs=1e-12)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["probe.json", "probe.safetensors"]


def test_loading_a_planted_pickle_as_a_probe_is_refused(fitted, tmp_path):
    import pickle

    fitted.save(tmp_path / "p")
    (tmp_path / "p" / "probe.safetensors").write_bytes(pickle.dumps({"boom": 1}))
    with pytest.raises(ArtifactError):
        origin.OriginProbe.load(tmp_path / "p")


def test_a_folder_that_is_not_a_probe_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="not an origin probe"):
        origin.OriginProbe.load(tmp_path)


def test_a_probe_refuses_another_model(fitted):
    other, sched = load_model(EMBEDDED_MODELS_DIR / "fm500")
    with pytest.raises(ValueError, match="fingerprint"):
        origin.verdicts(fitted, other, sched, _images(1, 0))


def test_fit_needs_every_class_with_enough_images(tiny):
    with pytest.raises(ValueError, match="missing \\['generated'\\]"):
        origin.fit(*tiny, {"member": _images(12, 0), "external": _images(12, 1)}, timesteps=[10])
    with pytest.raises(ValueError, match="3 member images: at least 11 per kind"):
        origin.fit(*tiny, {"member": _images(3, 0), "external": _images(12, 1), "generated": _images(12, 2)},
                   timesteps=[10])


@pytest.mark.parametrize("fmt", ["provlib-origin-probe/1", "provlib-origin-probe/2"])
def test_a_probe_of_an_older_format_is_refused_with_what_to_do(fitted, tmp_path, fmt):
    import json

    fitted.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "probe.json").read_text())
    (tmp_path / "p" / "probe.json").write_text(json.dumps({**meta, "format": fmt}))
    with pytest.raises(ArtifactError, match="refit it with provlib fit"):
        origin.OriginProbe.load(tmp_path / "p")


# ----------------------------------------------------------------------------- a probe file is what it claims

def _edit_json(d, change):
    import json

    meta = json.loads((d / "probe.json").read_text())
    change(meta)
    (d / "probe.json").write_text(json.dumps(meta))


def _edit_arrays(d, change, *, reseal=False):
    import json

    from provlib.detector import probe_file
    from provlib.io import load_tensors, save_tensors

    tensors, _ = load_tensors(d / "probe.safetensors")
    arrays = {k: v.numpy().copy() for k, v in tensors.items()}
    change(arrays)
    save_tensors(d / "probe.safetensors", {k: torch.from_numpy(v) for k, v in arrays.items()})
    if reseal:   # a consistent digest over inconsistent content: the consistency checks must catch it
        meta = json.loads((d / "probe.json").read_text())
        meta["digest"] = probe_file.digest(arrays, meta)
        (d / "probe.json").write_text(json.dumps(meta))


def _timestep(meta):
    meta["columns"][0][1] += 10


def _weight(arrays):
    arrays["coef"][0, 0] += 0.5


def _truncate(arrays):
    arrays["calib_features"] = arrays["calib_features"][:5]


TAMPERING = {
    "an edited timestep in probe.json": lambda d: _edit_json(d, _timestep),
    "another model's fingerprint copied into probe.json": lambda d: _edit_json(d, lambda m: m.update(fingerprint="0" * 16)),
    "an edited calibration kind": lambda d: _edit_json(d, lambda m: m["kinds"].reverse()),
    "an edited weight in probe.safetensors": lambda d: _edit_arrays(d, _weight),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_a_tampered_probe_is_refused_naming_the_file(fitted, tmp_path, how):
    fitted.save(tmp_path / "p")
    TAMPERING[how](tmp_path / "p")
    with pytest.raises(ArtifactError, match="does not match the digest") as err:
        origin.OriginProbe.load(tmp_path / "p")
    assert str(tmp_path / "p") in str(err.value)


def test_inconsistent_calibration_rows_are_refused_even_under_a_matching_digest(fitted, tmp_path):
    fitted.save(tmp_path / "p")
    _edit_arrays(tmp_path / "p", _truncate, reseal=True)
    with pytest.raises(ArtifactError, match="not a consistent origin probe.*calib_features has shape") as err:
        origin.OriginProbe.load(tmp_path / "p")
    assert str(tmp_path / "p") in str(err.value)


# ----------------------------------------------------------------------------- nothing outside a probe is deleted

def test_a_probe_is_never_written_over_other_files(fitted, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="1 entries that are not a provlib probe \\(notes.txt\\)"):
        fitted.save(d)
    assert (d / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    fitted.save(tmp_path / "empty")
    fitted.save(tmp_path / "empty")                   # a probe provlib wrote is replaced
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not a directory"):
        fitted.save(tmp_path / "file")
    with pytest.raises(ArtifactError, match="cannot write the probe"):
        fitted.save(tmp_path / "file" / "probe")
    assert (tmp_path / "file").read_text() == "x"


def test_a_budgeted_fit_keeps_its_columns_within_the_budget(tiny, tmp_path):
    from provlib.detector.columns import total_passes

    sets = {"member": _images(20, 3), "generated": _images(20, 4) * 0.2, "external": _images(20, 5).abs() - 0.5}
    candidates = [*origin.trajectory_columns([10, 500]), ("sima_l2", 0), ("sima_l4", 0), ("sima_l4", 20),
                  ("pia", 100), ("secmi", 50)]
    for budget in (1, 3):
        probe = origin.fit(*tiny, sets, columns=candidates, budget=budget, seed=0)
        assert probe.columns and set(probe.columns) <= set(candidates)
        assert total_passes(probe.columns) <= budget and probe.info["budget"] == budget
        assert len(probe.mean) == len(probe.columns)
        probe.save(tmp_path / f"p{budget}")
        assert origin.OriginProbe.load(tmp_path / f"p{budget}").columns == probe.columns
        assert len(origin.verdicts(probe, *tiny, _images(2, 8))) == 2
    with pytest.raises(ValueError, match="no candidate column fits a budget of 1"):
        origin.fit(*tiny, sets, columns=[("secmi", 50)], budget=1)
    with pytest.raises(ValueError, match="one of the two"):
        origin.fit(*tiny, sets, columns=candidates, timesteps=[10])
    with pytest.raises(ValueError, match="budget must be a positive"):
        origin.fit(*tiny, sets, columns=candidates, budget=0)

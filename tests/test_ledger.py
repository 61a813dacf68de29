"""The pass ledger counts what the UNets computed, step by step, and prices it at the measured floor."""
from __future__ import annotations

import json

import pytest
import torch

from provlib import io, ledger
from provlib.kernels.trajectory import trajectory_features
from provlib.sampling import sample


def _passes(led, step=None):
    rows = [c for (s, _), c in led.counts.items() if step is None or s == step]
    return sum(c.forward for c in rows), sum(c.backward for c in rows)


def test_a_step_whose_passes_are_known(model):
    unet, sched = model
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    with ledger.recording() as led:
        with ledger.step("all three"):
            trajectory_features(unet, sched, x, [3, 50, 700], batch_size=4)   # 15 rows: forward + backward
        with ledger.step("loss only"):
            trajectory_features(unet, sched, x, [3, 50], features=["loss"])  # 10 rows, no backward
        with ledger.step("sampling"):
            sample(unet, sched, 3, method="ddim", num_inference_steps=4)      # 3 images x 4 steps
        with ledger.step("func kernel"):
            trajectory_features(unet, sched, x[:2], [9], method="func")       # rows hidden by vmap: 2
    assert _passes(led, "all three") == (15, 15)
    assert _passes(led, "loss only") == (10, 0)
    assert _passes(led, "sampling") == (12, 0)
    assert _passes(led, "func kernel") == (2, 2)
    assert set(led.step_seconds) == {"all three", "loss only", "sampling", "func kernel"}
    assert len(led.archs) == 1 and ledger.active() is None   # one architecture; stopped after the block


def test_the_unet_steps_are_timed_apart_from_the_work_around_them(model):
    import time
    unet, sched = model
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    with ledger.recording() as led:
        with ledger.step("evaluation"):              # a cached table: a step around measurement steps
            time.sleep(0.2)                           # its own work (a classifier, say): no UNet
            with ledger.step("features"):
                trajectory_features(unet, sched, x, [3, 50], features=["loss"])   # 6 forward rows
            with ledger.step("plain"):
                time.sleep(0.05)                      # a step that ran no UNet
        trajectory_features(unet, sched, x[:1], [5], features=["loss"])   # outside any step: not timed
    d = led.to_dict()
    assert d["step_seconds"]["evaluation"] >= d["step_seconds"]["features"] + d["step_seconds"]["plain"] + 0.2
    assert abs(d["own_seconds"]["evaluation"] - (d["step_seconds"]["evaluation"] - d["step_seconds"]["features"]
                                                 - d["step_seconds"]["plain"])) < 1e-6
    assert d["own_seconds"]["features"] == d["step_seconds"]["features"]
    passes, seconds = ledger.unet_steps([d])
    assert passes == {a: {"forward": 6, "backward": 0} for a in led.archs}   # the step's rows, not the untimed one
    assert seconds == d["own_seconds"]["features"]
    speeds = {a: {"forward": 0.5, "forward_backward": 2.0} for a in led.archs}
    summary = ledger.summarize([d], speeds, threads=1)
    assert summary["unet_floor_seconds"] == 3.0 and summary["floor_seconds"] == 3.5   # 6 and 7 rows at 0.5 s
    assert summary["unet_seconds"] == round(seconds, 2)


def test_cached_work_counts_once_and_cache_reads_count_nothing(model, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path))
    unet, sched = model
    x = torch.rand(4, 1, 8, 8) * 2 - 1

    def compute():
        return {"loss": trajectory_features(unet, sched, x, [10, 20], features=["loss"])["loss"]}

    with ledger.recording() as led:
        first = io.cached("demo", {"n": 4}, compute)
        again = io.cached("demo", {"n": 4}, compute)
    assert torch.equal(first["loss"], again["loss"])
    assert _passes(led, "demo") == (8, 0) and _passes(led) == (8, 0)
    key = io.config_key({"n": 4})
    assert led.computed == {f"demo/{key}"} and led.read == {f"demo/{key}"}


def test_a_cached_state_is_a_step_and_an_artifact_read_like_any_other(model, tmp_path, monkeypatch):
    """Evaluated tables (io.cached_state) are recorded as computed and read, so that the order of the
    notebooks covers them (a notebook reading another's evaluations once waited on its lock unseen)."""
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path))
    unet, sched = model
    x = torch.rand(3, 1, 8, 8) * 2 - 1

    def compute():
        return {"auc": 0.5, "loss": trajectory_features(unet, sched, x, [10], features=["loss"])["loss"]}

    with ledger.recording() as led:
        first = io.cached_state("table", {"n": 3}, compute)
    with ledger.recording() as other:
        again = io.cached_state("table", {"n": 3}, compute)
    assert first["auc"] == again["auc"] == 0.5 and torch.equal(first["loss"], again["loss"])
    key = io.config_key({"n": 3})
    assert _passes(led, "table") == (3, 0) and led.computed == {f"table/{key}"}
    assert _passes(other) == (0, 0) and other.computed == set() and other.read == {f"table/{key}"}


def test_each_process_writes_its_ledger_for_the_driver(model, tmp_path, monkeypatch):
    monkeypatch.setenv(ledger.ENV, str(tmp_path))
    unet, sched = model
    with ledger.recording():
        with ledger.step("s"):
            trajectory_features(unet, sched, torch.full((2, 1, 8, 8), -0.5), [5], features=["loss"])
    (written,) = ledger.read(tmp_path)
    assert [(r["step"], r["forward"], r["backward"]) for r in written["counts"]] == [("s", 2, 0)]
    passes, archs = ledger.totals([written, written])
    (arch,) = passes
    assert passes[arch] == {"forward": 4, "backward": 0} and archs[arch]["rows"]["sample"] == [1, 8, 8]
    json.dumps(written)  # plain JSON, nothing else


def test_the_floor_prices_backward_rows_at_forward_plus_backward():
    speeds = {"a": {"forward": 0.001, "forward_backward": 0.003}, "b": {"forward": 0.01, "forward_backward": 0.05}}
    passes = {"a": {"forward": 100, "backward": 40}, "b": {"forward": 10, "backward": 0}}
    assert ledger.floor_seconds(passes, speeds) == pytest.approx(40 * 0.003 + 60 * 0.001 + 10 * 0.01)
    assert ledger.floor_seconds({"c": {"forward": 1, "backward": 0}}, speeds) is None   # not measured
    summary = ledger.summarize([{"archs": {"a": {"class": "UNet2DModel", "config": {}, "rows": {"sample": [1, 8, 8]}}},
                                 "counts": [{"step": "-", "arch": "a", "forward": 100, "backward": 40}],
                                 "step_seconds": {}, "computed": [], "read": []}], speeds, threads=2)
    assert summary["floor_seconds"] == pytest.approx((40 * 0.003 + 60 * 0.001) / 2, abs=0.01)


def test_measure_times_the_architecture_a_run_records(model):
    unet, _ = model
    spec = ledger.arch_spec(unet, {"sample": (1, 8, 8)})
    speeds = ledger.measure(spec, batch_sizes=(1, 4), repeats=1)
    assert 0 < speeds["forward"] < speeds["forward_backward"]
    assert speeds["batch_forward"] in (1, 4)
    with ledger.recording() as led, torch.no_grad():
        unet(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    assert list(led.archs) == [ledger.arch_key(spec)]


def test_the_shipped_models_are_keyed_as_a_run_sees_them():
    from provlib import paths
    from provlib.models.interface import open_model, quiet_loading

    specs = ledger.shipped_specs(paths.EMBEDDED_MODELS_DIR)
    with quiet_loading():
        pixel, latent = (open_model(paths.EMBEDDED_MODELS_DIR / n) for n in ("tiny", "tiny-sd"))
    with ledger.recording() as led, torch.no_grad():
        pixel.eps(torch.zeros(1, *pixel.space_shape), torch.zeros(1, dtype=torch.long))
        latent.eps(torch.zeros(1, *latent.space_shape), torch.zeros(1, dtype=torch.long),
                   latent.condition(prompts=["a photo of a sneaker"]))
    assert len(led.archs) == 2 and set(led.archs) <= set(specs)

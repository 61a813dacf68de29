"""A run resolved once: its parameters, its targets, and what a notebook's run may read."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from provlib import report
from provlib.study import Run, split_name, parse_split
from provlib.study.profiles import PROFILES
from provlib.study.targets import evaluated_sets, get_target, target_manifest


def test_a_profile_run_holds_every_value_of_the_profile():
    run = Run.from_profile("cpu")
    assert run.values() == PROFILES["cpu"]
    assert run.overrides() == {}
    assert run.targets == tuple(PROFILES["cpu"]["targets"])
    np.testing.assert_array_equal(run.grid, np.arange(0, 1000, PROFILES["cpu"]["timestep_stride"]))


def test_runs_with_equal_values_are_equal_and_hash_alike():
    a, b = Run.from_profile("tiny"), Run.from_profile("tiny")
    assert a == b and hash(a) == hash(b) and a is not b
    assert a.replace(n_bootstrap=7) != a and a.replace(n_bootstrap=7).n_bootstrap == 7
    with pytest.raises(ValueError, match="n_bootstrap"):
        a.replace(n_bootstrap=0)


def test_a_target_is_resolved_once_per_run_and_reads_the_same_splits_as_the_study():
    run = Run.from_profile("cpu")
    target = run.target("fm1000")
    assert run.target("fm1000") is target and run.target() is run.target("fm500")
    assert target.manifest is target.manifest                      # worked out once
    expected = target_manifest(get_target("fm1000"), 0)
    assert all(np.array_equal(target.manifest.indices[s], expected.indices[s]) for s in expected.indices)
    sets = evaluated_sets(get_target("fm1000"), 0)
    assert np.array_equal(target.image_sets["member"].ids, sets["member"].ids)
    assert len(target.image_sets["member"]) == get_target("fm1000").members_evaluated


def test_aggregate_results_are_keyed_by_the_images_a_target_evaluates():
    """A cached table must not outlive a change of which members are evaluated (the sd1000-empty rows once
    did: their key named the target, not its images)."""
    from provlib.study.run import Target
    run = Run.from_profile("cpu")
    target = run.target("fm1000")
    assert target.evaluated == Target(run, get_target("fm1000")).evaluated          # a function of its inputs
    fewer = dataclasses.replace(get_target("fm1000"), n_member_eval=get_target("fm1000").members_evaluated - 1)
    assert Target(run, fewer).evaluated != target.evaluated
    assert run.replace(seed=1).target("fm1000").evaluated != target.evaluated       # another member subset


def test_each_split_has_the_noise_stream_of_its_images():
    target = Run.from_profile("tiny").target()
    assert target.source_of("member") == target.source_of("heldout") == "fashion_mnist"
    assert target.source_of("external#10@jpeg75") == "mnist"
    assert target.source_of("generated") == "generated" and target.source_of("open:tiny-vae") == "generated:tiny-vae"
    assert target.noise_seed("member") == target.noise_seed("heldout#5") != target.noise_seed("external")
    with pytest.raises(ValueError, match="unknown split"):
        target.source_of("train")


def test_split_names_round_trip():
    for name in ("heldout", "heldout#150", "member@jpeg75", "external#10@resize"):
        assert split_name(*parse_split(name)) == name


def test_a_notebooks_run_reads_only_what_its_parameters_cell_declares():
    run = Run.declared("tiny", seed=0, timestep_stride=250)
    assert run.seed == 0 and len(run.grid) == 4
    with pytest.raises(AttributeError, match="'n_bootstrap'.*parameters cell"):
        run.n_bootstrap
    assert "n_bootstrap" not in repr(run) and run.values() == {"profile": "tiny", "seed": 0, "timestep_stride": 250}
    with pytest.raises(ValueError, match="unknown parameter 'n_members'"):
        Run.declared("tiny", n_members=3)
    with pytest.raises(ValueError, match="timestep_stride"):
        Run.declared("tiny", timestep_stride=0)
    with pytest.raises(ValueError, match="n_keys .* cannot exceed"):
        Run.declared("tiny", n_keys=40, n_keys_max=30)


def test_values_that_differ_from_the_profile_are_stated_beside_every_table():
    same = Run.declared("cpu", seed=0, timestep_stride=50)
    assert same.overrides() == {} and "profile `cpu`, seed 0;" in report.provenance(same)
    changed = Run.declared("cpu", seed=0, timestep_stride=20)
    assert changed.overrides() == {"timestep_stride": 20}
    assert "profile `cpu` (timestep_stride=20), seed 0;" in report.provenance(changed)

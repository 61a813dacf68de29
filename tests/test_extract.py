"""Sharded extraction under torchrun (2 CPU processes, gloo) and resumption after a kill."""
import os
import subprocess
import sys
import time

import pytest
import torch

from provlib import study

SPLITS = ["heldout", "generated"]
ARGS = ["-m", "provlib.extract", "--profile", "tiny", "--chunk", "50", "--splits", *SPLITS]


def _env(cache):
    return {**os.environ, "PROVLIB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


def _features(cache, monkeypatch):
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(cache))
    target = study.Run.from_profile("tiny").target()
    return {s: study.features(target, s, chunk=50, progress=False) for s in SPLITS}


@pytest.fixture(scope="module")
def single_process_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("single")
    subprocess.run([sys.executable, *ARGS], env=_env(cache), check=True, capture_output=True)
    return cache


def test_two_process_torchrun_equals_one_process(single_process_cache, tmp_path, monkeypatch):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *ARGS]
    out = subprocess.run(cmd, env=_env(tmp_path), check=True, capture_output=True, text=True)
    assert "tiny/heldout: (300, 10)" in out.stdout
    sharded, single = _features(tmp_path, monkeypatch), _features(single_process_cache, monkeypatch)
    for split in SPLITS:
        for name in single[split]:
            assert torch.equal(sharded[split][name], single[split][name]), (split, name)


def test_a_killed_run_resumes_to_the_same_result(single_process_cache, tmp_path, monkeypatch):
    proc = subprocess.Popen([sys.executable, *ARGS], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = lambda: list((tmp_path / "features").glob("*/result.safetensors"))
    deadline = time.time() + 120
    while len(chunks()) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    written = len(chunks())
    assert 2 <= written < 8, "the run should have been killed part-way"
    subprocess.run([sys.executable, *ARGS], env=_env(tmp_path), check=True, capture_output=True)
    resumed, single = _features(tmp_path, monkeypatch), _features(single_process_cache, monkeypatch)
    for split in SPLITS:
        for name in single[split]:
            assert torch.equal(resumed[split][name], single[split][name]), (split, name)

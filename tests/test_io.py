"""provlib.io: pickle-free artifacts, the keyed cache, atomic directory replacement."""
from __future__ import annotations

import os
import pickle
import types

import pytest
import torch

from provlib import io


class _Planted:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.mkdir, (str(self.sentinel),))


def _plant(path, sentinel):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"loss": _Planted(sentinel)}))
    with pytest.raises(FileExistsError):  # the payload really runs code when unpickled
        os.mkdir(sentinel)
        pickle.loads(path.read_bytes())
    os.rmdir(sentinel)


def test_tensors_and_meta_round_trip(tmp_path):
    t = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
         "view": torch.arange(10.0)[2:5]}  # a view of shared storage is stored as its own tensor
    io.save_tensors(tmp_path / "x.safetensors", t, {"note": "hi", "n": 3})
    got, meta = io.load_tensors(tmp_path / "x.safetensors", expect={"a": (2, None)})
    assert meta == {"note": "hi", "n": 3}
    for k in t:
        assert torch.equal(got[k], t[k]) and got[k].dtype == t[k].dtype
    with pytest.raises(io.ArtifactError, match="entry 'a' has shape \\(2, 3\\), expected \\(3, 3\\)"):
        io.load_tensors(tmp_path / "x.safetensors", expect={"a": (3, 3)})
    with pytest.raises(io.ArtifactError, match="lacks the entry 'c'"):
        io.load_tensors(tmp_path / "x.safetensors", expect={"c": (1,)})


def test_a_nested_training_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    state = {"opt": opt.state_dict(), "gen": gen.get_state(), "history": [0.5, float("inf")],
             "step": 7, "flag": True, "none": None, "pair": (1, "x")}
    io.save_state(tmp_path / "s.safetensors", state)
    back = io.load_state(tmp_path / "s.safetensors")
    assert back["step"] == 7 and back["flag"] is True and back["none"] is None and back["pair"] == (1, "x")
    assert back["history"] == [0.5, float("inf")]
    assert list(back["opt"]["state"]) == [0, 1]  # integer keys stay integers
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(back["opt"]["state"][0][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])  # what torch needs to resume
    g2 = torch.Generator()
    g2.set_state(back["gen"])
    assert torch.equal(torch.randn(3, generator=g2), torch.randn(3, generator=gen))


def test_states_refuse_what_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="a set cannot be stored"):
        io.save_state(tmp_path / "s.safetensors", {"x": {1, 2}})
    with pytest.raises(TypeError, match="dict key"):
        io.save_state(tmp_path / "s.safetensors", {(1, 2): 3})


@pytest.mark.parametrize("loader", [io.load_tensors, io.load_state])
def test_a_planted_pickle_is_refused_and_never_runs(tmp_path, loader):
    path, sentinel = tmp_path / "result.safetensors", tmp_path / "code-ran"
    _plant(path, sentinel)
    with pytest.raises(io.ArtifactError, match="not a readable safetensors artifact.*never unpickles"):
        loader(path)
    assert not sentinel.exists()


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "f.safetensors"))
    with pytest.raises(io.ArtifactError, match="not a provlib artifact"):
        io.load_tensors(tmp_path / "f.safetensors")


def test_cached_computes_once_then_loads_and_checks_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.ones(3)}

    first = io.cached("kind", {"a": 1}, compute, expect={"x": (3,)})
    again = io.cached("kind", {"a": 1}, compute, expect={"x": (3,)})
    assert len(calls) == 1 and torch.equal(first["x"], again["x"])
    # the artifact of another key copied under this one is refused
    io.cached("kind", {"a": 2}, lambda: {"x": torch.zeros(3)})
    src, dst = io.cache_path("kind", {"a": 2}), io.cache_path("kind", {"a": 1})
    dst.write_bytes(src.read_bytes())
    with pytest.raises(io.ArtifactError, match="was written for kind/.*moved or planted"):
        io.cached("kind", {"a": 1}, compute)
    # and so are rows of the wrong shape
    io.save_tensors(dst, {"x": torch.ones(4)}, {"kind": "kind", "key": io.config_key({"a": 1})})
    with pytest.raises(io.ArtifactError, match="shape \\(4,\\), expected \\(3,\\)"):
        io.cached("kind", {"a": 1}, compute, expect={"x": (3,)})

def _compute_under_two_processes(cache: str, log: str) -> None:
    """Run in a child process: cache one artifact whose computation is slow and logged."""
    import time as _time
    os.environ["PROVLIB_CACHE_DIR"] = cache

    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        _time.sleep(1.0)
        return {"x": torch.arange(3.0)}

    got = io.cached("kind", {"shared": 1}, compute, expect={"x": (3,)})
    assert torch.equal(got["x"], torch.arange(3.0))


@pytest.mark.skipif(os.name != "posix", reason="the artifact lock is an fcntl lock")
def test_two_processes_sharing_a_cache_compute_an_artifact_once(tmp_path):
    import multiprocessing as mp
    log = tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_compute_under_two_processes, args=(str(tmp_path / "cache"), str(log)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().splitlines() == ["computed"]  # the second process waited, then loaded


def test_code_version_follows_code_not_comments_or_docstrings(monkeypatch):
    import inspect

    sources = {
        "a": 'def f(x):\n    """Doc."""\n    return x + 1\n',
        "b": 'def f(x):\n    """Another doc."""\n    # a comment\n    return x + 1  # same code\n',
        "c": 'def f(x):\n    """Doc."""\n    return x + 2\n',
    }
    versions = {}
    for name, src in sources.items():
        monkeypatch.setattr(inspect, "getsource", lambda obj, src=src: src)
        versions[name] = io.code_version(types.ModuleType("m"))
    assert versions["a"] == versions["b"] != versions["c"]


def test_replace_dir_keeps_the_old_directory_until_the_new_one_is_complete(tmp_path):
    dst = tmp_path / "shipped"
    dst.mkdir()
    (dst / "weights").write_text("old")

    def broken(new):
        new.mkdir()
        (new / "weights").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.replace_dir(dst, broken)
    assert (dst / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped"]  # nothing half-written left beside it

    def good(new):
        new.mkdir()
        (new / "weights").write_text("new")

    io.replace_dir(dst, good)
    assert (dst / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped"]

"""python -m provlib.train: the shipped model is never lost, only replaced by a complete one."""
from __future__ import annotations

import shutil

import pytest

from provlib import paths, study, train
from provlib.models import load_model


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A copy of the shipped tiny model standing in for provlib/embedded/models/tiny."""
    models = tmp_path / "models"
    shutil.copytree(paths.EMBEDDED_MODELS_DIR / "tiny", models / "tiny")
    monkeypatch.setattr(paths, "EMBEDDED_MODELS_DIR", models)
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path / "cache"))
    return models / "tiny"


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_embedding_a_model_that_already_matches_touches_nothing(shipped, tmp_path, capsys):
    before = _files(shipped)
    train.main(["--target", "tiny", "--embed"])
    assert "already matches" in capsys.readouterr().out
    assert _files(shipped) == before
    assert not (tmp_path / "cache" / "model").exists()  # nothing trained


def test_retrain_and_embed_replace_the_shipped_model_with_a_complete_one(shipped):
    train.main(["--target", "tiny", "--retrain", "--embed"])
    load_model(shipped)
    assert study.shipped_matches("tiny")
    assert (shipped / "splits.json").exists()
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["tiny"]  # no half-written sibling left


def test_a_failed_embed_leaves_the_shipped_model_as_it_was(shipped, monkeypatch):
    before = _files(shipped)

    def copy_that_fails(src, dst, **kw):
        dst.mkdir()
        (dst / "model_index.json").write_text("{}")
        raise OSError("no space left on device")

    monkeypatch.setattr(shutil, "copytree", copy_that_fails)
    with pytest.raises(OSError, match="no space left"):
        train.main(["--target", "tiny", "--retrain", "--embed"])
    assert _files(shipped) == before
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["tiny"]


def test_nothing_to_embed_is_an_error_that_keeps_the_shipped_model(shipped, tmp_path):
    before = _files(shipped)
    with pytest.raises(FileNotFoundError, match="no trained model to embed.*left as it is"):
        study.embed_model(tmp_path / "nowhere", "tiny")
    assert _files(shipped) == before

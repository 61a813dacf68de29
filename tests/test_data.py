import json

import numpy as np
import pytest
import torch
from PIL import Image

from provlib import data, paths
from provlib import study


def test_embedded_datasets_load_in_model_range_at_both_sizes():
    for name in ("fashion_mnist", "mnist"):
        for size in (16, 28):
            s = data.load_embedded(name, size)
            assert s.images.shape[1:] == (1, size, size)
            assert s.images.dtype == torch.float32
            assert -1.0 <= s.images.min() and s.images.max() <= 1.0
            assert len(s.ids) == len(s) == len(s.labels)


def test_vendored_data_is_small_and_has_no_duplicate_images():
    total = sum(f.stat().st_size for f in paths.EMBEDDED_DATA_DIR.glob("*.npz"))
    assert total < 15e6
    with np.load(data.embedded_path("fashion_mnist")) as d:
        images = d["images"]
    assert len({img.tobytes() for img in images}) == len(images)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 16, 16), "shape"),
    (torch.zeros(2, 4, 16, 16), "channels"),
    (torch.zeros(0, 1, 16, 16), "empty"),
    (torch.zeros(2, 1, 16, 16, dtype=torch.uint8), "floating"),
    (torch.full((2, 1, 16, 16), 255.0), r"\[-1, 1\]"),
    (torch.full((2, 1, 16, 16), float("nan")), "NaN"),
])
def test_bad_images_get_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        data.check_images(bad)


def test_to_model_range_maps_0_255_to_minus1_1():
    x = data.to_model_range(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="uint8"):
        data.to_model_range(np.zeros((1, 2, 2), dtype=np.float32))


def test_splits_never_overlap_and_follow_the_seed():
    sizes = {"a": ("x", 30), "b": ("x", 50), "c": ("y", 10)}
    s1 = data.draw_splits({"x": 100, "y": 20}, sizes, seed=3)
    s2 = data.draw_splits({"x": 100, "y": 20}, sizes, seed=3)
    s3 = data.draw_splits({"x": 100, "y": 20}, sizes, seed=4)
    assert not set(s1["a"]) & set(s1["b"])
    assert all((s1[k] == s2[k]).all() for k in s1)
    assert not (s1["a"] == s3["a"]).all()
    with pytest.raises(ValueError, match="has 20"):
        data.draw_splits({"x": 100, "y": 20}, {"c": ("y", 21)}, seed=0)
    with pytest.raises(ValueError, match="empty"):
        data.draw_splits({"x": 100}, {"a": ("x", 0)}, seed=0)


def test_study_splits_are_disjoint_and_pixel_distinct():
    target = study.Run.from_profile("cpu").target("fm500")
    m = target.manifest
    assert not set(m.indices["member"]) & set(m.indices["heldout"])
    sets = target.image_sets
    members = {img.numpy().tobytes() for img in sets["member"].images}
    assert not any(img.numpy().tobytes() in members for img in sets["heldout"].images)


def test_manifest_roundtrip_and_tamper_detection(tmp_path):
    m = data.make_manifest({"member": ("x", 5), "heldout": ("x", 5)}, seed=1, pool_sizes={"x": 20})
    m.save(tmp_path / "s.json")
    back = data.SplitManifest.load(tmp_path / "s.json")
    assert back.sha256 == m.sha256 and (back.indices["member"] == m.indices["member"]).all()
    raw = json.loads((tmp_path / "s.json").read_text())
    raw["indices"]["member"][0] = 19
    (tmp_path / "s.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="sha256"):
        data.SplitManifest.load(tmp_path / "s.json")


def test_image_folder_loader(tmp_path):
    for i, value in enumerate((0, 128, 255)):
        Image.fromarray(np.full((20, 20, 3), value, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    s = data.load_image_folder(tmp_path, size=8, channels=3, resize=True)
    assert s.images.shape == (3, 3, 8, 8)
    assert s.images[0].max() == -1.0 and s.images[2].min() == 1.0
    kept = data.load_image_folder(tmp_path, channels=1)  # no size asked: the files' own size, grey
    assert kept.images.shape == (3, 1, 20, 20)
    torch.testing.assert_close(kept.images[1], torch.full((1, 20, 20), 128 / 127.5 - 1))
    with pytest.raises(ValueError, match="no image files"):
        data.load_image_folder(_empty(tmp_path), 8)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_torchvision_loader_converts_pil_images(monkeypatch):
    """The torchvision path, with a stand-in dataset class (torchvision itself needs a network)."""
    import sys
    import types

    class FakeCIFAR:
        def __init__(self, root, train, download):
            self.items = [(Image.fromarray(np.full((32, 32, 3), 255 * (i % 2), dtype=np.uint8)), i) for i in range(4)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=FakeCIFAR)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    s = data.load_torchvision("CIFAR10", root="unused", size=16)
    assert s.images.shape == (4, 3, 16, 16) and s.labels.tolist() == [0, 1, 2, 3]
    assert s.images[1].min() == 1.0
    with pytest.raises(ValueError, match="no dataset"):
        data.load_torchvision("NotADataset", root="unused")

"""Bad input and faults, as a new user or a security reviewer would try them.

Every case must end in an error of the stated type whose message names the
problem (or, for the few marked as behaviour, in the correct result), never in
a traceback from deep inside torch or in a silently wrong number.  The cases
that gave clear errors before this module existed are kept here too, so that
they stay that way.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

from provlib import batch, data, io, metrics, paths, study
from provlib.data import ImageRangeWarning, SplitManifest
from provlib.models import TrainConfig, UNetConfig, build_unet, load_model, make_scheduler, save_model, train_ddpm
from provlib.study import Run
from provlib.study.profiles import get_profile
from provlib.sampling import sample
from provlib.kernels.trajectory import trajectory_features

SIZE = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    unet = build_unet(UNetConfig(sample_size=SIZE, block_out_channels=(8, 16), norm_num_groups=4)).eval()
    return unet, make_scheduler(TrainConfig())


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture
def ctx(model, images, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROVLIB_OUTPUT_DIR", str(tmp_path / "out"))
    unet, sched = model
    return {"unet": unet, "sched": sched, "x": images, "tmp": tmp_path}


def feats(c, images=None, timesteps=(0, 500), **kw):
    return trajectory_features(c["unet"], c["sched"], c["x"] if images is None else images, timesteps, **kw)


def _manifest_file(c, indices: dict, datasets: dict | None = None) -> Path:
    """A manifest with a correctly recomputed sha256, as someone editing it on purpose would write."""
    datasets = datasets or {k: "fashion_mnist" for k in indices}
    body = {"seed": 0, "datasets": datasets, "indices": indices}
    path = c["tmp"] / "splits.json"
    path.write_text(json.dumps({**body, "sha256": data._sha256_json(body)}))
    return path


def _folder(c, arrays: dict[str, np.ndarray], mode: str | None = None) -> Path:
    d = c["tmp"] / "imgs"
    d.mkdir(exist_ok=True)
    for name, arr in arrays.items():
        Image.fromarray(arr, mode=mode).save(d / name) if mode else Image.fromarray(arr).save(d / name)
    return d


def _pipeline_without_scheduler(c) -> Path:
    d = save_model(c["unet"], c["sched"], c["tmp"] / "pipe")
    shutil.rmtree(d / "scheduler")
    return d


def _notebook(c) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell('profile: str = "tiny"  # profile\nseed: "Optional[int]" = None  # seed',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(profile)")]
    d = c["tmp"] / "nbs"
    d.mkdir()
    nbformat.write(nb, d / "01_x.ipynb")
    return d


# (case id, function of the test context, exception type, regex the message must match)
CASES = [
    # ---- images that do not fit the model
    ("image size differs from the model's", lambda c: feats(c, torch.full((2, 1, 32, 32), -0.5)),
     ValueError, r"1 channel\(s\) of 32x32 pixels, but the model takes 1 channel\(s\) of 8x8"),
    ("3 channels into a 1-channel model", lambda c: feats(c, torch.full((2, 3, SIZE, SIZE), -0.5)),
     ValueError, r"3 channel\(s\).*model takes 1 channel"),
    ("images in [0, 255]", lambda c: feats(c, torch.full((2, 1, SIZE, SIZE), 255.0)),
     ValueError, r"values must lie in \[-1, 1\].*to_model_range"),
    ("uint8 images", lambda c: feats(c, torch.zeros(2, 1, SIZE, SIZE, dtype=torch.uint8)),
     ValueError, "expected floating point"),
    ("NaN pixels", lambda c: feats(c, torch.full((2, 1, SIZE, SIZE), float("nan"))),
     ValueError, "NaN or infinite"),
    ("a single image without the batch dimension", lambda c: feats(c, torch.zeros(1, SIZE, SIZE)),
     ValueError, r"expected shape \(N, C, H, W\)"),
    ("an empty batch", lambda c: feats(c, torch.zeros(0, 1, SIZE, SIZE)), ValueError, r"empty \(N = 0\)"),
    ("channels last", lambda c: feats(c, torch.zeros(2, SIZE, SIZE, 1)), ValueError, "1 or 3 channels in dim 1"),
    ("training images of the wrong shape", lambda c: train_ddpm(c["x"][:, :, :4, :4], TrainConfig(
        unet=UNetConfig(sample_size=SIZE)), progress=False), ValueError, "UNet expects"),
    # ---- kernel arguments
    ("batch_size 0", lambda c: feats(c, batch_size=0), ValueError, "batch_size must be a positive integer, got 0"),
    ("batch_size -1", lambda c: feats(c, batch_size=-1), ValueError, "batch_size must be a positive integer"),
    ("batch_size 2.5", lambda c: feats(c, batch_size=2.5), TypeError, "batch_size must be a positive integer"),
    ("non-integer timesteps", lambda c: feats(c, timesteps=[10.5, 20]), ValueError, r"integers, got \[10.5\]"),
    ("string timesteps", lambda c: feats(c, timesteps=["10"]), TypeError, "timesteps must be integers"),
    ("duplicate timesteps", lambda c: feats(c, timesteps=[10, 20, 10]), ValueError, r"timesteps repeat \[10\]"),
    ("timesteps out of range", lambda c: feats(c, timesteps=[0, 1000]), ValueError, r"lie in \[0, 1000\)"),
    ("an empty grid", lambda c: feats(c, timesteps=[]), ValueError, "empty timestep grid"),
    ("a feature name as a string", lambda c: feats(c, features="loss"), TypeError,
     r"features must be a list of names, e.g. \['loss'\], not the string"),
    ("an unknown feature", lambda c: feats(c, features=["grad_y"]), ValueError, r"unknown features \['grad_y'\]"),
    ("NaN noise", lambda c: feats(c, noise=torch.full((3, 2, 1, SIZE, SIZE), float("nan"))), ValueError,
     "noise contains .* NaN"),
    ("noise of the wrong shape", lambda c: feats(c, noise=torch.zeros(3, 1, 1, SIZE, SIZE)), ValueError,
     r"noise must have shape \(N, T, C, H, W\)"),
    ("ids of the wrong length", lambda c: feats(c, ids=[1, 2]), ValueError, "2 ids for 3 images"),
    ("an unknown gradient method", lambda c: feats(c, method="magic"), ValueError, "unknown method 'magic'"),
    # ---- samplers
    ("sampler batch_size 0", lambda c: sample(c["unet"], c["sched"], 2, batch_size=0), ValueError,
     "batch_size must be a positive integer"),
    ("zero samples", lambda c: sample(c["unet"], c["sched"], 0), ValueError, "number of samples n must be a positive integer, got 0"),
    ("an unknown sampler", lambda c: sample(c["unet"], c["sched"], 2, method="euler"), ValueError,
     "unknown sampler 'euler'"),
    ("too many sampler steps", lambda c: sample(c["unet"], c["sched"], 2, num_inference_steps=2000), ValueError,
     r"num_inference_steps must lie in \[1, 1000\]"),
    # ---- profiles and the study
    ("an unknown profile", lambda c: get_profile("huge"), ValueError, "unknown profile 'huge'"),
    ("an unknown parameter", lambda c: get_profile("tiny", n_members=3), ValueError, r"unknown parameter\(s\)"),
    ("timestep_stride 0", lambda c: get_profile("tiny", timestep_stride=0), ValueError,
     "timestep_stride must be an integer in 1..999"),
    ("a negative sample count", lambda c: get_profile("tiny", n_generated=-5), ValueError,
     "n_generated must be a positive integer"),
    ("an unknown target", lambda c: get_profile("tiny", targets=["fm9000"]), ValueError,
     r"parameter targets \['fm9000'\]: unknown or repeated names"),
    ("a target name given as a string", lambda c: get_profile("tiny", targets="tiny"), ValueError,
     "targets must be a non-empty list of target names"),
    ("probe_train_frac 1.5", lambda c: get_profile("tiny", probe_train_frac=1.5), ValueError,
     "probe_train_frac must be a number strictly between 0 and 1"),
    ("a count given as text", lambda c: get_profile("tiny", n_bootstrap="300"), ValueError,
     r"n_bootstrap must be a positive integer, got '300' \(str\)"),
    ("feature chunk 0", lambda c: study.features(Run.from_profile("tiny").target(), "heldout", chunk=0, progress=False),
     ValueError, "chunk must be a positive integer"),
    ("an unknown split", lambda c: study.features(Run.from_profile("tiny").target(), "train", progress=False), ValueError,
     "unknown split 'train'"),
    # ---- split manifests, even with a recomputed sha256
    ("manifest splits that overlap", lambda c: SplitManifest.load(_manifest_file(c, {"member": [1, 2, 3],
     "heldout": [3, 4]})), ValueError, r"'member' and 'heldout' of dataset 'fashion_mnist' share 1 indices"),
    ("a manifest that repeats an index", lambda c: SplitManifest.load(_manifest_file(c, {"member": [1, 2, 2]})),
     ValueError, r"split 'member' repeats indices \[2\]"),
    ("a manifest index outside the dataset", lambda c: SplitManifest.load(
        _manifest_file(c, {"member": [1, 20000]}), pool_sizes={"fashion_mnist": 20000}),
     ValueError, r"indices \[20000\] outside dataset 'fashion_mnist' of 20000 images"),
    ("a negative manifest index", lambda c: SplitManifest.load(_manifest_file(c, {"member": [-1, 2]})),
     ValueError, "negative indices"),
    ("a non-integer manifest index", lambda c: SplitManifest.load(_manifest_file(c, {"member": [1.5]})),
     ValueError, "non-integer indices"),
    ("an edited manifest (stale sha256)", lambda c: (lambda p: (p.write_text(p.read_text().replace(
        '"seed": 0', '"seed": 1')), SplitManifest.load(p)))(_manifest_file(c, {"member": [1]})),
     ValueError, "does not match its sha256"),
    ("a subset position outside the image set", lambda c: data.ImageSet("s", c["x"], [0, 1, 2]).subset([1, 3]),
     IndexError, r"positions \[3\] are outside image set 's' of 3 images"),
    # ---- image files
    ("a folder of mixed sizes", lambda c: data.load_image_folder(_folder(c, {
        "a.png": np.zeros((8, 8), np.uint8), "b.png": np.zeros((12, 8), np.uint8)}), channels=1),
     ValueError, r"1 of 2 images are not one size \(sizes found: 8x8, 12x8; e.g. b.png \(12x8\)\)"),
    ("images of another size than asked", lambda c: data.load_image_folder(_folder(c, {
        "a.png": np.zeros((12, 12), np.uint8)}), size=8, channels=1), ValueError, "pass size=... and resize=True"),
    ("float TIFF pixels", lambda c: data.load_image_folder(_folder(c, {
        "a.tif": np.zeros((8, 8), np.float32)}), channels=1), ValueError, "have no known range"),
    ("a file that is not an image", lambda c: data.load_image_folder(
        (lambda d: ((d / "x.png").write_text("hello"), d)[1])(_folder(c, {})), channels=1),
     ValueError, r"x.png: not a readable image"),
    ("a folder without images", lambda c: data.load_image_folder(_folder(c, {}), 8), ValueError, "no image files"),
    ("an image folder that does not exist", lambda c: data.load_image_folder(c["tmp"] / "none", 8),
     FileNotFoundError, "image folder not found"),
    ("an unknown embedded dataset", lambda c: data.load_embedded("cifar"), ValueError,
     "unknown embedded dataset 'cifar'"),
    ("an embedded size that is not shipped", lambda c: data.load_embedded("mnist", 20), ValueError,
     "come at size 16 or 28"),
    # ---- models
    ("a pipeline without a scheduler", lambda c: load_model(_pipeline_without_scheduler(c)),
     FileNotFoundError, r"pipeline directory .* has no scheduler"),
    ("a missing local path that looks like a hub id", lambda c: load_model(
        "models/mymodel", local_files_only=True, cache_dir=c["tmp"] / "hub"),
     FileNotFoundError, r"'models/mymodel' is not a local directory .* looked up as a hub id, and the hub "
                        r"could not be reached .* For a local model, give an existing path"),
    ("a hub id with no network", lambda c: load_model(
        "google/ddpm-cifar10-32", local_files_only=True, cache_dir=c["tmp"] / "hub"),
     FileNotFoundError, r"hub could not be reached \(offline.*not in the local hub cache"),
    ("a missing relative model path", lambda c: load_model("./models/none"), FileNotFoundError,
     "model directory not found: ./models/none"),
    ("a model path that is a file", lambda c: load_model((lambda p: (p.write_text("x"), p)[1])(c["tmp"] / "f")),
     FileNotFoundError, "is a file; a model is a directory"),
    ("a directory without a UNet", lambda c: load_model(c["tmp"]), FileNotFoundError, "holds no diffusers UNet"),
    ("corrupt weights", lambda c: load_model((lambda d: ((d / "unet" / "diffusion_pytorch_model.safetensors")
                                                         .write_bytes(b"junk"), d)[1])(
        save_model(c["unet"], c["sched"], c["tmp"] / "m"))), ValueError, "corrupt or incompatible checkpoint"),
    # ---- metrics
    ("fp_allowed without negatives", lambda c: metrics.fp_allowed(0.01, 0), ValueError,
     "needs a positive number of negatives, got n_neg=0"),
    ("a NaN threshold in binary_report", lambda c: metrics.binary_report([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8],
                                                                         threshold=float("nan"), n_boot=2),
     ValueError, "threshold is NaN"),
    ("a NaN threshold in asr", lambda c: metrics.asr([0, 1], [0.1, 0.9], float("nan")), ValueError,
     "threshold is NaN"),
    ("labels of one class", lambda c: metrics.auc([1, 1], [0.1, 0.2]), ValueError, "only one class present"),
    ("NaN scores", lambda c: metrics.auc([0, 1], [0.1, float("nan")]), ValueError, r"scores contain 1 NaN"),
    ("max_fpr 0", lambda c: metrics.tpr_at_fpr([0, 1], [0.1, 0.2], 0.0), ValueError, r"max_fpr must lie in \(0, 1\)"),
    ("scores of another length", lambda c: metrics.auc([0, 1, 1], [0.1, 0.2]), ValueError, "length mismatch"),
    # ---- the batch driver
    ("a parameter no notebook declares", lambda c: batch.run_batch(
        "tiny", notebooks_dir=_notebook(c), overrides={"timestep_strde": 20}), ValueError,
     r"parameter 'timestep_strde' is declared by none of the selected notebooks \(01_x.ipynb\); they take: "
     r"profile, seed"),
    ("a parameter of the wrong type", lambda c: batch.run_batch(
        "tiny", notebooks_dir=_notebook(c), overrides={"seed": "zero"}), ValueError,
     r"parameter 'seed' of 01_x.ipynb is Optional\[int\], got 'zero'"),
    ("a parameter out of range", lambda c: batch.run_batch(
        "tiny", notebooks_dir=_notebook(c), overrides={"seed": -1}), ValueError,
     "seed must be a non-negative integer"),
    ("an --only prefix that matches nothing", lambda c: batch.run_batch("tiny", notebooks_dir=_notebook(c),
                                                                        only=["09"]), ValueError,
     "matches no notebook"),
]


@pytest.mark.parametrize("case, fn, exc, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(ctx, case, fn, exc, match):
    with pytest.raises(exc, match=match):
        fn(ctx)


def test_extraction_chunk_0_on_the_command_line_is_refused(capsys):
    from provlib import extract
    with pytest.raises(SystemExit):
        extract.main(["--chunk", "0"])
    assert "--chunk: must be a positive integer, got 0" in capsys.readouterr().err


def test_overrides_are_checked_before_anything_runs(ctx):
    nbs = _notebook(ctx)
    with pytest.raises(ValueError):
        batch.run_batch("tiny", notebooks_dir=nbs, overrides={"nope": 1})
    assert not (ctx["tmp"] / "out" / "reports" / "tiny" / "run.json").exists()


def test_images_in_0_1_give_a_warning(ctx):
    with pytest.warns(ImageRangeWarning, match=r"no pixel .* is negative.*\[0, 1\].*x \* 2 - 1"):
        feats(ctx, (ctx["x"] + 1) / 2, features=["loss"])


def test_16_bit_pngs_keep_their_range(ctx):
    values = np.array([[0, 32768], [49151, 65535]], dtype=np.uint16)
    d = ctx["tmp"] / "png16"
    d.mkdir()
    Image.fromarray(values).save(d / "a.png")
    assert Image.open(d / "a.png").mode.startswith("I")  # really a 16-bit file
    got = data.load_image_folder(d, channels=1).images[0, 0]
    torch.testing.assert_close(got, torch.tensor(values / 32767.5 - 1.0, dtype=torch.float32))
    rgb = data.load_image_folder(d, channels=3).images[0]
    assert rgb.shape == (3, 2, 2) and torch.equal(rgb[0], rgb[2])


def test_resize_only_when_asked_and_without_squashing(ctx):
    img = np.zeros((8, 16), np.uint8)
    img[:, 4:12] = 255  # a white square in the middle of a wide image
    d = _folder(ctx, {"wide.png": img})
    got = data.load_image_folder(d, size=4, channels=1, resize=True).images[0, 0]
    assert torch.equal(got, torch.ones(4, 4))  # centre-cropped to the square, not squashed


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Imports of pickle-like modules, calls of torch.load / pickle.load / joblib.load, and the
    keywords that switch pickle on (weights_only=False, allow_pickle=True) in a module's code."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [f"import {m}" for m in mods if m and m.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib")]
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("load", "loads") and isinstance(f.value, ast.Name) \
                    and f.value.id in ("torch", "pickle", "joblib", "dill"):
                found.append(f"{f.value.id}.{f.attr}")
            for kw in node.keywords:
                if (kw.arg, getattr(kw.value, "value", None)) in (("weights_only", False), ("allow_pickle", True)):
                    found.append(f"{kw.arg}={kw.value.value}")
    return found


def test_no_package_file_loads_with_pickle():
    """No loader that can execute code remains in the package."""
    assert _unsafe_loads(ast.parse("import pickle\ntorch.load(f, weights_only=False)")) == [
        "import pickle", "torch.load", "weights_only=False"]  # the detector itself works
    for path in paths.PACKAGE_DIR.rglob("*.py"):
        assert _unsafe_loads(ast.parse(path.read_text())) == [], path.name
    # the embedded data are plain arrays: np.load refuses object arrays by default
    for f in paths.EMBEDDED_DATA_DIR.glob("*.npz"):
        with np.load(f) as d:
            assert all(d[k].dtype != object for k in d.files)


def test_a_planted_pickle_in_the_feature_cache_is_refused(ctx):
    target = Run.from_profile("tiny", timestep_stride=500).target()
    study.features(target, "external", progress=False)
    (chunk,) = list((ctx["tmp"] / "cache" / "features").glob("*/result.safetensors"))
    sentinel = ctx["tmp"] / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(sentinel),))

    chunk.write_bytes(pickle.dumps({"loss": Payload()}))
    with pytest.raises(io.ArtifactError, match=f"{chunk.name} is not a readable safetensors artifact"):
        study.features(target, "external", progress=False)
    assert not sentinel.exists()

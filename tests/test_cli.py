"""The `provlib` command end to end, through its installed entry point (subprocesses)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provlib.data import to_uint8
from provlib.paths import EMBEDDED_MODELS_DIR
from provlib.study import Run

TINY = str(EMBEDDED_MODELS_DIR / "tiny")
PROVLIB = str(Path(sys.executable).parent / "provlib")


def run(*args, check_rc=None):
    out = subprocess.run([PROVLIB, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check_rc is not None:
        assert out.returncode == check_rc, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    return out


def write_pngs(images, folder: Path, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, px in enumerate(to_uint8(images)):
        p = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(px[0]).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    sets = Run.from_profile("tiny").target().image_sets
    write_pngs(sets["member"].images[:12], root / "members", "m")
    write_pngs(sets["heldout"].images[:12], root / "reference", "h")
    run("fit", "--model", TINY, "--members", root / "members", "--reference", root / "reference",
        "--n-generated", 12, "--sampler-steps", 5, "--timestep-stride", 500, "--out", root / "probe", check_rc=0)
    return root


def test_fit_writes_a_pickle_free_probe(fitted):
    files = sorted(p.name for p in (fitted / "probe").iterdir())
    assert files == ["probe.json", "probe.safetensors"]
    meta = json.loads((fitted / "probe" / "probe.json").read_text())
    assert meta["info"]["rows"] == {"member": 12, "generated": 12, str(fitted / "reference"): 12}
    # the default: the combined probe, its columns chosen among every family within the default budget
    from provlib.detector.origin_probe import DEFAULT_BUDGET
    from provlib.detector.columns import describe, total_passes
    cols = [tuple(c) for c in meta["columns"]]
    assert meta["info"]["budget"] == DEFAULT_BUDGET and meta["passes_per_image"] == total_passes(cols) <= DEFAULT_BUDGET
    assert meta["features"] == describe(cols) and "sima_l4@" in meta["info"]["candidates"]


def test_fit_the_trajectory_probe_and_refuse_a_budget_with_it(tmp_path):
    root = tmp_path
    sets = Run.from_profile("tiny").target().image_sets
    write_pngs(sets["member"].images[:11], root / "members", "m")
    write_pngs(sets["heldout"].images[:11], root / "reference", "h")
    args = ["fit", "--model", TINY, "--members", root / "members", "--reference", root / "reference",
            "--n-generated", 11, "--sampler-steps", 2, "--timestep-stride", 500, "--features", "trajectory"]
    out = run(*args, "--budget", 3, "--out", root / "p")
    assert out.returncode == 2 and "--budget" in out.stderr and "--features combined" in out.stderr
    out = run(*args, "--out", root / "p", check_rc=0)
    meta = json.loads((root / "p" / "probe.json").read_text())
    assert meta["columns"] == [[f, t] for f in ("loss", "grad_x", "grad_theta") for t in (0, 500)]
    assert "4 UNet passes per image: 2 forward, 2 backward" in out.stdout


def test_verdict_answers_good_images_and_names_each_bad_one(fitted, tmp_path):
    good = write_pngs(Run.from_profile("tiny").target().image_sets["member"].images[:2],
                      tmp_path / "imgs", "ok")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "imgs" / "big.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "imgs" / "broken.png").write_text("not an image")
    out = run("verdict", "--model", TINY, "--probe", fitted / "probe", tmp_path / "imgs", tmp_path / "rgb.png",
              tmp_path / "missing.png")
    assert out.returncode == 3, out.stderr
    assert re.search(r"\(features: .*@.*; \d+ UNet passes per image: \d+ forward, \d+ backward\)", out.stdout)
    for p in good:
        line = next(l for l in out.stdout.splitlines() if l.startswith(str(p)))
        assert any(v in line for v in ("member", "generated", "external")) and "ERROR" not in line
    assert "big.png: image: 1 channel(s) of 28x28 pixels, but the model takes 1 channel(s) of 16x16" in out.stderr
    assert "broken.png: not a readable image" in out.stderr
    assert "missing.png: no such file" in out.stderr
    # an RGB file is converted to the model's one channel, as any grey-level reader would
    assert "rgb.png" in out.stdout and "rgb.png" not in out.stderr


def test_verdict_json_is_one_document_with_probabilities_and_thresholds(fitted, tmp_path):
    write_pngs(Run.from_profile("tiny").target().image_sets["external"].images[:2],
               tmp_path, "x")
    out = run("verdict", "--model", TINY, "--probe", fitted / "probe", "--json", "--max-fpr", 0.1, tmp_path,
              check_rc=0)
    doc = json.loads(out.stdout)
    assert doc["max_fpr"] == 0.1 and set(doc["decisions"]) == {"member", "generated"}
    # 12 images per kind keep 10 for training: 2 calibration negatives per kind certify nothing under 77%
    member = doc["decisions"]["member"]
    assert member["refused"] and [k["kind"] for k in member["kinds"]] == ["generated", str(fitted / "reference")]
    assert all(k["negatives"] == 2 for k in member["kinds"]) and "certify at best 77.64%" in member["reason"]
    assert all(r["member_at_fpr"] is None and r["generated_at_fpr"] is None for r in doc["images"])
    assert len(doc["images"]) == 2
    assert doc["passes_per_image"]["total"] == sum(doc["passes_per_image"][k] for k in ("forward", "backward")) >= 1
    assert doc["features"] and doc["columns"]
    for row in doc["images"]:
        assert row["p_member"] + row["p_generated"] + row["p_external"] == pytest.approx(1)
        assert row["verdict"] in ("member", "generated", "external") and row["seconds"] > 0


def test_a_probe_of_another_model_is_refused(fitted, tmp_path):
    write_pngs(Run.from_profile("tiny").target().image_sets["member"].images[:1], tmp_path, "m")
    out = run("verdict", "--model", EMBEDDED_MODELS_DIR / "fm500", "--probe", fitted / "probe", tmp_path)
    assert out.returncode == 1 and "fingerprint" in out.stderr and "provlib fit" in out.stderr


def test_a_lora_adapter_makes_another_model(fitted, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    from provlib.models import load_model
    unet, _ = load_model(TINY)
    peft_model = get_peft_model(copy.deepcopy(unet), LoraConfig(r=2, target_modules=["conv1"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    write_pngs(Run.from_profile("tiny").target().image_sets["member"].images[:1], tmp_path / "i", "m")
    out = run("verdict", "--model", TINY, "--lora", tmp_path / "adapter", "--probe", fitted / "probe", tmp_path / "i")
    assert out.returncode == 1 and "fingerprint" in out.stderr
    out = run("verdict", "--model", TINY, "--lora", tmp_path / "nothing", "--probe", fitted / "probe", tmp_path / "i")
    assert out.returncode == 1 and "not a LoRA adapter in peft format" in out.stderr


def test_bad_model_and_probe_paths_are_named(fitted, tmp_path):
    out = run("verdict", "--model", tmp_path / "nomodel", "--probe", fitted / "probe", tmp_path)
    assert out.returncode == 1 and "model directory not found" in out.stderr
    out = run("verdict", "--model", TINY, "--probe", tmp_path, tmp_path)
    assert out.returncode == 1 and "not an origin probe" in out.stderr
    for bad in (0, "nan", "inf", 1.5):
        out = run("verdict", "--model", TINY, "--probe", fitted / "probe", "--max-fpr", bad, tmp_path)
        assert out.returncode == 2 and "max-fpr" in out.stderr and "Traceback" not in out.stderr, bad


def test_fit_names_a_bad_image_source(tmp_path):
    out = run("fit", "--model", TINY, "--members", "split:tiny/nosuch", "--reference", tmp_path, "--out", tmp_path / "p")
    assert out.returncode == 1 and "nosuch" in out.stderr


def test_the_readme_verdict_example_prints_what_the_readme_shows():
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Where does this image come from?")[1]
    command = re.search(r"```bash\n(.*?)```", block, re.S).group(1).replace("\\\n", " ")
    shown = re.search(r"```text\n(.*?)```", block, re.S).group(1)
    args = command.split()
    assert args[0] == ".venv/bin/provlib"
    out = subprocess.run([PROVLIB, *args[1:]], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    verdicts = lambda text: [line.split()[:2] for line in text.splitlines() if line.startswith("provlib/")]  # noqa: E731
    assert verdicts(out.stdout) == verdicts(shown) and len(verdicts(shown)) == 4


# ----------------------------------------------------------------------------- promises kept

def _tiny_folders(root: Path, n=12):
    sets = Run.from_profile("tiny").target().image_sets
    write_pngs(sets["member"].images[:n], root / "members", "m")
    write_pngs(sets["heldout"].images[:n], root / "reference", "h")
    return ["--members", root / "members", "--reference", root / "reference", "--n-generated", n,
            "--sampler-steps", 2, "--timestep-stride", 500, "--features", "trajectory"]


def test_fit_never_writes_over_a_folder_that_is_not_a_probe(tmp_path):
    args = _tiny_folders(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    for out_dir, what in ((tmp_path / "mine", "thesis.tex"), (tmp_path / "members", "m000.png")):
        before = sorted(p.name for p in out_dir.iterdir())
        out = run("fit", "--model", TINY, *args, "--out", out_dir)
        assert out.returncode == 2 and "not a provlib probe" in out.stderr and what in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and sorted(p.name for p in out_dir.iterdir()) == before
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["members", "mine", "reference"]


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    # the model does not even exist: the --out check comes first
    out = run("fit", "--model", tmp_path / "nomodel", "--members", tmp_path, "--reference", tmp_path,
              "--out", tmp_path / "afile" / "probe")
    assert out.returncode == 2 and "--out: cannot write the probe" in out.stderr and "model" not in out.stderr


def test_fit_refuses_members_that_are_also_reference_images(tmp_path):
    args = _tiny_folders(tmp_path)
    write_pngs(Run.from_profile("tiny").target().image_sets["member"].images[:5], tmp_path / "reference", "dup")
    out = run("fit", "--model", TINY, *args, "--out", tmp_path / "p")
    assert out.returncode == 2 and f"--members and --reference {tmp_path / 'reference'} share 5 images" in out.stderr
    assert not (tmp_path / "p").exists()


def test_a_refit_replaces_the_probe_provlib_wrote_and_says_what_it_certifies(tmp_path):
    args = _tiny_folders(tmp_path)
    first = run("fit", "--model", TINY, *args, "--out", tmp_path / "p", check_rc=0)
    assert "false-positive rates down to: member 77.64%; generated 77.64%" in first.stdout
    run("fit", "--model", TINY, *args, "--calibration-rows", 1, "--out", tmp_path / "p", check_rc=0)
    meta = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert meta["info"]["calibration_rows"] == {"member": 1, "generated": 1, str(tmp_path / "reference"): 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["members", "p", "reference"]   # nothing left beside it


def test_an_image_with_an_alpha_channel_is_composited_and_said_once(fitted, tmp_path):
    px = to_uint8(Run.from_profile("tiny").target().image_sets["member"].images[:1])[0, 0]
    for i in range(3):
        rgba = np.zeros((16, 16, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = px[..., None], 255
        rgba[:4, :, 3] = 0                                  # a transparent band, white underneath
        rgba[:4, :, :3] = 255
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"a{i}.png")
    out = run("verdict", "--model", TINY, "--probe", fitted / "probe", tmp_path, check_rc=0)
    notes = [line for line in out.stderr.splitlines() if "alpha channel" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 3 image(s) had an alpha channel") and "black" in notes[0]
    from provlib.data import read_image
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = read_image(tmp_path / "a0.png", channels=1)
    assert float(x[0, :4].max()) == -1.0                    # the transparent band is black, not its white RGB

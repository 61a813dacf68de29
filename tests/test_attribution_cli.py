"""`provlib keys` and `provlib attribute` end to end, through the installed entry point (subprocesses), on the
embedded study's class-label source fmc-src-b (its shipped shadow suspects calibrate the key set)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from provlib.attribution import decision
from provlib.paths import EMBEDDED_MODELS_DIR, EMBEDDED_SUSPECTS_DIR

PROVLIB = str(Path(sys.executable).parent / "provlib")
BASE = str(EMBEDDED_MODELS_DIR / "fmc-base")


def run(*args, check_rc=None):
    out = subprocess.run([PROVLIB, *map(str, args)], capture_output=True, text=True, timeout=900)
    if check_rc is not None:
        assert out.returncode == check_rc, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    return out


@pytest.fixture(scope="module")
def keyset(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys") / "fmc-src-b"
    r = run("keys", "--study-source", "fmc-src-b", "--n", 4, "--out", out, check_rc=0)
    assert "5 innocent and 20 infringing shadow models" in r.stdout and "1/(M+1) = 0.167" in r.stdout
    return out


def test_a_key_set_is_a_sealed_pickle_free_bundle(keyset):
    assert sorted(p.name for p in keyset.iterdir()) == ["keys.json", "keys.safetensors"]
    meta = json.loads((keyset / "keys.json").read_text())
    assert meta["format"] == "provlib-keys/1" and set(meta["strategies"]) == {"generation", "training"}
    assert meta["shadow"]["shadow_innocent"] == [f"fmc-innocent-shadow{i}" for i in range(5)]
    assert len(meta["calibration"]["innocent_statistics"]) == 5


def test_an_infringing_suspect_is_named_and_an_innocent_one_is_not(keyset):
    out = {}
    for name in ("fmc-src-b-r100-test0", "fmc-innocent-test0"):
        r = run("attribute", "--keys", keyset, "--base", BASE, "--suspect-lora", EMBEDDED_SUSPECTS_DIR / name, "--json",
                check_rc=0)
        out[name] = json.loads(r.stdout)
    inf, inn = out["fmc-src-b-r100-test0"], out["fmc-innocent-test0"]
    assert inf["infringing"] and not inn["infringing"] and inf["alpha"] == pytest.approx(1 / 6)
    assert inf["conf"]["generation"]["conf"] > inn["conf"]["generation"]["conf"]
    assert 0 <= inf["conf"]["training"]["lo"] <= inf["conf"]["training"]["conf"] <= inf["conf"]["training"]["hi"] <= 1
    assert inf["counted_keys"] and all(k["distance"] <= inf["delta0"][k["strategy"]] for k in inf["counted_keys"])
    text = run("attribute", "--keys", keyset, "--base", BASE, "--suspect-lora",
               EMBEDDED_SUSPECTS_DIR / "fmc-src-b-r100-test0", check_rc=0).stdout
    assert "YES: trained on the source's generations" in text and "keys that counted" in text


def test_bad_keys_bases_rates_and_out_folders_are_refused(keyset, tmp_path):
    lora = EMBEDDED_SUSPECTS_DIR / "fmc-innocent-test0"
    r = run("attribute", "--keys", keyset, "--base", BASE, "--suspect-lora", lora, "--alpha", 0.05, check_rc=2)
    assert "cannot be certified with 5 innocent shadow models" in r.stderr
    r = run("attribute", "--keys", keyset, "--base", EMBEDDED_MODELS_DIR / "fmc-src-a", "--suspect-lora", lora,
            check_rc=1)
    assert "is not the base this key set was made for" in r.stderr
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in keyset.iterdir():
        tampered.joinpath(f.name).write_bytes(f.read_bytes())
    meta = json.loads((tampered / "keys.json").read_text())
    meta["calibration"]["delta0"]["generation"] = 0.99   # every key would count
    (tampered / "keys.json").write_text(json.dumps(meta))
    r = run("attribute", "--keys", tampered, "--base", BASE, "--suspect-lora", lora, check_rc=1)
    assert "does not match the digest" in r.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not provlib's")
    r = run("keys", "--study-source", "fmc-src-b", "--out", mine, check_rc=2)
    assert "not a provlib key set" in r.stderr and (mine / "notes.txt").read_text() == "not provlib's"
    r = run("keys", "--study-source", "fmc-src-b", "--source", BASE, "--out", tmp_path / "x", check_rc=2)
    assert "--study-source takes everything" in r.stderr


def test_the_conformal_decision_holds_its_rate_on_exchangeable_innocents():
    """Innocent and infringing models' key distances drawn at random: a fresh innocent model is declared at a rate
    of at most alpha (the p-value is super-uniform), an infringing one far more often."""
    rng = np.random.default_rng(0)

    def model(shift):
        return {"generation": rng.normal(0.4 - shift, 0.05, 20), "training": rng.normal(0.2 - shift / 2, 0.03, 20)}

    declared_innocent, declared_infringing = [], []
    for _ in range(200):
        cal = decision.calibrate([model(0) for _ in range(9)], [model(0.1) for _ in range(9)])
        declared_innocent.append(decision.decide(cal, model(0), alpha=0.2)["infringing"])
        declared_infringing.append(decision.decide(cal, model(0.1), alpha=0.2)["infringing"])
    assert np.mean(declared_innocent) <= 0.2 + 0.06 and np.mean(declared_infringing) > 0.8
    with pytest.raises(ValueError, match="cannot be certified"):
        decision.decide(cal, model(0), alpha=0.05)
    lo, hi = decision.wilson(0, 10)
    assert lo == 0 and 0.2 < hi < 0.35

"""``provlib keys`` and ``provlib attribute``: was a suspect fine-tuned on a source model's generations?"""
from __future__ import annotations

import json
import sys

import click
import numpy as np
import torch

from .common import LORA_HELP, fail, images_of, load_model, main


def _study_sources() -> list[str]:
    from ..study.profiles import SOURCES
    return list(SOURCES)


@main.command()
@click.option("--study-source", type=click.Choice(_study_sources()), default=None,
              help="a source model of the embedded study: its base, own training images and shipped shadow suspects")
@click.option("--source", default=None, help="the source model: a text-to-image pipeline directory")
@click.option("--base", default=None, help="the base model the source and the suspects were fine-tuned from")
@click.option("--training-images", default=None,
              help="the source's own training images, with their captions (captions.csv / captions.jsonl)")
@click.option("--shadow-innocent", multiple=True,
              help="a LoRA of the base fine-tuned on real data only (repeatable; the more, the smaller the "
                   "false-positive rate that can be certified: 1/(M+1) with M of them)")
@click.option("--shadow-infringing", multiple=True,
              help="a LoRA of the base fine-tuned on data that includes the source's generations (repeatable)")
@click.option("--n", "n_keys", default=30, show_default=True, type=click.IntRange(2), help="keys per strategy")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="seed of every query's noise")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="the key set's directory: new, empty, or a key set provlib wrote (replaced)")
def keys(study_source, source, base, training_images, shadow_innocent, shadow_infringing, n_keys, seed, out):
    """Write a source model's key set: key samples, how to query them, and their calibration on shadow models."""
    from .. import sealed
    from ..attribution import audit, keyfile
    from ..attribution import keys as K
    from ..io import ArtifactError

    general = (source, base, training_images, shadow_innocent, shadow_infringing)
    if study_source is not None and any(general):
        raise click.UsageError("--study-source takes everything from the embedded study: give it alone, or give "
                               "--source, --base, --training-images and the shadow models instead")
    if study_source is None and not all(general):
        raise click.UsageError("give --study-source, or all of --source, --base, --training-images, "
                               "--shadow-innocent and --shadow-infringing")
    try:   # before any work: the key set may only go where nothing but a key set of provlib's is
        sealed.check_out_dir(out, keyfile.KEYS)
    except ArtifactError as err:
        raise click.UsageError(f"--out: {err}")
    try:
        inputs = audit.study_audit(study_source, seed) if study_source else _audit_inputs(
            source, base, training_images, shadow_innocent, shadow_infringing)
        sets = audit.make_keys(inputs, n_keys, seed=seed)
        calibration = audit.calibrate_on(inputs, sets, seed=seed)
    except (ValueError, OSError) as err:
        fail(str(err))
    meta = {"source": {"path": study_source or source, "fingerprint": inputs.source.fingerprint},
            "base": {"path": (inputs.names or {}).get("base", base), "fingerprint": inputs.base.fingerprint},
            "kind": inputs.base.kind, "seed": seed, "n_keys": n_keys,
            "candidates": audit.CANDIDATES_PER_KEY * n_keys, "reconstruct_t": inputs.reconstruct_t,
            "seed_steps": K.SEED_STEPS, "reconstruct_steps": K.RECONSTRUCT_STEPS,
            "shadow": inputs.names or {"shadow_innocent": list(shadow_innocent),
                                        "shadow_infringing": list(shadow_infringing)},
            "command": "provlib " + " ".join(sys.argv[1:])}
    keyfile.write(out, sets, calibration, meta)
    click.echo(f"key set written to {out}: " + ", ".join(f"{len(k.ids)} {s} keys" for s, k in sets.items())
               + "; delta_0 " + ", ".join(f"{s} {d:.4f}" for s, d in calibration.delta0.items())
               + f" (at most {calibration.rate:.0%} of the innocent shadow models' keys count); calibrated on "
                 f"{calibration.n_innocent} innocent and {calibration.n_infringing} infringing shadow models: it "
                 f"certifies false-positive rates down to 1/(M+1) = {calibration.smallest_alpha:.3f}")


def _audit_inputs(source, base, training_images, shadow_innocent, shadow_infringing):
    """An auditor's own text-to-image source, base, captioned training images and shadow LoRAs."""
    from ..attribution import audit

    src, b = load_model(source, None, "cpu"), load_model(base, None, "cpu")
    if src.kind != "latent" or b.kind != "latent":
        raise click.UsageError("--source and --base take text-to-image pipelines (the class-conditional sources "
                               "of the embedded study: --study-source)")
    images, prompts = images_of(training_images, src)
    if prompts is None:
        raise click.UsageError(f"--training-images {training_images}: the source's images need their captions "
                               "(captions.csv / captions.jsonl beside them)")
    return audit.AuditInputs(src, b, images, torch.full((len(images),), -1, dtype=torch.long), prompts,
                             audit.caption_conditions(prompts),
                             [lambda lora=lora: load_model(base, lora, "cpu") for lora in shadow_innocent],
                             [lambda lora=lora: load_model(base, lora, "cpu") for lora in shadow_infringing])


@main.command()
@click.option("--keys", "keys_dir", required=True, help="a key set written by provlib keys")
@click.option("--base", required=True, help="the base model the suspect's LoRA applies to (checked against the key set)")
@click.option("--suspect-lora", required=True, help="the suspect: " + LORA_HELP.split(": ", 1)[1])
@click.option("--source", default=None, help="the source model the keys were made from (checked against the key set)")
@click.option("--alpha", default=None, type=float,
              help="false-positive rate of the decision (default: the smallest the key set certifies, 1/(M+1))")
@click.option("--show", default=10, show_default=True, type=click.IntRange(0), help="keys that counted to list")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of text")
def attribute(keys_dir, base, suspect_lora, source, alpha, show, as_json):
    """Was the suspect fine-tuned on the source's generations?  Instance-level conf with its interval, and the
    statistical-level decision at a false-positive rate certified on the key set's shadow models."""
    from ..attribution import audit, keyfile
    from ..attribution.decision import decide

    try:
        sets, calibration, meta = keyfile.read(keys_dir)
    except (ValueError, OSError) as err:
        fail(str(err))
    b = load_model(base, None, "cpu")
    if b.fingerprint != meta["base"]["fingerprint"]:
        fail(f"--base {base} is not the base this key set was made for (fingerprint {b.fingerprint}, the key set "
              f"records {meta['base']['fingerprint']} of {meta['base']['path']})")
    if source is not None and load_model(source, None, "cpu").fingerprint != meta["source"]["fingerprint"]:
        fail(f"--source {source} is not the source this key set was made from ({meta['source']['path']})")
    suspect = load_model(base, suspect_lora, "cpu")
    d = audit.answers(suspect, sets, seed=meta["seed"], reconstruct_t=meta["reconstruct_t"])
    try:
        answer = decide(calibration, d, alpha=calibration.smallest_alpha if alpha is None else alpha)
    except ValueError as err:
        raise click.UsageError(f"--alpha: {err}")
    counted = [{"strategy": s, "id": int(sets[s].ids[i]), "distance": float(d[s][i]),
                **({"prompt": sets[s].prompts[i]} if sets[s].prompts is not None else {})}
               for s in sets for i in np.flatnonzero(answer["counted"][s])]
    counted.sort(key=lambda r: r["distance"])
    if as_json:
        click.echo(json.dumps({"keys": str(keys_dir), "suspect": str(suspect_lora), "source": meta["source"],
                               "base": meta["base"], "delta0": calibration.delta0,
                               "conf": {s: dict(zip(("conf", "lo", "hi", "counted", "keys"), v))
                                        for s, v in answer["conf"].items()},
                               "statistic": answer["statistic"], "p_value": answer["p_value"],
                               "alpha": answer["alpha"], "infringing": answer["infringing"],
                               "shadow_models": {"innocent": calibration.n_innocent,
                                                 "infringing": calibration.n_infringing},
                               "counted_keys": counted}, indent=1))
        return
    click.echo(f"suspect {suspect_lora} on base {meta['base']['path']}, keys of source {meta['source']['path']}")
    click.echo("instance level: conf = share of keys within delta_0 (95% Wilson interval over the keys, which are "
               "not independent draws):")
    for s, (c, lo, hi, k, n) in answer["conf"].items():
        click.echo(f"  {s:<10s} conf {c:.3f} [{lo:.3f}, {hi:.3f}]  ({k} of {n} keys within delta_0 = "
                   f"{calibration.delta0[s]:.4f})")
    verdict = "YES: trained on the source's generations" if answer["infringing"] else "no evidence at this rate"
    click.echo(f"statistical level: pooled conf {answer['statistic']:.3f}; p = {answer['p_value']:.3f} against "
               f"{calibration.n_innocent} innocent shadow models (conformal): at false-positive rate "
               f"<= {answer['alpha']:.3f}: {verdict}")
    if counted and show:
        from tabulate import tabulate
        click.echo("keys that counted (nearest first):")
        click.echo(tabulate([[r["strategy"], r["id"], r.get("prompt", ""), f"{r['distance']:.4f}"]
                             for r in counted[:show]], headers=["strategy", "id", "prompt", "distance"],
                            disable_numparse=True))

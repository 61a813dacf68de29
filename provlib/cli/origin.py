"""``provlib fit`` and ``provlib verdict``: a 3-way origin probe of one model, and where images come from."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import torch

from ..detector import origin_probe as origin
from .common import (EXIT_BAD_IMAGES, LORA_HELP, PROMPT_HELP, alpha_noted, check_prompts, fail, finite_rate, images_of,
                     load_model, main)

@main.command()
@click.option("--model", required=True, help="the model: a diffusers pipeline directory (DDPM or Stable Diffusion layout)")
@click.option("--lora", default=None, help=LORA_HELP)
@click.option("--prompt", default=None, help=PROMPT_HELP)
@click.option("--members", required=True, help="its training images: a folder, or split:TARGET/SPLIT")
@click.option("--reference", required=True, multiple=True,
              help="real images it never trained on (repeatable, each a kind of negative calibrated on its own): "
                   "a folder, or split:TARGET/SPLIT")
@click.option("--generated", default=None, help="images it generated (default: draw --n-generated now)")
@click.option("--n-generated", default=500, show_default=True, type=click.IntRange(10))
@click.option("--sampler-steps", default=origin.GENERATED_STEPS, show_default=True, type=click.IntRange(1, 1000),
              help="DDPM ancestral steps for the generated images")
@click.option("--features", "kind", type=click.Choice(["combined", "trajectory"]), default="combined",
              show_default=True, help="combined: columns of every signal family chosen within --budget; "
                                      "trajectory: the paper's probe (loss, grad_x, grad_theta over the grid)")
@click.option("--budget", default=None, type=click.IntRange(1),
              help=f"UNet passes per image a verdict may cost (combined features; default {origin.DEFAULT_BUDGET}: "
                   "the smallest budget within the interval of the best on the shipped target, notebook 15)")
@click.option("--timestep-stride", default=40, show_default=True, type=click.IntRange(1, 999),
              help="trajectory grid: every stride-th step of 0..999")
@click.option("--calibration-rows", default=origin.DEFAULT_CALIBRATION_ROWS, show_default=True,
              type=click.IntRange(1), help="images of each kind held back to certify the verdict's false-positive "
                                           "rates (300 certify 1%, 2,995 certify 0.1%)")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="the probe's directory: new, empty, or a probe provlib wrote (replaced)")
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
def fit(model, lora, prompt, members, reference, generated, n_generated, sampler_steps, kind, budget, timestep_stride,
        calibration_rows, seed, out, device):
    """Extract signal features and fit the 3-way origin probe (member / generated / external)."""
    import numpy as np

    from ..detector.probe_file import check_out_dir
    from ..io import ArtifactError
    from ..sampling import sample

    if kind == "trajectory" and budget is not None:
        raise click.UsageError("--budget chooses among every signal family: it goes with --features combined")
    if len(set(reference)) < len(reference):
        raise click.UsageError("the same --reference is given twice")
    try:   # before any work: the probe may only go where nothing but a probe of provlib's is
        check_out_dir(out)
    except ArtifactError as err:
        raise click.UsageError(f"--out: {err}")
    loaded = load_model(model, lora, device)
    check_prompts(loaded, prompt)
    unet, scheduler = loaded.unet, loaded.scheduler
    latent = loaded if loaded.kind == "latent" else None
    with alpha_noted():
        (sets, prompts) = {}, {}
        sets["member"], prompts["member"] = images_of(members, loaded, prompt)
        sets["external"] = {}
        for r in reference:
            sets["external"][r], prompts[r] = images_of(r, loaded, prompt)
        if generated is not None:
            sets["generated"], prompts["generated"] = images_of(generated, loaded, prompt)
    if generated is None:
        ids = np.arange(n_generated) + origin.GENERATED_IDS   # a stream of ids no other sample of the study uses
        if latent is None:
            sets["generated"] = sample(unet, scheduler, n_generated, num_inference_steps=sampler_steps, seed=seed,
                                       ids=ids, progress=True)
        else:   # drawn from the members' prompts, in turn (the empty prompt where they have none)
            own = prompts["member"] or [""]
            prompts["generated"] = [own[i % len(own)] for i in range(n_generated)]
            sets["generated"] = latent.generate(n_generated, prompts=prompts["generated"], method="ddpm",
                                                num_inference_steps=sampler_steps, seed=seed, ids=ids, progress=True)
    shared = origin.shared_images([("--members", "member", sets["member"]),
                                   *((f"--reference {r}", "external", x) for r, x in sets["external"].items()),
                                   ("--generated", "generated", sets["generated"])])
    if shared:
        raise click.UsageError("; ".join(f"{a} and {b} share {n} images (identical pixels)" for a, b, n in shared)
                               + ": each kind of image must be its own")
    grid = list(range(0, 1000, timestep_stride))
    try:
        if kind == "trajectory":
            probe = origin.fit(unet, scheduler, sets, timesteps=grid, seed=seed, calibration_rows=calibration_rows,
                               device=device, progress=True, latent=latent, prompts=prompts)
        else:
            from ..study import Run
            from ..study.measurements import columns as candidates
            grid_run = Run.from_profile("cpu", timestep_stride=timestep_stride)   # the study's candidate columns
            probe = origin.fit(unet, scheduler, sets, columns=candidates(grid_run),
                               budget=budget or origin.DEFAULT_BUDGET, seed=seed, calibration_rows=calibration_rows,
                               device=device, progress=True, latent=latent, prompts=prompts)
        probe.info["command"] = "provlib " + " ".join(sys.argv[1:])
        probe.save(out)
    except ValueError as err:
        fail(str(err))
    info = probe.info
    click.echo(f"probe written to {out}: {info['rows']} images; features {probe.features()} "
               f"({_passes(probe)}); on {sum(info['calibration_rows'].values())} "
               f"calibration rows it did not train on: macro AUC {info['calibration_macro_auc']:.3f}, "
               f"balanced accuracy {info['calibration_balanced_accuracy']:.3f}")
    click.echo("it can certify (95% Clopper-Pearson, on every kind of negative) false-positive rates down to: "
               + "; ".join(f"{c} {r:.2%}" for c, r in info["certifiable_fpr"].items()))


def _passes(probe) -> str:
    p = probe.passes
    return f"{p['forward'] + p['backward']} UNet passes per image: {p['forward']} forward, {p['backward']} backward"


def _files(paths: tuple[str, ...]) -> list[Path]:
    from ..data import IMAGE_SUFFIXES

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            out.extend(found or [p])   # an empty folder is reported as a bad input
        else:
            out.append(p)
    return out


def _read(path: Path, loaded) -> torch.Tensor:
    """One image as (1, C, H, W), or a ValueError naming what is wrong with it."""
    from ..data import check_fits_model, read_image

    if path.is_dir():
        raise ValueError("folder holds no image files")
    if not path.exists():
        raise ValueError("no such file")
    x = read_image(path, channels=loaded.image_shape[0])[None]
    if loaded.kind == "pixel":
        check_fits_model(x, loaded.unet, what="image")
    elif tuple(x.shape[1:]) != loaded.image_shape:   # a latent model's images: what its VAE encodes
        c, h, w = loaded.image_shape
        raise ValueError(f"image: {x.shape[1]} channel(s) of {x.shape[2]}x{x.shape[3]} pixels, but the model "
                         f"takes {c} channel(s) of {h}x{w} (the images its VAE encodes)")
    return x


def _prompts(paths: tuple[str, ...], prompt: str | None) -> dict[Path, str]:
    """The prompt of each image file: from the caption file of the folder given (or of a file's own folder),
    else ``prompt``, else the empty prompt."""
    from ..captions import caption_file, read_captions

    out = {}
    for p in map(Path, paths):
        folder = p if p.is_dir() else p.parent
        source = caption_file(folder) if p.exists() else None
        captions = read_captions(source) if source is not None else {}
        for f in _files((str(p),)):
            name = f.resolve().relative_to(folder.resolve()).as_posix() if f.exists() else f.name
            out[f] = captions.get(name, prompt if prompt is not None else "")
    return out


@main.command()
@click.option("--model", required=True, help="the model: a diffusers pipeline directory (DDPM or Stable Diffusion layout)")
@click.option("--lora", default=None, help=LORA_HELP)
@click.option("--prompt", default=None, help=PROMPT_HELP)
@click.option("--probe", "probe_dir", required=True, help="a probe fitted on this model (provlib fit)")
@click.option("--max-fpr", default=0.01, show_default=True, type=float, callback=finite_rate,
              help="false-positive rate of the member and generated decisions, certified on every kind of "
                   "calibration negative (a decision the probe cannot certify is refused)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of a table")
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
@click.argument("images", nargs=-1, required=True)
def verdict(model, lora, prompt, probe_dir, max_fpr, as_json, device, images):
    """Where does each IMAGE (file or folder of PNG/JPEG) come from?  A text-to-image model reads each image's
    caption from a captions.csv / captions.jsonl beside it (else --prompt, else the empty prompt)."""
    try:
        probe = origin.OriginProbe.load(probe_dir)
    except (ValueError, OSError) as err:
        fail(str(err))
    loaded = load_model(model, lora, device)
    check_prompts(loaded, prompt)
    unet, scheduler = loaded.unet, loaded.scheduler
    latent = loaded if loaded.kind == "latent" else None
    try:
        probe.check_model(unet, latent)
        prompt_of = _prompts(images, prompt) if latent is not None else {}
    except ValueError as err:   # a model the probe was not fitted on; an unreadable caption file
        fail(str(err))
    rows, good, batch = [], [], []
    with alpha_noted():
        for f in _files(images):
            try:
                batch.append(_read(f, loaded))
                good.append(len(rows))
                rows.append({"image": str(f), **({"prompt": prompt_of[f]} if latent is not None else {})})
            except ValueError as err:
                message = str(err)
                message = message[len(f"{f}: "):] if message.startswith(f"{f}: ") else message
                rows.append({"image": str(f), "error": message})
    if batch:
        start = time.perf_counter()
        prompts = [rows[i]["prompt"] for i in good] if latent is not None else None
        answers = origin.verdicts(probe, unet, scheduler, torch.cat(batch), max_fpr=max_fpr, device=device,
                                  progress=not as_json and len(batch) > 1, latent=latent, prompts=prompts)
        per_image = (time.perf_counter() - start) / len(batch)
        for i, a in zip(good, answers):
            rows[i].update(a, seconds=round(per_image, 4))
    decisions = {c: probe.decision(c, max_fpr) for c in ("member", "generated")}
    if as_json:
        click.echo(json.dumps({"probe": str(probe_dir), "model_fingerprint": probe.fingerprint, "max_fpr": max_fpr,
                               "decisions": {c: d.as_dict() for c, d in decisions.items()},
                               "features": probe.features(),
                               "columns": [[f, t] for f, t in probe.columns],
                               "passes_per_image": {**probe.passes, "total": sum(probe.passes.values())},
                               "images": rows}, indent=1))
    else:
        click.echo(_table(rows, max_fpr, decisions))
        click.echo(f"(features: {probe.features()}; {_passes(probe)})")
    for r in rows:
        if "error" in r:
            click.echo(f"error: {r['image']}: {r['error']}", err=True)
    if len(good) < len(rows):
        sys.exit(EXIT_BAD_IMAGES)


def _table(rows: list[dict], max_fpr: float, decisions: dict) -> str:
    from tabulate import tabulate

    pct = f"{100 * max_fpr:g}%"
    yes_no = {True: "yes", False: "no", None: "refused"}
    prompted = any("prompt" in r for r in rows)   # a text-to-image model: the prompt each image was read with
    body = [[r["image"], *([repr(r.get("prompt", ""))] if prompted else []), r.get("verdict", "ERROR"),
             *(f"{r[k]:.3f}" if k in r else "" for k in ("p_member", "p_generated", "p_external")),
             *(yes_no[r[k]] if k in r else "" for k in ("member_at_fpr", "generated_at_fpr")),
             f"{r['seconds']:.3f}" if "seconds" in r else ""] for r in rows]
    head = ["image", *(["prompt"] if prompted else []), "verdict", "P(member)", "P(generated)", "P(external)",
            f"member @FPR<={pct}", f"generated @FPR<={pct}", "s/image"]
    return tabulate(body, headers=head, disable_numparse=True) + "\n" + "\n".join(
        _decision_note(c, d, pct) for c, d in decisions.items())


def _decision_note(cls: str, d, pct: str) -> str:
    """What a decision certifies, per kind of negative, or why it is refused."""
    if d.refused:
        return f"({cls} @FPR<={pct}: refused: {d.reason()})"
    kinds = ", ".join(f"{k.kind}: {k.above} of {k.negatives} above the threshold, certified <= {k.certified:.2%}"
                      for k in d.kinds)
    return (f"({cls} @FPR<={pct}: the rate certified at {d.confidence:.0%} (Clopper-Pearson) on each kind of "
            f"calibration negative: {kinds})")


# ----------------------------------------------------------------------------- training-data attribution

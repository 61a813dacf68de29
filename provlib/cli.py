"""The ``provlib`` command: fit a 3-way origin probe on a model, and ask where images come from.

    provlib fit --model DIR --members SRC --reference SRC [--reference SRC ...] [--budget PASSES] --out PROBE_DIR
    provlib verdict --model DIR [--lora ADAPTER_DIR] --probe PROBE_DIR [--max-fpr 0.01] [--json] IMAGE...

Exit status: 0 when every image was answered, 3 when some images could not be
read (the others are answered, each bad one named on stderr), 1 on an error
that stops the command (a model or probe that cannot be used), 2 on a usage error.

An image source SRC is a folder of image files or ``split:TARGET/SPLIT``, a
split of one of the study's targets (e.g. ``split:fm500/member``).  See
:mod:`provlib.detector.origin_probe` for what the probe is and how it is stored.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import click
import torch

from .detector import origin_probe as origin

EXIT_BAD_IMAGES = 3  # some images could not be read (the others were answered); 1: an error, 2: a usage error


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _load_model(model: str, lora: str | None, device):
    from .models import ModelSourceError
    from .models.interface import open_model

    try:
        loaded = open_model(model, lora=lora, device=device)
    except (ModelSourceError, ValueError, OSError) as err:
        _fail(str(err))
    if loaded.kind != "pixel":
        _fail(f"{model}: a latent text-to-image pipeline (StableDiffusionPipeline, diffusion on a "
              f"{'x'.join(map(str, loaded.space_shape))} latent): provlib fit and verdict compute their signals "
              "on pixel-space models (DDPMPipeline) only, so far")
    return loaded.unet, loaded.scheduler


@contextmanager
def _alpha_noted():
    """Say once, on stderr, which images had an alpha channel (composited on black by provlib.data)."""
    from .data import AlphaChannelWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AlphaChannelWarning)
        yield
    alpha = [str(w.message).split(": the image has")[0] for w in caught if issubclass(w.category, AlphaChannelWarning)]
    for w in caught:
        if not issubclass(w.category, AlphaChannelWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if alpha:
        shown = ", ".join(alpha[:3]) + (f" and {len(alpha) - 3} more" if len(alpha) > 3 else "")
        click.echo(f"note: {len(alpha)} image(s) had an alpha channel ({shown}): composited on a black background "
                   "(the datasets' background) before use", err=True)


def _images(source: str, channels: int, size: int) -> torch.Tensor:
    """Images of a folder, or of a split of a study target (``split:TARGET/SPLIT``, e.g. ``split:fm500/heldout#500``)."""
    from .data import load_image_folder

    if source.startswith("split:"):
        from .study import Run, split_images

        target, _, split = source[len("split:"):].partition("/")
        if split.partition("#")[0].partition("@")[0] not in ("member", "heldout", "external"):
            _fail(f"{source}: a split is member, heldout or external (optionally #N for a seeded subset "
                  f"of N images, @CODEC for a re-encoding), not {split!r}")
        try:   # the study's splits, drawn from seed 0
            return split_images(Run.from_profile("cpu", seed=0).target(target), split).images
        except ValueError as err:
            _fail(f"{source}: {err}")
    try:
        return load_image_folder(source, size=size, channels=channels).images
    except (FileNotFoundError, ValueError) as err:
        _fail(f"{source}: {err}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """provlib: is an image a training member of a diffusion model, one of its generations, or external?"""


def _finite_rate(ctx, param, value):
    from .detector.calibration import check_rate

    try:
        check_rate(value)
    except ValueError as err:
        raise click.BadParameter(str(err))
    return value


@main.command()
@click.option("--model", required=True, help="the model: a diffusers pipeline directory")
@click.option("--lora", default=None, help="a LoRA adapter (peft format) merged into the model first")
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
def fit(model, lora, members, reference, generated, n_generated, sampler_steps, kind, budget, timestep_stride,
        calibration_rows, seed, out, device):
    """Extract signal features and fit the 3-way origin probe (member / generated / external)."""
    import numpy as np

    from .detector.probe_file import check_out_dir
    from .io import ArtifactError
    from .sampling import sample

    if kind == "trajectory" and budget is not None:
        raise click.UsageError("--budget chooses among every signal family: it goes with --features combined")
    if len(set(reference)) < len(reference):
        raise click.UsageError("the same --reference is given twice")
    try:   # before any work: the probe may only go where nothing but a probe of provlib's is
        check_out_dir(out)
    except ArtifactError as err:
        raise click.UsageError(f"--out: {err}")
    unet, scheduler = _load_model(model, lora, device)
    cfg = unet.config
    read = lambda src: _images(src, cfg.in_channels, cfg.sample_size)  # noqa: E731
    with _alpha_noted():
        sets = {"member": read(members), "external": {r: read(r) for r in reference}}
        if generated is not None:
            sets["generated"] = read(generated)
    if generated is None:
        ids = np.arange(n_generated) + origin.GENERATED_IDS   # a stream of ids no other sample of the study uses
        sets["generated"] = sample(unet, scheduler, n_generated, num_inference_steps=sampler_steps, seed=seed,
                                   ids=ids, progress=True)
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
                               device=device, progress=True)
        else:
            from .study import Run
            from .study.measurements import columns as candidates
            grid_run = Run.from_profile("cpu", timestep_stride=timestep_stride)   # the study's candidate columns
            probe = origin.fit(unet, scheduler, sets, columns=candidates(grid_run),
                               budget=budget or origin.DEFAULT_BUDGET, seed=seed, calibration_rows=calibration_rows,
                               device=device, progress=True)
        probe.info["command"] = "provlib " + " ".join(sys.argv[1:])
        probe.save(out)
    except ValueError as err:
        _fail(str(err))
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
    from .data import IMAGE_SUFFIXES

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            out.extend(found or [p])   # an empty folder is reported as a bad input
        else:
            out.append(p)
    return out


def _read(path: Path, unet) -> torch.Tensor:
    """One image as (1, C, H, W), or a ValueError naming what is wrong with it."""
    from .data import check_fits_model, read_image

    if path.is_dir():
        raise ValueError("folder holds no image files")
    if not path.exists():
        raise ValueError("no such file")
    x = read_image(path, channels=unet.config.in_channels)[None]
    check_fits_model(x, unet, what="image")
    return x


@main.command()
@click.option("--model", required=True, help="the model: a diffusers pipeline directory")
@click.option("--lora", default=None, help="a LoRA adapter (peft format) merged into the model first")
@click.option("--probe", "probe_dir", required=True, help="a probe fitted on this model (provlib fit)")
@click.option("--max-fpr", default=0.01, show_default=True, type=float, callback=_finite_rate,
              help="false-positive rate of the member and generated decisions, certified on every kind of "
                   "calibration negative (a decision the probe cannot certify is refused)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of a table")
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
@click.argument("images", nargs=-1, required=True)
def verdict(model, lora, probe_dir, max_fpr, as_json, device, images):
    """Where does each IMAGE (file or folder of PNG/JPEG) come from?"""
    try:
        probe = origin.OriginProbe.load(probe_dir)
    except (ValueError, OSError) as err:
        _fail(str(err))
    unet, scheduler = _load_model(model, lora, device)
    try:
        probe.check_model(unet)
    except ValueError as err:
        _fail(str(err))
    rows, good, batch = [], [], []
    with _alpha_noted():
        for f in _files(images):
            try:
                batch.append(_read(f, unet))
                good.append(len(rows))
                rows.append({"image": str(f)})
            except ValueError as err:
                message = str(err)
                message = message[len(f"{f}: "):] if message.startswith(f"{f}: ") else message
                rows.append({"image": str(f), "error": message})
    if batch:
        start = time.perf_counter()
        answers = origin.verdicts(probe, unet, scheduler, torch.cat(batch), max_fpr=max_fpr, device=device,
                                  progress=not as_json and len(batch) > 1)
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
    body = [[r["image"], r.get("verdict", "ERROR"), *(f"{r[k]:.3f}" if k in r else "" for k in
                                                   ("p_member", "p_generated", "p_external")),
             *(yes_no[r[k]] if k in r else "" for k in ("member_at_fpr", "generated_at_fpr")),
             f"{r['seconds']:.3f}" if "seconds" in r else ""] for r in rows]
    head = ["image", "verdict", "P(member)", "P(generated)", "P(external)", f"member @FPR<={pct}",
            f"generated @FPR<={pct}", "s/image"]
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


if __name__ == "__main__":
    main()

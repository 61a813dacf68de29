"""What every ``provlib`` command shares: the command group, reading a model and its images, clear errors."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import click
import torch

EXIT_BAD_IMAGES = 3  # some images could not be read (the others were answered); 1: an error, 2: a usage error


def fail(message: str) -> None:
    raise click.ClickException(message)


def load_model(model: str, lora: str | None, device):
    """The model (:class:`provlib.models.interface.DiffusionModel`), or a clear error."""
    from ..models import ModelSourceError
    from ..models.interface import open_model

    try:
        return open_model(model, lora=lora, device=device)
    except (ModelSourceError, ValueError, OSError) as err:
        fail(str(err))


def check_prompts(loaded, prompt: str | None) -> None:
    if prompt is not None and loaded.kind == "pixel":
        raise click.UsageError("--prompt conditions a text-to-image model; this is a pixel-space model")


@contextmanager
def alpha_noted():
    """Say once, on stderr, which images had an alpha channel (composited on black by provlib.data)."""
    from ..data import AlphaChannelWarning

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


def images_of(source: str, loaded, prompt: str | None = None) -> tuple[torch.Tensor, list[str] | None]:
    """Images of a folder, or of a split of a study target (``split:TARGET/SPLIT``, e.g. ``split:fm500/heldout#500``),
    and for a text-to-image model their prompts: ``prompt`` for all, else the folder's caption file (a split of a
    latent target: each image's caption as that target conditions it), else None (the empty prompt)."""
    from ..captions import prompts_for
    from ..data import IMAGE_SUFFIXES, load_image_folder

    channels, size = loaded.image_shape[0], loaded.image_shape[1]
    if source.startswith("split:"):
        from ..study import Run, split_images
        from ..study.artifacts import prompts_of

        target, _, split = source[len("split:"):].partition("/")
        if split.partition("#")[0].partition("@")[0] not in ("member", "heldout", "external"):
            fail(f"{source}: a split is member, heldout or external (optionally #N for a seeded subset "
                  f"of N images, @CODEC for a re-encoding), not {split!r}")
        try:   # the study's splits, drawn from seed 0
            t = Run.from_profile("cpu", seed=0).target(target)
            images = split_images(t, split)
        except ValueError as err:
            fail(f"{source}: {err}")
        own = prompts_of(t, split, images) if loaded.kind == "latent" else None
        return images.images, [prompt] * len(images) if prompt is not None else own
    try:
        images = load_image_folder(source, size=size, channels=channels).images
        if loaded.kind == "pixel":
            return images, None
        files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return images, prompts_for(files, source, prompt)
    except (FileNotFoundError, ValueError) as err:   # CaptionError is a ValueError
        fail(f"{source}: {err}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """provlib: is an image a training member of a diffusion model, one of its generations, or external?"""


def finite_rate(ctx, param, value):
    from ..detector.calibration import check_rate

    try:
        check_rate(value)
    except ValueError as err:
        raise click.BadParameter(str(err))
    return value


LORA_HELP = ("a LoRA fine-tune applied to the model first: a peft adapter folder, or diffusers' "
             "pytorch_lora_weights.safetensors (or its folder)")
PROMPT_HELP = ("text-to-image models: the prompt of every image that has no caption file beside it "
               "(captions.csv / captions.jsonl; default: the empty prompt)")



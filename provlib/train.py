"""Train the study's target models, and optionally ship them as the embedded models.

    python -m provlib.train --target fm2000            # train (or reuse the cache)
    python -m provlib.train --target fm2000 --embed    # ... and copy it into provlib/embedded/models/fm2000
    python -m provlib.train --target fm2000 --retrain  # ignore cache and shipped model
    python -m provlib.train --profile cpu --embed      # every target of a profile
    python -m provlib.train --generator fm-vae --embed # an open-world generator (see provlib.study.generators)
    python -m provlib.train --profile cpu --generators --embed   # every generator of a profile's open world
    python -m provlib.train --attribution --embed      # the attribution study's base, sources, releases, suspects
    python -m provlib.train --attribution --shard 0/8  # only every 8th suspect from the first (parallel jobs)
    python -m provlib.train --attribution-text --embed # the same in the text-to-image setting (diffusers LoRAs)

The shipped model is only ever replaced by a complete, loadable new one
(written beside it, then renamed into place); when it already matches the
target's configuration and ``--retrain`` is not given, nothing is trained and
nothing is touched.
"""
from __future__ import annotations

import argparse

from .study import generators, suspects, suspects_text, targets
from .study.profiles import get_profile
from .study.targets import TARGETS, get_target


def train_target(name: str, *, seed: int = 0, retrain: bool = False, embed: bool = False) -> None:
    """Train (or reuse) target ``name``; with ``embed``, ship it."""
    config = get_target(name)
    shipped = targets.embedded_model_dir(config.model_name)
    if not retrain and targets.shipped_matches(name, seed):
        print(f"the shipped model {shipped} already matches target {name!r}: nothing to train"
              + (" or embed (use --retrain to replace it)" if embed else ""))
        return
    manifest = targets.target_manifest(config, seed)
    model_dir = targets.trained_model_dir(config, manifest, retrain=retrain)
    print(f"trained model: {model_dir}")
    if embed:
        targets.embed_model(model_dir, config.model_name)
        print(f"embedded model written to {shipped}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Train the study's target DDPMs.")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", choices=sorted(TARGETS), help="one target model")
    which.add_argument("--profile", help="every target the profile lists")
    which.add_argument("--generator", choices=sorted(n for n, g in generators.GENERATORS.items() if g.trained),
                       help="one open-world generator")
    which.add_argument("--attribution", action="store_true",
                       help="the training-data attribution study's models (base, sources, releases, suspects)")
    which.add_argument("--attribution-text", action="store_true",
                       help="the attribution study's text-to-image models (sources, releases, LoRA suspects)")
    ap.add_argument("--shard", help="with --attribution(-text): I/N trains the suspects I, I+N, ... only (the base "
                                    "and sources must exist); for N parallel jobs")
    ap.add_argument("--generators", action="store_true",
                    help="with --profile: the trained generators of the profile's open world instead of its targets")
    ap.add_argument("--retrain", action="store_true", help="train from scratch even if a model exists")
    ap.add_argument("--embed", action="store_true", help="copy the trained model into provlib/embedded/models/")
    args = ap.parse_args(argv)
    if args.generators and not args.profile:
        ap.error("--generators goes with --profile")
    if args.shard and not (args.attribution or args.attribution_text):
        ap.error("--shard goes with --attribution or --attribution-text")
    if args.attribution or args.attribution_text:
        setting = suspects if args.attribution else suspects_text
        names, models = None, True
        if args.shard:
            try:
                i, n = (int(v) for v in args.shard.split("/"))
                assert 0 <= i < n
            except (ValueError, AssertionError):
                ap.error(f"--shard takes I/N with 0 <= I < N, got {args.shard!r}")
            names, models = sorted(setting.SUSPECTS)[i::n], False
        if args.embed:
            setting.embed_all(retrain=args.retrain, names=names, models=models)
        else:
            for name in names or sorted(setting.SUSPECTS):
                print(f"suspect {name}: {setting.suspect_dir(name, retrain=args.retrain)}")
        return
    if args.generator or args.generators:
        names = [args.generator] if args.generator else [
            n for n in get_profile(args.profile)["open_world"] if generators.get_generator(n).trained]
        seed = 0 if args.generator else get_profile(args.profile)["seed"]
        for name in names:
            out = (generators.embed if args.embed else generators.model_dir)(name, seed, retrain=args.retrain)
            print(f"generator {name}: {out}")
        return
    if args.target:
        names, seed = [args.target], 0
    else:
        params = get_profile(args.profile)
        names, seed = params["targets"], params["seed"]
    for name in names:
        train_target(name, seed=seed, retrain=args.retrain, embed=args.embed)


if __name__ == "__main__":
    main()

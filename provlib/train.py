"""Train a profile's target model, and optionally ship it as the embedded model.

    python -m provlib.train --profile cpu            # train (or reuse the cache)
    python -m provlib.train --profile cpu --embed    # ... and copy it into provlib/embedded/models/cpu
    python -m provlib.train --profile cpu --retrain  # ignore cache and shipped model

The shipped model is only ever replaced by a complete, loadable new one
(written beside it, then renamed into place); when it already matches the
profile's configuration and ``--retrain`` is not given, nothing is trained and
nothing is touched.
"""
from __future__ import annotations

import argparse

from .study.profiles import get_profile
from .study import embed_model, embedded_model_dir, shipped_matches, trained_model_dir


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Train a profile's target DDPM.")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--retrain", action="store_true", help="train from scratch even if a model exists")
    ap.add_argument("--embed", action="store_true", help="copy the trained model into provlib/embedded/models/")
    args = ap.parse_args(argv)
    params = get_profile(args.profile)
    shipped = embedded_model_dir(args.profile)
    if not args.retrain and shipped_matches(params):
        print(f"the shipped model {shipped} already matches profile {args.profile!r}: nothing to train"
              + (" or embed (use --retrain to replace it)" if args.embed else ""))
        return
    model_dir = trained_model_dir(params, retrain=args.retrain)
    print(f"trained model: {model_dir}")
    if args.embed:
        embed_model(model_dir, args.profile)
        print(f"embedded model written to {shipped}")


if __name__ == "__main__":
    main()

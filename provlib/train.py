"""Train a profile's target model, and optionally ship it as the embedded model.

    python -m provlib.train --profile cpu            # train (or reuse the cache)
    python -m provlib.train --profile cpu --embed    # ... and copy it into provlib/embedded/models/cpu
    python -m provlib.train --profile cpu --retrain  # ignore cache and shipped model
"""
from __future__ import annotations

import argparse
import shutil

from .profiles import get_profile
from .study import artifact_dir, embedded_model_dir, model_config, target_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Train a profile's target DDPM.")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--retrain", action="store_true", help="train from scratch even if a model exists")
    ap.add_argument("--embed", action="store_true", help="copy the trained model into provlib/embedded/models/")
    args = ap.parse_args(argv)
    params = get_profile(args.profile)
    target_model(params, retrain=args.retrain)
    if args.embed:
        src, dst = artifact_dir("model", model_config(params)) / "model", embedded_model_dir(args.profile)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        print(f"embedded model written to {dst}")


if __name__ == "__main__":
    main()

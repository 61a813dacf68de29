"""The check mode: regenerate the outputs into a scratch folder and compare them with the committed ones.

    python -m provlib.check --profile cpu              # every notebook (make verify: two lanes)
    python -m provlib.check --profile cpu --only 06 17 # some notebooks

The batch driver (:func:`provlib.batch.run_batch`) runs the notebooks with
``PROVLIB_OUTPUT_DIR`` pointed at a new scratch folder and the usual cache (so
a reviewer who ran the main job pays only for what changed); then each output
of the notebooks that ran is compared with the committed copy
(:mod:`provlib.report.compare`: tables cell by cell with the measured-time
columns set aside, figures by bytes and else by pixels, claims field by field,
``claims.md`` line by line on a whole run).  One line per output, ``same`` or
``differs: ...``; the exit status is 1 when anything differs, and the scratch
folder is left for inspection.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from . import batch, paths
from .lanes import environment
from .report.compare import Comparison, compare_file, compare_folders
from .study.profiles import PROFILES


def check(profile: str, *, only: Sequence[str] | None = None, lanes: int = 1, kernel: str | None = "python3",
          notebooks_dir: Path | None = None, progress_stream=None) -> tuple[list[Comparison], Path, dict]:
    """``(comparisons, scratch folder, run record)``: the chosen notebooks run into a new scratch folder,
    their outputs compared with those under :func:`provlib.paths.output_root`."""
    committed = paths.output_root()
    scratch = Path(tempfile.mkdtemp(prefix=f"provlib-check-{profile}-"))
    with environment({"PROVLIB_OUTPUT_DIR": str(scratch)}):
        record = batch.run_batch(profile, notebooks_dir=notebooks_dir, only=only, kernel=kernel, lanes=lanes,
                                 floor=False, progress_stream=progress_stream)
    stems = [nb["stem"] for nb in record["notebooks"]]
    ran = [nb["stem"] for nb in record["notebooks"] if nb["status"] == "ok"]
    out = []
    for kind in ("reports", "figures"):
        out += compare_folders(committed / kind / profile, scratch / kind / profile, stems, ran)
    if not only:
        out.append(compare_file(committed / "reports" / profile / "claims.md",
                                scratch / "reports" / profile / "claims.md"))
    return out, scratch, record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provlib.check", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES), help="the profile to check")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="check only notebooks whose stem starts so")
    parser.add_argument("--lanes", type=int, default=1, help="notebooks run at once (as in provlib.batch)")
    args = parser.parse_args(argv)
    try:
        results, scratch, record = check(args.profile, only=args.only, lanes=args.lanes)
    except batch.RunRefused as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    for r in results:
        print(r.line)
    differs = sum(r.status == "differs" for r in results)
    print(f"{len(results)} outputs: {len(results) - differs} same, {differs} differ "
          f"(regenerated in {scratch}, run {record['status']})")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())

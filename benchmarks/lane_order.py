"""How long a run's notebooks take in lanes, by the order the lanes start them: a simulation on a run's times.

    python benchmarks/lane_order.py reports/cpu/run.json [--lanes 2]

Replays the notebooks of a run record (``run.json``: each notebook's wall seconds) through ``--lanes`` lanes that
start a notebook when a lane is free and what it needs (``provlib.study.order.NEEDS``) has finished, in the
order :func:`provlib.study.order.lane_order` gives: with the record's own times as the expectation (what the
driver does when it knows the last run), and with none (every notebook expected to take a second).  Prints the
simulated wall time of each, and the notebooks' seconds divided by the lanes (no order can beat it).
"""
from __future__ import annotations

import argparse
import json

from provlib.study import order


def simulate(times: dict, expected: dict, lanes: int) -> float:
    """Seconds until the last notebook ends when ``lanes`` lanes run ``times`` in the order ``expected`` gives."""
    stems = order.lane_order(list(times), expected)
    needs = {s: order.needs_of(s, stems) for s in stems}
    clock, done, running, waiting = 0.0, {}, [], list(stems)
    while waiting or running:
        while len(running) < lanes:
            ready = next((s for s in waiting if all(n in done for n in needs[s])), None)
            if ready is None:
                break
            waiting.remove(ready)
            running.append((clock + times[ready], ready))
        running.sort()
        clock, stem = running.pop(0)
        done[stem] = clock
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", help="a run record (run.json)")
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args()
    record = json.loads(open(args.record).read())
    times = {nb["stem"]: nb["wall_seconds"] for nb in record["notebooks"] if nb.get("wall_seconds")}
    rows = [("lanes ordered by the record's times", simulate(times, times, args.lanes)),
            ("lanes ordered with no times", simulate(times, {}, args.lanes)),
            (f"notebook seconds / {args.lanes} (bound)", sum(times.values()) / args.lanes)]
    print("| schedule | minutes |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()

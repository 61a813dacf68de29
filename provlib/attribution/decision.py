"""One suspect, one answer: instance-level conf and a statistical-level decision at a stated false-positive rate.

An auditor holds a source model, its key samples and one suspect.  From
**shadow models** (innocent fine-tunes of the same base, and fine-tunes on the
source's generations) :func:`calibrate` fixes, per key strategy, delta_0 (the
distance at which at most :data:`~provlib.attribution.keys.INNOCENT_KEY_RATE`
of the innocent shadow models' keys count, :func:`~provlib.attribution.keys.choose_delta0`)
and the null distribution of the suspect-level statistic: **conf pooled over
every key of every strategy**.  :func:`decide` answers for a suspect:

- conf per strategy, with a 95% Wilson interval over its keys (the keys of one
  model are not independent draws: read the interval as the keys' sampling
  error only, not the spread between models);
- the decision "trained on the source's generations" at false-positive rate
  ``alpha``, by a **conformal test** against the innocent shadow models: each
  innocent model's statistic is computed with the delta_0 chosen without it
  (leave one out), so that it is exchangeable with a fresh innocent model's;
  the p-value is ``(1 + #{innocent statistics >= the suspect's}) / (M + 1)``
  and the suspect is declared infringing when ``p <= alpha``.  This holds for
  any innocent model exchangeable with the shadow ones (fine-tuned from the
  same base by the same kind of recipe on real data), whatever the key
  distances' distribution; with M innocent shadow models the smallest rate
  that can be certified is ``1 / (M + 1)``, and a smaller ``alpha`` is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keys import INNOCENT_KEY_RATE, choose_delta0


@dataclass(frozen=True)
class Calibration:
    """delta_0 per strategy and the innocent shadow models' leave-one-out statistics."""

    delta0: dict[str, float]
    innocent_statistics: tuple[float, ...]
    n_innocent: int
    n_infringing: int
    rate: float = INNOCENT_KEY_RATE

    @property
    def smallest_alpha(self) -> float:
        """The smallest false-positive rate this calibration can certify: 1 / (M + 1)."""
        return 1.0 / (self.n_innocent + 1)

    def to_dict(self) -> dict:
        return {"delta0": dict(self.delta0), "innocent_statistics": list(self.innocent_statistics),
                "n_innocent": self.n_innocent, "n_infringing": self.n_infringing, "rate": self.rate}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        try:
            cal = cls({str(k): float(v) for k, v in d["delta0"].items()},
                      tuple(float(v) for v in d["innocent_statistics"]), int(d["n_innocent"]),
                      int(d["n_infringing"]), float(d["rate"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a key calibration: {err}") from err
        if len(cal.innocent_statistics) != cal.n_innocent or cal.n_innocent < 1:
            raise ValueError("a key calibration needs one statistic per innocent shadow model")
        return cal


def _check(models: list[dict], what: str) -> list[dict[str, np.ndarray]]:
    if not models:
        raise ValueError(f"calibration needs {what} shadow models (none given)")
    out = [{k: np.asarray(v, np.float64).ravel() for k, v in m.items()} for m in models]
    keys = set(out[0])
    if any(set(m) != keys for m in out) or any(not len(v) or not np.isfinite(v).all() for m in out for v in m.values()):
        raise ValueError(f"every {what} shadow model needs finite distances for the same strategies")
    return out


def statistic(distances: dict[str, np.ndarray], delta0: dict[str, float]) -> float:
    """The suspect-level statistic: the share of all keys (every strategy pooled) within their delta_0."""
    counted = [np.asarray(distances[s], np.float64) <= delta0[s] for s in sorted(delta0)]
    return float(np.concatenate(counted).mean())


def calibrate(innocent: list[dict], infringing: list[dict], *, rate: float = INNOCENT_KEY_RATE) -> Calibration:
    """delta_0 per strategy from all shadow models, and each innocent model's statistic at the delta_0 chosen
    without it.  ``innocent`` and ``infringing``: one ``{strategy: distances}`` per shadow model."""
    inn, inf = _check(innocent, "innocent"), _check(infringing, "infringing")
    if set(inn[0]) != set(inf[0]):
        raise ValueError("innocent and infringing shadow models must answer the same strategies")
    strategies = sorted(inn[0])

    def delta0(innocents):
        return {s: choose_delta0([m[s] for m in innocents], [m[s] for m in inf], rate=rate) for s in strategies}

    loo = []
    for i, m in enumerate(inn):
        rest = inn[:i] + inn[i + 1:]
        loo.append(statistic(m, delta0(rest)) if rest else statistic(m, delta0(inn)))
    return Calibration(delta0(inn), tuple(loo), len(inn), len(inf), rate)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n."""
    if n <= 0:
        raise ValueError("a proportion needs n > 0")
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, c - h)), float(min(1.0, c + h))


def decide(calibration: Calibration, distances: dict[str, np.ndarray], *, alpha: float) -> dict:
    """The answer for one suspect (see the module docstring): ``{"conf": {strategy: (conf, lo, hi, counted,
    n)}, "statistic", "p_value", "alpha", "infringing", "counted": {strategy: bool mask}}``."""
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a false-positive rate in (0, 1), got {alpha}")
    if alpha < calibration.smallest_alpha:
        raise ValueError(f"a false-positive rate of {alpha:g} cannot be certified with {calibration.n_innocent} "
                         f"innocent shadow models: the smallest is 1/(M+1) = {calibration.smallest_alpha:.3g}; "
                         "calibrate on more innocent shadow models")
    if set(distances) != set(calibration.delta0):
        raise ValueError(f"the suspect answered strategies {sorted(distances)}; the calibration has "
                         f"{sorted(calibration.delta0)}")
    per, counted = {}, {}
    for s in sorted(calibration.delta0):
        d = np.asarray(distances[s], np.float64)
        mask = d <= calibration.delta0[s]
        counted[s] = mask
        per[s] = (float(mask.mean()), *wilson(int(mask.sum()), len(d)), int(mask.sum()), len(d))
    stat = statistic(distances, calibration.delta0)
    null = np.asarray(calibration.innocent_statistics)
    p = float((1 + np.sum(null >= stat)) / (len(null) + 1))
    return {"conf": per, "statistic": stat, "p_value": p, "alpha": alpha, "infringing": bool(p <= alpha),
            "counted": counted}

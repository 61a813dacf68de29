"""Decision thresholds with a certified false-positive rate, per kind of negative.

A verdict's decision ("member at FPR <= 1%") is a threshold on one class
probability.  The threshold is read from the probe's calibration rows, images
it never trained on, and it has to hold the rate on images nobody tuned on.
Two things make a pooled, point-estimate threshold fail that promise:

- the negatives are of several **kinds** (generated images, held-out images of
  the same distribution, images of another dataset): a kind that is rejected
  trivially dilutes the pooled rate, so the false positives it allows all fall
  on the hardest kind;
- a threshold set so that ``k`` of ``n`` calibration negatives lie above it has
  a rate on fresh negatives that is itself random: ``Beta(k + 1, n - k)`` for
  continuous scores (the order statistic of a conformal rule).

So each kind gets its own threshold, the **largest** ``k`` for which the
one-sided 95% Clopper-Pearson upper bound on the rate, ``k`` false positives
among that kind's ``n`` negatives, is at most the rate asked for; the decision
uses the highest of the kinds' thresholds (the hardest kind decides).  Because
``P(Beta(k + 1, n - k) > a) = P(Binomial(n, a) <= k)``, which is what the
Clopper-Pearson bound caps at 5%, this is the finite-sample guarantee of split
conformal prediction: for each kind, the rate on fresh negatives exchangeable
with that kind's calibration rows exceeds ``max_fpr`` with probability at most
5% over the draw of the calibration set.  A kind with too few negatives to
certify the rate even with none allowed (``n < log(0.05) / log(1 - max_fpr)``:
299 for 1%, 2,995 for 0.1%) refuses the decision: :class:`Decision` says so
instead of giving a threshold.

What is certified is the rate on images like each kind's calibration
negatives; an image of a kind the probe was not calibrated on is not covered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95


def upper_bound(false_positives: int, negatives: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate with ``false_positives`` among ``negatives``."""
    k, n = int(false_positives), int(negatives)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= false positives <= negatives and negatives >= 1, got {k} of {n}")
    return 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))


def allowed_false_positives(negatives: int, max_fpr: float, confidence: float = CONFIDENCE) -> int | None:
    """The most false positives among ``negatives`` whose upper bound stays at or under ``max_fpr``;
    ``None`` when even none is too many (the calibration set is too small to certify ``max_fpr``)."""
    check_rate(max_fpr)
    if upper_bound(0, negatives, confidence) > max_fpr:
        return None
    k = 0
    while k + 1 < negatives and upper_bound(k + 1, negatives, confidence) <= max_fpr:
        k += 1
    return k


def negatives_needed(max_fpr: float, confidence: float = CONFIDENCE) -> int:
    """The fewest negatives of a kind that certify ``max_fpr`` (with no false positive among them)."""
    check_rate(max_fpr)
    n = max(1, math.ceil(math.log(1 - confidence) / math.log1p(-max_fpr)) - 1)
    while upper_bound(0, n, confidence) > max_fpr:
        n += 1
    return n


@dataclass(frozen=True)
class KindBound:
    """One kind of negative behind a decision: how many, how many lie above the decision's threshold, and
    the rate certified on that kind (``None`` when the kind is too small to certify the rate asked for)."""

    kind: str
    negatives: int
    above: int | None            # calibration negatives of this kind above the final threshold
    allowed: int | None          # false positives the kind's own threshold allows
    certified: float | None      # the upper bound of ``above`` of ``negatives``

    def as_dict(self) -> dict:
        return {"kind": self.kind, "negatives": self.negatives, "above_threshold": self.above,
                "false_positives_allowed": self.allowed, "certified_fpr": self.certified}


@dataclass(frozen=True)
class Decision:
    """A decision "score > threshold" at a false-positive rate, or the reason it is refused."""

    max_fpr: float
    threshold: float | None      # None: refused
    kinds: tuple[KindBound, ...]
    confidence: float = CONFIDENCE

    @property
    def refused(self) -> bool:
        return self.threshold is None

    def reason(self) -> str:
        """Why the decision is refused, naming the kinds and what they can certify ('' if it is not)."""
        if not self.refused:
            return ""
        small = [k for k in self.kinds if k.allowed is None]
        need = negatives_needed(self.max_fpr, self.confidence)
        return "; ".join(f"{k.negatives} '{k.kind}' calibration negatives certify at best "
                         f"{upper_bound(0, k.negatives, self.confidence):.2%}" for k in small) + \
            f" ({need} per kind are needed for {self.max_fpr:g}; refit with more, or ask a larger --max-fpr)"

    def apply(self, scores) -> np.ndarray:
        """Positive decisions for ``scores`` (an error if the decision is refused)."""
        if self.refused:
            raise ValueError(f"no decision at FPR <= {self.max_fpr:g}: {self.reason()}")
        return np.asarray(scores, dtype=np.float64) > self.threshold

    def as_dict(self) -> dict:
        return {"max_fpr": self.max_fpr, "confidence": self.confidence, "refused": self.refused,
                "threshold": self.threshold, "reason": self.reason(), "kinds": [k.as_dict() for k in self.kinds]}


def certified_decision(negatives: dict[str, np.ndarray], max_fpr: float,
                       confidence: float = CONFIDENCE) -> Decision:
    """The decision "score > threshold" whose false-positive rate is certified at ``max_fpr`` on every kind
    of negative: ``negatives`` maps each kind to its calibration scores (see the module docstring)."""
    check_rate(max_fpr)
    if not negatives:
        raise ValueError("a decision needs calibration negatives of at least one kind")
    own, allowed = {}, {}
    for kind, scores in negatives.items():
        s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
        if len(s) == 0 or not np.isfinite(s).all():
            raise ValueError(f"calibration scores of kind {kind!r}: {len(s)} scores, all finite needed")
        allowed[kind] = allowed_false_positives(len(s), max_fpr, confidence)
        if allowed[kind] is not None:
            own[kind] = float(s[allowed[kind]])   # the (k+1)-th largest: at most k lie strictly above it
    if len(own) < len(negatives):
        return Decision(max_fpr, None, tuple(KindBound(k, len(v), None, allowed[k], None)
                                             for k, v in negatives.items()), confidence)
    threshold = max(own.values())
    bounds = []
    for kind, scores in negatives.items():
        above = int((np.asarray(scores, dtype=np.float64) > threshold).sum())
        bounds.append(KindBound(kind, len(scores), above, allowed[kind], upper_bound(above, len(scores), confidence)))
    return Decision(max_fpr, threshold, tuple(bounds), confidence)


def check_rate(max_fpr: float) -> None:
    """Raise a ValueError unless ``max_fpr`` is a finite number strictly between 0 and 1."""
    if isinstance(max_fpr, bool) or not isinstance(max_fpr, (int, float, np.floating)) \
            or not math.isfinite(max_fpr) or not 0 < max_fpr < 1:
        raise ValueError(f"a false-positive rate lies strictly between 0 and 1, got {max_fpr!r}")

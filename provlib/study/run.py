"""A run of the study, resolved once: its parameter values and its targets.

:class:`Run` holds the values a run was given (a profile's, see :mod:`.profiles`,
or those a notebook declares) and is what every study function takes, either
itself or one of its targets: :meth:`Run.target` gives a :class:`Target`, which
works out once, and keeps, what every step reads: the target's configuration,
split manifest, evaluated image sets, model and the noise stream of each split.

A notebook's run holds only the parameters the notebook declares
(:meth:`Run.declared`): reading any other one is an error that names it, so a
parameters cell always lists everything its notebook depends on.

Splits are named ``base[#count][@codec]``: a base split (``member``,
``heldout``, ``external``, ``generated`` or ``open:<generator>``), a seeded
subset of ``count`` of its images, re-encoded by ``codec``
(:func:`parse_split`).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..checks import positive_int
from ..data import CODECS, ImageSet, SplitManifest
from ..seeds import stream_seed
from .generators import get_generator
from .profiles import PROFILES, check_parameter, check_profile, get_profile
from .targets import TargetConfig, TargetModel, evaluated_sets, get_target, resolve, target_manifest


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()   # a parameter a notebook did not declare


@dataclass(frozen=True, eq=False, repr=False)
class Run:
    """The parameter values of one run (see :data:`provlib.study.profiles.PROFILES` for what each means)."""

    profile: str
    seed: int
    targets: tuple
    latent_targets: tuple
    n_generated: int
    sampler_steps: int
    timestep_stride: int
    probe_train_frac: float
    n_bootstrap: int
    open_world: tuple
    n_open_world: int
    n_robust: int
    sedid_targets: tuple
    n_sedid: int
    attribution_sources: tuple
    suspects_per_role: int
    n_keys: int
    n_keys_max: int
    probes: tuple
    n_fresh: int

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "Run":
        """Every value of profile ``profile``, with ``overrides`` (checked like the batch driver's ``-p``)."""
        return cls(**_as_fields(get_profile(profile, **overrides)))

    @classmethod
    def declared(cls, profile: str, **values) -> "Run":
        """A notebook's run: exactly the ``values`` its parameters cell declares (each checked), labelled by
        ``profile`` (the output folders); every other parameter is unset and reading it is an error."""
        check_parameter("profile", profile)
        for name, value in values.items():
            if name not in PROFILES[profile] or name == "profile":
                raise ValueError(f"unknown parameter {name!r}; known: {sorted(PROFILES[profile])}")
            check_parameter(name, value)
        check_profile(values)
        given = {name: UNSET for name in PROFILES[profile]} | values | {"profile": profile}
        return cls(**_as_fields(given))

    def replace(self, **changes) -> "Run":
        """A copy with ``changes`` (each checked); unset parameters stay unset."""
        for name, value in changes.items():
            check_parameter(name, value)
        return type(self)(**{**self._raw(), **_as_fields(changes)})

    # ----------------------------------------------------------------- values
    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if value is UNSET:
            raise AttributeError(f"this run was not given the parameter {name!r}: declare it in the notebook's "
                                 "parameters cell (and pass it to report.setup)")
        return value

    def _raw(self) -> dict:
        return {f.name: object.__getattribute__(self, f.name) for f in dataclasses.fields(self)}

    def values(self) -> dict:
        """The parameters this run was given, as plain values (lists for sequences)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._raw().items() if v is not UNSET}

    def overrides(self) -> dict:
        """The values that differ from those of the profile the run is labelled with."""
        base = PROFILES.get(object.__getattribute__(self, "profile"), {})
        return {k: v for k, v in self.values().items() if k in base and v != base[k]}

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self._raw() == other._raw()

    def __hash__(self) -> int:
        return hash(tuple(self._raw().items()))

    def __repr__(self) -> str:
        return "Run(" + ", ".join(f"{k}={v!r}" for k, v in self._raw().items() if v is not UNSET) + ")"

    # ----------------------------------------------------------------- what the values resolve to
    @property
    def grid(self) -> np.ndarray:
        """The trajectory grid: every ``timestep_stride``-th step of 0..999."""
        return np.arange(0, 1000, positive_int(self.timestep_stride, "timestep_stride"))

    def target(self, name: str | None = None) -> "Target":
        """Target ``name`` of this run (default: its first target), resolved once per run."""
        name = name or self.targets[0]
        cache = self.__dict__.setdefault("_resolved", {})
        if name not in cache:
            cache[name] = Target(self, get_target(name))
        return cache[name]

    def train_mask(self, n: int, stream: str) -> np.ndarray:
        """The training rows (a share ``probe_train_frac``) of one class of ``n`` rows, seeded by ``stream``."""
        return train_mask(n, self.probe_train_frac, self.seed, stream)


@dataclass(frozen=True, eq=False)
class Target:
    """One target of a run: what every step of the study reads, worked out once."""

    run: Run
    config: TargetConfig

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def manifest(self) -> SplitManifest:
        """Member, held-out and external splits of the embedded datasets, drawn from the run seed."""
        return target_manifest(self.config, self.run.seed)

    @cached_property
    def image_sets(self) -> dict[str, ImageSet]:
        """The real images the study evaluates the target with: ``member`` (a seeded subset when the
        target evaluates fewer than it trained on), ``heldout`` and ``external``."""
        return evaluated_sets(self.config, self.run.seed, self.manifest)

    @cached_property
    def shifted_positions(self) -> np.ndarray:
        """Positions, among the held-out images, of those the subtle-shift setting re-acquires (:data:`SHIFTED`):
        ``config.n_shifted`` of them, drawn so that the split's own training rows (:meth:`Run.train_mask` of
        stream ``probe:shifted``, as for any split) are held-out training rows and its evaluation rows held-out
        evaluation rows.  A method's scores on an image with and without the shift are then both training or
        both evaluation scores, and the two settings can be compared row for row (see
        :meth:`matched_heldout_rows`)."""
        n = len(self.image_sets["heldout"])
        k = min(self.config.n_shifted, n)
        held, own = self.run.train_mask(n, "probe:heldout"), self.run.train_mask(k, f"probe:{SHIFTED}")
        rng = np.random.default_rng(stream_seed(self.run.seed, SHIFTED))
        pos = np.empty(k, dtype=np.int64)
        for part in (True, False):
            pool = np.flatnonzero(held == part)
            pos[own == part] = np.sort(rng.choice(pool, int((own == part).sum()), replace=False))
        return pos

    @cached_property
    def evaluated(self) -> str:
        """A digest of what the target is evaluated on: its configuration and the ids and pixels of each
        evaluated split (and the held-out positions the shifted split re-acquires).  Aggregate results
        (tables, probes) are cached under it, so a change in which images a target evaluates, wherever
        in the code it is made, recomputes them."""
        h = hashlib.sha256(repr(dataclasses.asdict(self.config)).encode())
        for split, images in sorted(self.image_sets.items()):
            h.update(split.encode())
            h.update(np.ascontiguousarray(images.ids).tobytes())
            h.update(images.images.numpy().tobytes())
        h.update(self.shifted_positions.tobytes())
        return h.hexdigest()

    def matched_heldout_rows(self) -> np.ndarray:
        """For each evaluation row of the shifted split (in order), its index among the held-out split's
        evaluation rows: the same image before the shift."""
        n = len(self.image_sets["heldout"])
        held_eval = np.flatnonzero(~self.run.train_mask(n, "probe:heldout"))
        own = self.run.train_mask(len(self.shifted_positions), f"probe:{SHIFTED}")
        return np.searchsorted(held_eval, self.shifted_positions[~own])

    @property
    def model(self) -> TargetModel:
        """The target's model: shipped, cached or trained now (:func:`provlib.study.targets.resolve`)."""
        return resolve(self.name, self.run.seed)

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def load(self, device=None):
        """``(unet, scheduler)`` of the target model."""
        return self.model.load(device=device)

    def open(self, device=None):
        """The target model behind the one model interface (:class:`provlib.models.interface.DiffusionModel`)."""
        return self.model.open(device=device)

    def source_of(self, split: str) -> str:
        """The noise stream of a split's images: the dataset they come from; ``generated`` for the model's
        samples, ``generated:<name>`` for an open-world generator's (``open:<name>``).  A codec or a subset
        (``member#100@jpeg75``) keeps its images' ids and stream."""
        base, _, _ = parse_split(split)
        if base.startswith("open:"):
            get_generator(base[len("open:"):])
            return "generated:" + base[len("open:"):]
        datasets = self.manifest.datasets
        if base == SHIFTED:   # held-out images through another pipeline: the same images, the same noise
            return datasets["heldout"]
        if base not in [*datasets, "generated"]:
            raise ValueError(f"unknown split {split!r}; choose from {[*datasets, 'generated']} or open:<generator>")
        return "generated" if base == "generated" else datasets[base]

    def noise_seed(self, split: str) -> int:
        """The run seed of the noise stream of ``split`` (:func:`source_of`)."""
        return stream_seed(self.run.seed, self.source_of(split))


SHIFTED = "shifted"   # the split of held-out images re-acquired through another pipeline (provlib.acquisition.reacquire)


def _as_fields(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


# ----------------------------------------------------------------------------- splits and rows

def parse_split(split: str) -> tuple[str, int | None, str]:
    """``"heldout#150@jpeg75"`` -> ``("heldout", 150, "jpeg75")``: the base split, the size of a seeded
    subset of it (``None``: all of it) and the codec (``"none"`` without ``@``)."""
    rest, _, codec = split.partition("@")
    base, _, count = rest.partition("#")
    if codec and codec not in CODECS:
        raise ValueError(f"split {split!r}: unknown codec {codec!r}; choose from {CODECS}")
    if count and (not count.isdigit() or int(count) < 1):
        raise ValueError(f"split {split!r}: the subset size after '#' must be a positive integer")
    return base, int(count) if count else None, codec or "none"


def split_name(base: str, count: int | None = None, codec: str = "none") -> str:
    """The inverse of :func:`parse_split`: ``("heldout", 150, "jpeg75")`` -> ``"heldout#150@jpeg75"``."""
    return base + (f"#{count}" if count else "") + (f"@{codec}" if codec != "none" else "")


def subset_positions(seed: int, base: str, total: int, n: int) -> np.ndarray:
    """Sorted positions of the seeded ``n``-image subset of split ``base`` (of ``total`` images)."""
    rng = np.random.default_rng(stream_seed(seed, f"subset:{base}"))
    return np.sort(rng.choice(total, min(n, total), replace=False))


def train_mask(n: int, frac: float, seed: int, stream: str) -> np.ndarray:
    """Boolean mask of the rows (of one class) that train probes and thresholds; the rest evaluate."""
    if not 0 < frac < 1:
        raise ValueError(f"probe_train_frac must lie in (0, 1), got {frac}")
    n_train = int(round(frac * n))
    if n_train == 0 or n_train == n:
        raise ValueError(f"{n} rows split at {frac} leave an empty train or evaluation split")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(stream_seed(seed, stream)).permutation(n)[:n_train]] = True
    return mask

"""Named parameter sets for the batch run.

``tiny`` runs every notebook in seconds (tests, nbval); ``cpu`` is the
embedded default study (the main job, minutes on a 2-core CPU).  A profile
holds literals only.  A notebook declares, as papermill parameters, the names
it reads, with the tiny profile's values as defaults; the batch driver gives
them the selected profile's values.  :class:`provlib.study.run.Run` holds them.
"""
from __future__ import annotations

from .. import paths
from .generators import GENERATORS
from .suspects import SOURCES as CLASS_SOURCES
from .suspects_text import SOURCES as TEXT_SOURCES
from .targets import TARGETS

SOURCES = (*CLASS_SOURCES, *TEXT_SOURCES)   # the attribution study's source models, both settings

PROFILES: dict[str, dict] = {
    "tiny": {
        "profile": "tiny",
        "seed": 0,
        "targets": ["tiny"],    # target models (provlib.study.targets); the first is the primary one
        "latent_targets": ["tiny-sd", "tiny-sd-empty"],  # latent text-to-image targets: captions known, empty prompt
        "n_generated": 100,     # the target model's own samples
        "open_world": ["tiny-ddim", "tiny-finetune", "tiny-seed1", "tiny-vae"],  # unseen generators (study.generators)
        "n_open_world": 100,    # samples of each unseen generator
        "n_robust": 24,         # images per class re-encoded for the codec robustness tables
        "sedid_targets": ["tiny", "tiny-mn", "tiny-dg"],  # SeDID's datasets: one target each (FM, MNIST, digits)
        "n_sedid": 40,          # generated and training images per SeDID dataset
        "attribution_sources": ["fmc-src-a", "sd-src-b"],  # source models of the attribution study: class labels
                                # (study.suspects), text prompts (study.suspects_text)
        "suspects_per_role": 2, # suspect models per rho and role (shadow, test)
        "n_keys": 20,           # key samples (and watermark generations) behind each conf
        "n_keys_max": 30,       # key samples queried per strategy (Figure 7's largest N)
        "sampler_steps": 50,    # DDPM ancestral steps for the generated set
        "timestep_stride": 100, # trajectory grid: every stride-th step of 0..999
        "probe_train_frac": 0.5,
        "n_bootstrap": 200,
        "probes": ["fm500"],    # shipped origin probes (provlib/embedded/probes/<target>) whose rates are checked
        "n_fresh": 60,          # fresh images per kind of negative behind each realised false-positive rate
    },
    "cpu": {
        "profile": "cpu",
        "seed": 0,
        "targets": ["fm500", "fm1000"],   # fm2000 (every attack at chance) too: -p targets [...]; +9 minutes
        "latent_targets": ["sd1000", "sd1000-empty"],
        "n_generated": 500,
        "open_world": ["fm500-ddim50", "fm500-finetune", "fm-seed1", "fm-attn", "fm-vae"],
        "n_open_world": 200,
        "n_robust": 100,
        "sedid_targets": ["fm500", "mn500", "dg500"],
        "n_sedid": 250,
        "attribution_sources": ["fmc-src-a", "fmc-src-b", "sd-src-a", "sd-src-b"],
        "suspects_per_role": 5,
        "n_keys": 30,
        "n_keys_max": 100,
        "sampler_steps": 100,
        "timestep_stride": 50,
        "probe_train_frac": 0.5,
        "n_bootstrap": 1000,
        "probes": ["fm500", "fm1000"],
        "n_fresh": 1000,
    },
}


# what each parameter must be: (type, lower bound, upper bound, description); bounds inclusive unless noted
RULES: dict[str, tuple] = {
    "seed": (int, 0, None, "a non-negative integer"),
    "n_generated": (int, 1, None, "a positive integer"),
    "n_open_world": (int, 1, None, "a positive integer"),
    "n_robust": (int, 4, None, "an integer of at least 4"),
    "n_sedid": (int, 10, None, "an integer of at least 10"),
    "suspects_per_role": (int, 2, 5, "an integer in 2..5 (5 suspects per rho and role are shipped)"),
    "n_keys": (int, 2, None, "an integer of at least 2"),
    "n_keys_max": (int, 2, None, "an integer of at least 2"),
    "sampler_steps": (int, 1, 1000, "an integer in 1..1000"),
    "timestep_stride": (int, 1, 999, "an integer in 1..999 (the grid is every stride-th step of 0..999)"),
    "probe_train_frac": (float, 0.0, 1.0, "a number strictly between 0 and 1"),
    "n_bootstrap": (int, 1, None, "a positive integer"),
    "n_fresh": (int, 10, None, "an integer of at least 10"),
}


SEQUENCES = ("targets", "latent_targets", "sedid_targets", "attribution_sources", "open_world", "probes")   # lists of names


def check_parameter(name: str, value):
    """``value`` if it is valid for parameter ``name`` (see :data:`RULES`), else a ValueError naming both."""
    if name not in RULES and name not in SEQUENCES and name != "profile":
        raise ValueError(f"unknown parameter {name!r}; known: {sorted(PROFILES['tiny'])}")
    if name == "profile":
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r}; choose from {sorted(PROFILES)}")
        return value
    if name in ("targets", "sedid_targets", "latent_targets"):
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"parameter {name} must be a non-empty list of target names, got {value!r}")
        known = sorted(n for n, t in TARGETS.items() if (t.kind == "latent") == (name == "latent_targets"))
        unknown = [v for v in value if v not in known]
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"parameter {name} {list(value)}: unknown or repeated names; known: {known}")
        return list(value)
    if name == "attribution_sources":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value \
                or not set(value) <= set(SOURCES) or len(set(value)) != len(value):
            raise ValueError(f"parameter attribution_sources must be a non-empty list of distinct source models "
                             f"from {list(SOURCES)}, got {value!r}")
        return list(value)
    if name == "open_world":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"parameter open_world must be a non-empty list of generator names, got {value!r}")
        unknown = [v for v in value if v not in GENERATORS]
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"parameter open_world {list(value)}: unknown or repeated names; "
                             f"known: {sorted(GENERATORS)}")
        return list(value)
    if name == "probes":
        shipped = sorted(p.name for p in paths.EMBEDDED_PROBES_DIR.iterdir() if (p / "probe.json").is_file())
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value \
                or not set(value) <= set(shipped) or len(set(value)) != len(value):
            raise ValueError(f"parameter probes must be a non-empty list of distinct shipped probes from {shipped}, "
                             f"got {value!r}")
        return list(value)
    kind, lo, hi, what = RULES[name]
    ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"parameter {name} must be {what}, got {value!r} ({type(value).__name__})")
    if kind is float:
        inside = lo < value < hi
    else:
        inside = (lo is None or value >= lo) and (hi is None or value <= hi)
    if not inside:
        raise ValueError(f"parameter {name} must be {what}, got {value!r}")
    return value


def get_profile(name: str, **overrides) -> dict:
    """A copy of profile ``name`` with ``overrides`` (``None`` values keep the profile's).

    Unknown profile or parameter names, and values out of range (a zero
    stride, a negative count, a fraction outside (0, 1)), are an error.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    params = dict(PROFILES[name])
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for profile {name!r}; known: {sorted(params)}")
    params.update(overrides)
    for key, value in overrides.items():
        check_parameter(key, value)
    check_profile(params)
    return params


def check_profile(values: dict) -> None:
    """The checks that involve two parameters (of those ``values`` holds)."""
    if "n_keys" in values and "n_keys_max" in values and values["n_keys"] > values["n_keys_max"]:
        raise ValueError(f"n_keys ({values['n_keys']}) cannot exceed n_keys_max ({values['n_keys_max']}): "
                         "only n_keys_max keys are queried")

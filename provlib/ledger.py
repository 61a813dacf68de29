"""The pass ledger: what every UNet computed in a run, and the floor that work could cost.

While a ledger records (:func:`recording`, or the batch driver's ``PROVLIB_LEDGER_DIR``),
every call of a diffusers UNet (``UNet2DModel``, ``UNet2DConditionModel``) in the
process is counted: a **forward** pass per row of its input and, when a gradient
flows back through the output, a **backward** pass per row.  The counts go to the
innermost open :func:`step` (a cached computation names its step after the
artifact it computes, :func:`provlib.io.cached`; work outside any step is counted
under ``"-"``), split by the UNet's **architecture** (its class, config and the
shapes of one input row: the per-pass cost depends on these, not on the weights).
Results read from the cache run no UNet and count nothing: the ledger records
what was computed, not what was used.

The **floor** is what the same passes cost at the best per-row time of each
architecture (:func:`measure`: forward without gradients, and forward + backward
to the parameters, timed at several batch sizes in the same run; a backward pass
costs its measured forward + backward, a forward-only pass its forward):
``floor = backward rows x t_fb + (forward - backward) rows x t_f``.  The batch
driver measures every shipped architecture once at the start of a run and shows,
per notebook and in total, passes, seconds, floor and efficiency = floor / seconds
(:mod:`provlib.report.index`).

Each process writes its counts to ``<PROVLIB_LEDGER_DIR>/<pid>.json`` (atomically,
at the end of each step, at most every few seconds while counting, and at exit),
so the driver reads the kernels' ledgers after each notebook.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import statistics
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

ENV = "PROVLIB_LEDGER_DIR"
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
NO_STEP = "-"
FLUSH_SECONDS = 5.0
BATCH_SIZES = (1, 8, 32, 128)   # rows per call timed by :func:`measure`


# ---------------------------------------------------------------- architectures


def _plain(value):
    """A config value as JSON keeps it (tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def arch_spec(unet: torch.nn.Module, row_shapes: dict) -> dict:
    """What the per-pass cost of ``unet`` depends on: its class, config (without diffusers' private keys) and
    the shape of one row of each input (``sample``, and ``class_labels`` or ``encoder_hidden_states``)."""
    config = {k: _plain(v) for k, v in dict(unet.config).items() if not k.startswith("_")}
    return {"class": type(unet).__name__, "config": config,
            "rows": {k: list(v) for k, v in sorted(row_shapes.items())},
            "dtype": str(next(unet.parameters()).dtype).removeprefix("torch.")}


def arch_key(spec: dict) -> str:
    """A short name of an architecture: the hash of its :func:`arch_spec`."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def arch_label(spec: dict) -> str:
    """A readable name: class, image rows and width, e.g. ``UNet2DModel 1x28x28 c32-64``."""
    sample = "x".join(map(str, spec["rows"].get("sample", [])))
    widths = "-".join(map(str, spec["config"].get("block_out_channels", [])))
    cond = " text" if "encoder_hidden_states" in spec["rows"] else (
        " class" if "class_labels" in spec["rows"] else "")
    return f"{spec['class']} {sample} c{widths}{cond}"


# ---------------------------------------------------------------- counting


@dataclass
class Count:
    """Passes (rows) of one (step, architecture)."""

    forward: int = 0
    backward: int = 0

    def to_dict(self) -> dict:
        return {"forward": self.forward, "backward": self.backward}


@dataclass
class Ledger:
    """The counts of one process: ``counts[(step, arch)]`` and each architecture's spec."""

    counts: dict = field(default_factory=dict)
    archs: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)       # the open steps, innermost last
    step_seconds: dict = field(default_factory=dict)  # step -> seconds spent in it (steps inside it included)
    own_seconds: dict = field(default_factory=dict)   # step -> seconds spent in it outside any inner step
    inner: list = field(default_factory=list)         # per open step, the seconds of the steps inside it so far
    computed: set = field(default_factory=set)        # "kind/key" of the cached artifacts computed
    read: set = field(default_factory=set)            # ... and of those used (computed here or not)

    def count(self, arch: str, forward: int = 0, backward: int = 0) -> None:
        step = self.steps[-1] if self.steps else NO_STEP
        c = self.counts.setdefault((step, arch), Count())
        c.forward += forward
        c.backward += backward

    def to_dict(self) -> dict:
        rows = [{"step": s, "arch": a, **c.to_dict()} for (s, a), c in self.counts.items()]
        return {"pid": os.getpid(), "archs": self.archs, "counts": rows,
                "step_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
                "own_seconds": {k: round(v, 3) for k, v in self.own_seconds.items()},
                "computed": sorted(self.computed), "read": sorted(self.read)}


_ledger: Ledger | None = None
_hook = None
_last_flush = 0.0
_arch_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # unet -> (arch key, row shapes): built once


def active() -> Ledger | None:
    """The process's ledger while one records, else None."""
    return _ledger


def _row_shapes(args, kwargs) -> tuple[dict, int]:
    sample = args[0] if args else kwargs.get("sample")
    shapes = {"sample": tuple(sample.shape[1:])}
    for name in ("class_labels", "encoder_hidden_states"):
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            shapes[name] = tuple(value.shape[1:])
    return shapes, _rows(sample)


def _rows(x: torch.Tensor) -> int:
    """Rows of ``x``, counting those a ``torch.func`` transform (vmap) hides behind a wrapper."""
    visible = x
    try:
        from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor
        while is_functorch_wrapped_tensor(x):
            x = get_unwrapped(x)
    except ImportError:  # pragma: no cover - older torch
        pass
    per_row = max(1, visible[0].numel()) if len(visible) else 1
    return max(len(visible), x.numel() // per_row)


def _on_forward(module, args, kwargs, output) -> None:
    if _ledger is None or type(module).__name__ not in UNET_CLASSES:
        return
    shapes, n = _row_shapes(args, kwargs)
    known = _arch_of.get(module)
    if known is None or known[1] != shapes:
        spec = arch_spec(module, shapes)
        key = arch_key(spec)
        _ledger.archs.setdefault(key, spec)
        _arch_of[module] = known = (key, shapes)
    key = known[0]
    _ledger.count(key, forward=n)
    out = getattr(output, "sample", output[0] if isinstance(output, tuple) else output)
    if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
        step = _ledger.steps[-1] if _ledger.steps else NO_STEP
        try:
            out.register_hook(lambda g, key=key, n=n, step=step: _on_backward(key, n, step))
        except RuntimeError:  # a tensor inside a torch.func transform: its grad runs the backward
            _ledger.count(key, backward=n)
    _maybe_flush()


def _on_backward(key: str, n: int, step: str) -> None:
    if _ledger is not None:
        c = _ledger.counts.setdefault((step, key), Count())
        c.backward += n


def start() -> Ledger:
    """Start counting in this process (idempotent); returns the ledger."""
    global _ledger, _hook
    if _ledger is None:
        _ledger = Ledger()
        _hook = torch.nn.modules.module.register_module_forward_hook(_on_forward, with_kwargs=True)
    return _ledger


def stop() -> Ledger | None:
    """Stop counting; returns what was counted."""
    global _ledger, _hook
    led = _ledger
    if _hook is not None:
        _hook.remove()
    _ledger, _hook = None, None
    _arch_of.clear()
    return led


@contextmanager
def recording() -> Iterator[Ledger]:
    """Count the UNet passes run inside the block (the ledger is stopped after it, even on error)."""
    if _ledger is not None:
        raise RuntimeError("a ledger is already recording in this process")
    led = start()
    try:
        yield led
    finally:
        stop()


@contextmanager
def step(name: str) -> Iterator[None]:
    """Count the passes run inside the block under ``name``, and time the block.

    A step inside another step counts its own passes (not the outer step's); its seconds are also inside
    the outer step's (``step_seconds``), and not in the outer step's own seconds (``own_seconds``).
    """
    led = _ledger
    if led is None:
        yield
        return
    led.steps.append(name)
    led.inner.append(0.0)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - t0
        inner = led.inner.pop()
        led.steps.pop()
        led.step_seconds[name] = led.step_seconds.get(name, 0.0) + elapsed
        led.own_seconds[name] = led.own_seconds.get(name, 0.0) + elapsed - inner
        if led.inner:
            led.inner[-1] += elapsed
        flush()


def artifact(kind: str, key: str, *, computed: bool) -> None:
    """Note a cached artifact this process computed (``computed``) or used (the order of notebooks is
    checked against these: a notebook must come after the notebooks that compute what it reads)."""
    if _ledger is not None:
        (_ledger.computed if computed else _ledger.read).add(f"{kind}/{key}")


# ---------------------------------------------------------------- the file each process writes


def directory() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def flush() -> Path | None:
    """Write this process's ledger to ``<PROVLIB_LEDGER_DIR>/<pid>.json`` (atomically); None without one."""
    global _last_flush
    folder = directory()
    if _ledger is None or folder is None:
        return None
    _last_flush = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    tmp = folder / f".{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(_ledger.to_dict(), sort_keys=True))
    os.replace(tmp, path)
    return path


def _maybe_flush() -> None:
    if time.monotonic() - _last_flush > FLUSH_SECONDS:
        flush()


def start_from_environment() -> None:
    """Start counting if the batch driver asked for a ledger (``PROVLIB_LEDGER_DIR``); written at exit."""
    if directory() is not None and _ledger is None:
        start()
        atexit.register(flush)


def read(folder: Path) -> list[dict]:
    """Every process ledger written under ``folder``."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("[0-9]*.json"))]


def totals(ledgers: Sequence[dict], steps: set | None = None) -> dict:
    """``{arch: {"forward", "backward"}}`` summed over the ledgers (only the ``steps`` named, if given), and the
    specs: ``(passes, archs)``."""
    passes: dict = {}
    archs: dict = {}
    for led in ledgers:
        archs.update(led["archs"])
        for row in led["counts"]:
            if steps is not None and row["step"] not in steps:
                continue
            p = passes.setdefault(row["arch"], {"forward": 0, "backward": 0})
            p["forward"] += row["forward"]
            p["backward"] += row["backward"]
    return passes, archs


# ---------------------------------------------------------------- the floor


def floor_seconds(passes: dict, speeds: dict) -> float | None:
    """Seconds the ``passes`` ({arch: forward, backward}) cost at ``speeds`` ({arch: t_f, t_fb} per row);
    None when an architecture that ran was not measured."""
    total = 0.0
    for arch, p in passes.items():
        if p["forward"] == 0 and p["backward"] == 0:
            continue
        if arch not in speeds:
            return None
        s = speeds[arch]
        total += p["backward"] * s["forward_backward"] + max(0, p["forward"] - p["backward"]) * s["forward"]
    return total


def build_unet(spec: dict) -> torch.nn.Module:
    """A UNet of the architecture ``spec`` with fresh weights (the per-pass cost does not depend on them)."""
    import diffusers
    cls = getattr(diffusers, spec["class"])
    return cls.from_config(spec["config"]).to(getattr(torch, spec["dtype"]))


def _inputs(spec: dict, n: int, gen: torch.Generator, dtype) -> tuple[torch.Tensor, torch.Tensor, dict]:
    rows = spec["rows"]
    x = torch.randn(n, *rows["sample"], generator=gen, dtype=dtype)
    t = torch.randint(0, 1000, (n,), generator=gen)
    kwargs = {}
    if "class_labels" in rows:
        kwargs["class_labels"] = torch.randint(0, int(spec["config"].get("num_class_embeds") or 1), (n,),
                                               generator=gen)
    if "encoder_hidden_states" in rows:
        kwargs["encoder_hidden_states"] = torch.randn(n, *rows["encoder_hidden_states"], generator=gen, dtype=dtype)
    return x, t, kwargs


def measure(spec: dict, batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = 3, seed: int = 0) -> dict:
    """Best seconds per row of ``spec``'s UNet on this machine: ``forward`` (no gradients) and
    ``forward_backward`` (forward, then the backward to every parameter), each the median of ``repeats``
    timed calls after one warm-up, at the batch size where it is fastest (also returned)."""
    unet = build_unet(spec).eval()
    dtype = next(unet.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)
    best = {}
    for n in batch_sizes:
        x, t, kwargs = _inputs(spec, n, gen, dtype)
        for mode in ("forward", "forward_backward"):
            times = []
            for r in range(repeats + 1):
                t0 = time.perf_counter()
                if mode == "forward":
                    with torch.no_grad():
                        unet(x, t, **kwargs)
                else:
                    unet.zero_grad(set_to_none=True)
                    unet(x, t, **kwargs).sample.pow(2).mean().backward()
                if r:  # the first call warms up
                    times.append(time.perf_counter() - t0)
            per_row = statistics.median(times) / n
            if mode not in best or per_row < best[mode][0]:
                best[mode] = (per_row, n)
    return {"forward": best["forward"][0], "forward_backward": best["forward_backward"][0],
            "batch_forward": best["forward"][1], "batch_forward_backward": best["forward_backward"][1]}


def shipped_specs(models_dir: Path) -> dict:
    """``{arch key: spec}`` of every UNet under ``models_dir`` (the embedded pipelines), built from the configs
    alone, with the input rows each kind of model is called with: a pixel model's images (and class label),
    a latent model's latents and its tokenizer's ``model_max_length`` text-encoder states."""
    import diffusers

    specs = {}
    for d in sorted(p for p in Path(models_dir).iterdir() if (p / "unet" / "config.json").is_file()):
        config = json.loads((d / "unet" / "config.json").read_text())
        cls = getattr(diffusers, config["_class_name"], None)
        if cls is None or config["_class_name"] not in UNET_CLASSES:
            continue
        unet = cls.from_config(config)
        size = unet.config.sample_size
        rows = {"sample": (unet.config.in_channels, size, size)}
        if getattr(unet.config, "cross_attention_dim", None):
            tokenizer = json.loads((d / "tokenizer" / "tokenizer_config.json").read_text())
            rows["encoder_hidden_states"] = (int(tokenizer["model_max_length"]), unet.config.cross_attention_dim)
        elif getattr(unet.config, "num_class_embeds", None):
            rows["class_labels"] = ()
        spec = arch_spec(unet, rows)
        specs.setdefault(arch_key(spec), spec)
    return specs


def measure_all(specs: dict, threads: int = 1, **kwargs) -> dict:
    """:func:`measure` of every spec with ``threads`` torch threads (restored after): ``{key: speeds}``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {key: {"label": arch_label(spec), **measure(spec, **kwargs)} for key, spec in specs.items()}
    finally:
        torch.set_num_threads(saved)


def unet_steps(ledgers: Sequence[dict]) -> tuple[dict, float]:
    """The passes counted inside steps that ran a UNet (``{arch: forward, backward}``), and those steps' own
    seconds (:func:`step`; passes outside any step are not timed, and not in either)."""
    names = {row["step"] for led in ledgers for row in led["counts"]
             if row["step"] != NO_STEP and (row["forward"] or row["backward"])}
    seconds = sum(led.get("own_seconds", {}).get(n, 0.0) for led in ledgers for n in names)
    return totals(ledgers, names)[0], seconds


def summarize(ledgers: Sequence[dict], speeds: dict | None, threads: int) -> dict:
    """One notebook's ledger for the run index: passes per architecture and in total, seconds per step, and
    the floor (its passes at ``speeds``, one-thread seconds per row, shared by ``threads`` cores); and the
    same for the steps that ran a UNet alone (``unet_seconds``: their own seconds; ``unet_floor_seconds``),
    so that what the UNet work costs stands apart from the rest of the notebook (classifiers, probe fits,
    bootstraps, plots: work with no floor here)."""
    passes, archs = totals(ledgers)
    steps: dict = {}
    for led in ledgers:
        for name, seconds in led["step_seconds"].items():
            steps[name] = round(steps.get(name, 0.0) + seconds, 3)
    floor = floor_seconds(passes, speeds) if speeds is not None else None
    in_steps, unet_seconds = unet_steps(ledgers)
    unet_floor = floor_seconds(in_steps, speeds) if speeds is not None else None
    return {"passes": {a: {"label": arch_label(archs[a]), **p} for a, p in sorted(passes.items())},
            "forward": sum(p["forward"] for p in passes.values()),
            "backward": sum(p["backward"] for p in passes.values()),
            "floor_seconds": None if floor is None else round(floor / max(1, threads), 2),
            "unet_seconds": round(unet_seconds, 2),
            "unet_floor_seconds": None if unet_floor is None else round(unet_floor / max(1, threads), 2),
            "step_seconds": steps,
            "computed": sorted({a for led in ledgers for a in led["computed"]}),
            "read": sorted({a for led in ledgers for a in led["read"]})}

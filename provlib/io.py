"""Atomic, pickle-free artifacts and the config-keyed cache.

Every file provlib writes appears under its final name only once it is
complete (written to a temporary sibling, then ``os.replace``d), so an
interrupted run never leaves a half-written artifact that a re-run would trust.

Nothing provlib loads can execute code.  Tensors are stored as safetensors (a
header and raw buffers, no pickle), with a JSON document in the file's
metadata for everything that is not a tensor:

- :func:`save_tensors` / :func:`load_tensors`: a flat ``{name: tensor}`` plus a
  JSON dict (features, samples; later probes and classifiers);
- :func:`save_state` / :func:`load_state`: a nested state (dicts, lists,
  tuples, numbers, strings, tensors), such as a training checkpoint with its
  optimizer and RNG states: the tensors go into the safetensors body, the
  structure into the JSON.

A file that is not a valid safetensors artifact of provlib (a planted pickle,
a truncated or foreign file) raises :class:`ArtifactError` naming the file.

The cache (:func:`cached`) keys each artifact by a hash of everything it
depends on; callers put the content hash of the model weights and of the
input images, and the :func:`code_version` of the code path that computed it,
into the key, so a retrained model or a changed kernel never reuses stale
results.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import ledger, paths

FORMAT = "provlib-artifact/1"
_META_KEY = "provlib"


class ArtifactError(ValueError):
    """A stored artifact that is unreadable, not provlib's, or not what its key says."""


# ----------------------------------------------------------------------------- atomic files

def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def replace_dir(dst: Path, fill: Callable[[Path], None]) -> Path:
    """Replace directory ``dst`` by one that ``fill(new)`` creates, never leaving ``dst`` half-written.

    ``fill`` creates the directory it is given (e.g. ``shutil.copytree(src, new)``)
    beside ``dst``.  Only once it returned is the old ``dst`` moved aside, the new
    one renamed into place and the old one deleted.  If ``fill`` fails, ``dst`` is
    untouched and the partial directory is removed.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    new, old = dst.with_name(f".{dst.name}.new-{tag}"), dst.with_name(f".{dst.name}.old-{tag}")
    try:
        fill(new)
        if not new.is_dir():
            raise ArtifactError(f"replacing {dst}: the new directory was not created")
        if dst.exists():
            os.replace(dst, old)
        os.replace(new, dst)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dst


# ----------------------------------------------------------------------------- tensors + JSON

def _prepare(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"artifact entry {name!r} is a {type(t).__name__}, not a tensor")
        out[str(name)] = t.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
    return out


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], meta: dict | None = None) -> Path:
    """Write ``tensors`` and the JSON-able ``meta`` to one safetensors file, atomically."""
    body = _prepare(tensors)
    header = {_META_KEY: json.dumps({"format": FORMAT, "meta": meta or {}}, sort_keys=True)}
    return atomic_write(Path(path), lambda p: save_file(body, str(p), metadata=header))


def load_tensors(path: Path, *, expect: Mapping[str, tuple] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a file written by :func:`save_tensors`.

    ``expect`` maps names to the shapes they must have (``None`` in a shape: any
    size); a missing name or another shape raises :class:`ArtifactError`.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as err:  # SafetensorError (a pickle, a truncated or foreign file), OSError
        raise ArtifactError(f"{path} is not a readable safetensors artifact ({err}). provlib never "
                            "unpickles files; delete it (or run `make clean-cache`) to recompute it") from err
    try:
        doc = json.loads(header[_META_KEY])
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
    except (KeyError, ValueError, AttributeError) as err:
        raise ArtifactError(f"{path} is a safetensors file but not a provlib artifact ({err}); "
                            "delete it to recompute it") from err
    for name, shape in (expect or {}).items():
        _expect_shape(path, tensors, name, shape)
    return tensors, doc["meta"]


def _expect_shape(path: Path, tensors: dict, name: str, shape: tuple) -> None:
    if name not in tensors:
        raise ArtifactError(f"{path} lacks the entry {name!r} (it has {sorted(tensors)}); delete it to recompute it")
    got = tuple(tensors[name].shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        raise ArtifactError(f"{path}: entry {name!r} has shape {got}, expected {tuple(shape)}; "
                            "delete it to recompute it")


# ----------------------------------------------------------------------------- nested states

def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{where}: dict key {k!r} of type {type(k).__name__} cannot be stored")
            items.append([k, _encode(v, tensors, f"{where}[{k!r}]")])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return obj.item()
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a pickle-free artifact")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
    return obj


def save_state(path: Path, state: Any) -> Path:
    """Write a nested state (dicts, lists, tuples, scalars, strings, tensors), atomically and pickle-free."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    return save_tensors(path, tensors, {"tree": tree})


def load_state(path: Path) -> Any:
    """The state written by :func:`save_state`."""
    tensors, meta = load_tensors(path)
    try:
        return _decode(meta["tree"], tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path} does not hold a provlib state ({err}); delete it to recompute it") from err


# ----------------------------------------------------------------------------- hashes and the cache

def config_key(config: dict) -> str:
    """Short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """sha256 over the dtypes, shapes and bytes of tensors (their content hash)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def code_version(*modules: ModuleType) -> str:
    """Hash of the code of ``modules`` (their syntax trees without docstrings) and of torch's version.

    Comments, docstrings and formatting do not change it; any change to what
    the code does does, so artifacts computed by older code are not reused.
    """
    h = hashlib.sha256(torch.__version__.encode())
    for module in modules:
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(module.__name__.encode())
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:16]


def artifact_dir(kind: str, config: dict) -> Path:
    """Cache folder of one artifact: ``<cache>/<kind>/<config hash>/`` holding ``config.json``."""
    d = paths.cache_dir() / kind / config_key(config)
    if not (d / "config.json").exists():
        atomic_write_text(d / "config.json", json.dumps(config, indent=1, sort_keys=True, default=str))
    return d


@contextmanager
def artifact_lock(directory: Path) -> Iterator[None]:
    """Hold ``<directory>/.lock`` (an OS file lock, waiting for it if another process holds it).

    Wrapped around "compute the artifact unless it exists": two processes sharing a
    cache (parallel notebooks or test workers) compute each artifact once, the second
    one waiting and then loading the first one's result.  Locks nest in the order the
    artifacts depend on each other, which is acyclic, so they cannot deadlock.  The
    lock is released when the process ends, even by SIGKILL; without ``fcntl``
    (Windows) there is no lock.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(directory / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_state(kind: str, config: dict, compute: Callable[[], Any]) -> Any:
    """The nested state (:func:`save_state`) cached for ``config``, else ``compute()``'s, stored atomically:
    :func:`cached` for results that are not a flat set of tensors (evaluated tables, probes' reports).
    A step of the pass ledger named ``kind``, and an artifact it records as computed or read."""
    path = artifact_dir(kind, config) / "result.safetensors"
    key = config_key(config)
    if not path.exists():
        with artifact_lock(path.parent):
            if not path.exists():
                with ledger.step(kind):
                    state = compute()
                ledger.artifact(kind, key, computed=True)
                save_state(path, state)
    ledger.artifact(kind, key, computed=False)
    return load_state(path)


def cache_path(kind: str, config: dict) -> Path:
    """Where :func:`cached` stores the artifact of ``config`` (whether or not it exists yet)."""
    return paths.cache_dir() / kind / config_key(config) / "result.safetensors"


def cached(kind: str, config: dict, compute: Callable[[], Mapping[str, torch.Tensor]], *,
           expect: Mapping[str, tuple] | None = None) -> dict[str, torch.Tensor]:
    """Load the tensors cached for ``config``, else ``compute()`` them and store them atomically.

    The computation is a step of the pass ledger (:mod:`provlib.ledger`), named ``kind``.

    The file records the hash of its key and how long ``compute()`` took
    (``seconds`` in its metadata, see :func:`cached_meta`): a file copied under
    another key, or one whose entries lack the ``expect``-ed shapes, raises
    :class:`ArtifactError`.
    """
    path = artifact_dir(kind, config) / "result.safetensors"
    key = config_key(config)
    if not path.exists():
        with artifact_lock(path.parent):
            if not path.exists():  # not computed by another process while this one waited
                start = time.perf_counter()
                with ledger.step(kind):
                    result = dict(compute())
                ledger.artifact(kind, key, computed=True)
                save_tensors(path, result, {"kind": kind, "key": key,
                                            "seconds": round(time.perf_counter() - start, 4)})
    ledger.artifact(kind, key, computed=False)
    tensors, meta = load_tensors(path, expect=expect)  # a fresh result is read back as a re-run will read it
    if meta.get("key") != key or meta.get("kind") != kind:
        raise ArtifactError(f"{path} was written for {meta.get('kind')}/{meta.get('key')}, not "
                            f"{kind}/{key} (moved or planted); delete it to recompute it")
    return tensors


def cached_meta(kind: str, config: dict) -> dict:
    """The metadata :func:`cached` stored with an artifact (``seconds``: how long computing it took)."""
    return load_tensors(cache_path(kind, config))[1]

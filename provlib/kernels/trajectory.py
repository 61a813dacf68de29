"""Trajectory features (Tracing the Roots, Algorithm 1).

For each image x0 and each timestep t of a grid, with a fresh noise
eps ~ N(0, I) per (image, t):

    x_t     = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    L_t     = || eps_theta(x_t, t) - eps ||^2          (sum over pixels)
    grad_x  = || d L_t / d x0 ||^2                     (w.r.t. the clean image)
    grad_theta = || d L_t / d theta ||^2               (all parameters, per sample)

Noise comes either from the caller (``noise`` of shape (N, T, C, H, W)) or
from a seed derived from (run seed, image id, t), so the features of an image
do not depend on the batch size, the order of images, or how a run is split
across processes.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch.func import functional_call, grad, vmap

from ..checks import names, positive_int
from ..progress import progress_bar
from ..runtime import default_device, keep_freed_memory
from ..seeds import noise_seed
from .condition import check_condition, check_input, rows as cond_rows, unet_kwargs
from .persample import PerSampleGradNorms, layer_names

FEATURES = ("loss", "grad_x", "grad_theta")
LAYERS = "grad_theta_layers"  # optional: per-layer ||d L_t / d theta_layer||^2, shape (N, T, n_layers)
METHODS = ("hooks", "func")

def seeded_noise(ids: Sequence[int], timesteps: Sequence[int], shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Noise of shape (len(ids), len(timesteps), *shape): one seeded generator per (id, t)."""
    out = torch.empty(len(ids), len(timesteps), *shape)
    gen = torch.Generator()
    for i, image_id in enumerate(ids):
        for j, t in enumerate(timesteps):
            gen.manual_seed(noise_seed(seed, image_id, t))
            out[i, j] = torch.randn(*shape, generator=gen)
    return out


def check_timesteps(timesteps: Iterable[int], num_train_timesteps: int) -> torch.Tensor:
    """The grid as a 1-D long tensor, if it is a non-empty set of distinct integers in [0, T)."""
    if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, (Iterable, torch.Tensor)):
        raise TypeError(f"timesteps must be a sequence of integers, got {timesteps!r}")
    arr = np.asarray(timesteps.cpu() if torch.is_tensor(timesteps) else list(timesteps))
    if arr.size == 0:
        raise ValueError("empty timestep grid")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"timesteps must be integers, got {arr.dtype} values {arr.flatten()[:5].tolist()}")
    raw = torch.as_tensor(arr).flatten()
    if raw.is_floating_point() and not torch.equal(raw, raw.round()):
        bad = raw[raw != raw.round()]
        raise ValueError(f"timesteps must be integers, got {bad[:5].tolist()}")
    ts = raw.long()
    if int(ts.min()) < 0 or int(ts.max()) >= num_train_timesteps:
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}), got [{int(ts.min())}, {int(ts.max())}]")
    uniq, counts = torch.unique(ts, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"timesteps repeat {uniq[counts > 1][:5].tolist()}: each timestep is one feature column")
    return ts


def _noised(acp: torch.Tensor, x0, eps, t):
    a = acp[t].view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def _loss(unet, acp, x0, eps, t, c=None) -> torch.Tensor:
    """Per-sample L_t = ||eps_theta(x_t, t[, c]) - eps||^2, summed over pixels (latent entries)."""
    return (unet(_noised(acp, x0, eps, t), t, **unet_kwargs(c)).sample - eps).pow(2).flatten(1).sum(1)


def _loss_only(unet, acp, x0, eps, t, c=None):
    with torch.no_grad():
        return {"loss": _loss(unet, acp, x0, eps, t, c)}


def _loss_and_grad_x(unet, acp, x0, eps, t, c=None):
    x0 = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = _loss(unet, acp, x0, eps, t, c)
        # samples do not interact in the UNet (GroupNorm is per sample), so the
        # gradient of the summed loss holds every sample's own gradient
        (gx,) = torch.autograd.grad(loss.sum(), x0)
    return {"loss": loss.detach(), "grad_x": gx.pow(2).flatten(1).sum(1)}


@contextmanager
def _vmappable_attention(unet):
    """Swap fused attention (no vmap batching rule on CPU) for the plain, equal-valued processor."""
    saved = {m: m.processor for m in unet.modules() if isinstance(m, Attention)}
    for m in saved:
        m.set_processor(AttnProcessor())
    try:
        yield unet
    finally:
        for m, proc in saved.items():
            m.set_processor(proc)


def _all_features(unet, acp, x0, eps, t, c=None):
    params = {k: v.detach() for k, v in unet.named_parameters()}
    buffers = {k: v.detach() for k, v in unet.named_buffers()}

    def one(p, x, e, tt, a, cc):
        xt = a.sqrt() * x + (1 - a).sqrt() * e
        kwargs = unet_kwargs(None if cc is None else cc[None])
        pred = functional_call(unet, (p, buffers), (xt[None], tt[None]), kwargs).sample[0]
        loss = (pred - e).pow(2).sum()
        return loss, loss

    with _vmappable_attention(unet):
        grads, loss = vmap(grad(one, argnums=(0, 1), has_aux=True),
                           in_dims=(None, 0, 0, 0, 0, None if c is None else 0))(params, x0, eps, t, acp[t], c)
    g_theta, g_x = grads
    sq_theta = sum(g.pow(2).flatten(1).sum(1) for g in g_theta.values())
    return {"loss": loss.detach(), "grad_x": g_x.pow(2).flatten(1).sum(1), "grad_theta": sq_theta}


def _all_features_hooks(unet, acp, x0, eps, t, c=None, per_layer: bool = False):
    """All three features from one forward and one backward (per-sample norms from layer hooks)."""
    x0 = x0.detach().requires_grad_(True)
    with torch.enable_grad(), PerSampleGradNorms(unet, per_layer=per_layer) as norms:
        loss = _loss(unet, acp, x0, eps, t, c)
        gx = torch.autograd.grad(loss.sum(), [x0, *norms.leaves])[0]
    out = {"loss": loss.detach(), "grad_x": gx.pow(2).flatten(1).sum(1), "grad_theta": norms.total}
    if per_layer:
        out[LAYERS] = norms.layer_norms()
    return out


def _kernel_for(features: Sequence[str], method: str):
    if LAYERS in features:
        if method != "hooks":
            raise ValueError(f"per-layer norms ({LAYERS!r}) come from the hooks kernel; use method='hooks'")
        return lambda *args: _all_features_hooks(*args, per_layer=True)
    if "grad_theta" in features:
        return _all_features_hooks if method == "hooks" else _all_features
    if "grad_x" in features:
        return _loss_and_grad_x
    return _loss_only


def trajectory_features(unet, scheduler, images: torch.Tensor, timesteps, *, noise: torch.Tensor | None = None,
                        seed: int = 0, ids: Sequence[int] | None = None, features: Sequence[str] = FEATURES,
                        batch_size: int = 64, device: str | torch.device | None = None,
                        method: str = "hooks", progress: bool = False,
                        callback: Callable[[int], None] | None = None,
                        cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample, per-timestep trajectory features.

    Returns a dict mapping each name in ``features`` to a float32 CPU tensor of
    shape (N, len(timesteps)); ``features`` may also name ``"grad_theta_layers"``
    (:data:`LAYERS`), each layer's share of ||grad_theta L_t||^2, of shape
    (N, len(timesteps), n_layers) in the order of :func:`provlib.kernels.persample.layer_names`.  ``ids`` (default ``0..N-1``) are the stable
    image ids that seed the noise when ``noise`` is not given; pass the
    dataset ids when features of a subset must equal those of the whole.
    ``batch_size`` counts (image, timestep) rows.  The model is moved to
    ``device`` (default: CUDA when present, else CPU) and left in eval mode.
    ``method`` picks how ||grad_theta||^2 is computed: ``"hooks"`` (one
    backward, per-layer norms, see :mod:`provlib.kernels.persample`) or ``"func"``
    (``torch.func.vmap`` of per-sample gradients, any architecture).
    ``callback(rows)`` is called after each batch with the number of
    (image, timestep) rows it computed (for a caller's own progress bar).
    Images must have the model's channels and size (see
    :func:`provlib.data.check_fits_model`): for a latent model, pass the
    latents x0 (:meth:`provlib.models.interface.DiffusionModel.to_space`),
    so that ``grad_x`` is the gradient with respect to the latent.  ``cond``
    conditions the model, one row per image (:mod:`provlib.kernels.condition`:
    text embeddings or class labels).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    check_input(images, unet)
    features = names(features, "features", (*FEATURES, LAYERS))
    batch_size = positive_int(batch_size, "batch_size")
    ts = check_timesteps(timesteps, scheduler.config.num_train_timesteps)
    n, n_t = len(images), len(ts)
    cond = check_condition(cond, n)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} images")
    if noise is not None:
        if tuple(noise.shape) != (n, n_t, *images.shape[1:]):
            raise ValueError(f"noise must have shape (N, T, C, H, W) = {(n, n_t, *images.shape[1:])}, "
                             f"got {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError(f"noise contains {int((~torch.isfinite(noise)).sum())} NaN or infinite value(s)")
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        keep_freed_memory()
    unet.to(device).eval()
    dtype = next(unet.parameters()).dtype
    acp = scheduler.alphas_cumprod.to(device=device, dtype=dtype)
    kernel = _kernel_for(features, method)
    out: dict[str, torch.Tensor] = {}
    for start in progress_bar(range(0, n * n_t, batch_size), desc="trajectory features", enabled=progress):
        rows = torch.arange(start, min(start + batch_size, n * n_t))
        i, j = rows // n_t, rows % n_t
        if noise is None:
            eps = torch.stack([seeded_noise([ids[a]], [int(ts[b])], images.shape[1:], seed)[0, 0]
                               for a, b in zip(i.tolist(), j.tolist())])
        else:
            eps = noise[i, j]
        x0 = images[i].to(device=device, dtype=dtype)
        c = cond_rows(cond, i, device, dtype)
        res = kernel(unet, acp, x0, eps.to(device=device, dtype=dtype), ts[j].to(device), *(() if c is None else (c,)))
        for f in features:
            value = res[f].detach().float().cpu()
            if f not in out:
                out[f] = torch.empty(n * n_t, *value.shape[1:])
            out[f][rows] = value
        if callback is not None:
            callback(len(rows))
    return {f: v.view(n, n_t, *v.shape[1:]) for f, v in out.items()}


GRAD_NORM_METHODS = ("hooks", "autograd")


def image_layer_grad_norms(unet, scheduler, images: torch.Tensor, timesteps, *, seed: int = 0,
                           ids: Sequence[int] | None = None, device=None, progress: bool = False,
                           cond: torch.Tensor | None = None, method: str = "hooks",
                           batch_size: int = 160) -> torch.Tensor:
    """Per image, each layer's ||d/dtheta_layer mean_t L_t||^2: one gradient of the loss averaged over the grid.

    GSA_1's feature (Pang et al.): the gradient of the mean loss over the
    timesteps of one image, not the mean of per-timestep gradient norms.  The
    noise of (image, t) is the trajectory kernel's seeded noise.  ``method``:
    ``"hooks"`` (default) takes several images in one backward, their timestep
    rows side by side (``batch_size`` rows at most, whole images), and each
    image's per-layer norm from the layer hooks of :mod:`provlib.kernels.persample`
    with an image's rows as one sample; ``"autograd"`` takes one ordinary
    backward per image through its timestep rows, as GSA's code does (the
    reference the hooks are tested against).  Returns (N, n_layers) in the order of
    :func:`provlib.kernels.persample.layer_names`.  ``cond`` conditions the model
    (one row per image, repeated over its timestep rows).
    """
    if method not in GRAD_NORM_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {GRAD_NORM_METHODS}")
    check_input(images, unet)
    cond = check_condition(cond, len(images))
    ts = check_timesteps(timesteps, scheduler.config.num_train_timesteps)
    ids = np.arange(len(images)) if ids is None else np.asarray(ids)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")
    per_batch = max(1, positive_int(batch_size, "batch_size") // len(ts)) if method == "hooks" else 1
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        keep_freed_memory()
    unet.to(device).eval()
    dtype = next(unet.parameters()).dtype
    acp = scheduler.alphas_cumprod.to(device=device, dtype=dtype)
    kernel = _image_norms_hooks if method == "hooks" else _image_norms_autograd
    out = torch.zeros(len(images), len(layer_names(unet)))
    with progress_bar(total=len(images), desc="image gradient norms", enabled=progress, unit="img") as bar:
        for s in range(0, len(images), per_batch):
            part = torch.arange(s, min(s + per_batch, len(images)))
            i = part.repeat_interleave(len(ts))                               # image-major rows
            x0 = images[i].to(device=device, dtype=dtype)
            eps = seeded_noise(ids[part.numpy()].tolist(), ts.tolist(), images.shape[1:], seed)
            t = ts.repeat(len(part)).to(device)
            out[part] = kernel(unet, acp, x0, eps.flatten(0, 1).to(device=device, dtype=dtype), t,
                               cond_rows(cond, i, device, dtype), len(ts)).float().cpu()
            bar.update(len(part))
    return out


def _image_norms_hooks(unet, acp, x0, eps, t, c, n_t: int) -> torch.Tensor:
    """(B, n_layers): one forward and one backward of B images' rows; an image's rows are one sample."""
    x0 = x0.detach().requires_grad_(True)   # the backward must pass every layer (see PerSampleGradNorms)
    with torch.enable_grad(), PerSampleGradNorms(unet, per_layer=True, rows_per_sample=n_t) as norms:
        loss = _loss(unet, acp, x0, eps, t, c).view(-1, n_t).mean(1)
        torch.autograd.grad(loss.sum(), [x0, *norms.leaves])
    return norms.layer_norms()


def _image_norms_autograd(unet, acp, x0, eps, t, c, n_t: int) -> torch.Tensor:
    """(1, n_layers): one image's parameter gradient by an ordinary backward, squared per layer."""
    named = list(unet.named_parameters())
    column = {name: j for j, name in enumerate(layer_names(unet))}
    flags = [p.requires_grad for _, p in named]
    out = torch.zeros(1, len(column), dtype=torch.float64)
    try:
        for _, p in named:
            p.requires_grad_(True)
        with torch.enable_grad():
            grads = torch.autograd.grad(_loss(unet, acp, x0, eps, t, c).mean(), [p for _, p in named])
    finally:
        for (_, p), flag in zip(named, flags):  # leave the model as it came
            p.requires_grad_(flag)
    for (k, _), g in zip(named, grads):
        out[0, column[k.rsplit(".", 1)[0]]] += float(g.pow(2).sum())
    return out


def reference_features(unet, scheduler, images: torch.Tensor, timesteps, noise: torch.Tensor,
                       cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The same three features by a plain per-sample, per-timestep loop (batch size 1).

    Independent of the vectorised kernel (autograd on the module, no
    torch.func); run it on a float64 copy of the model for a reference.
    """
    ts = check_timesteps(timesteps, scheduler.config.num_train_timesteps)
    dtype = next(unet.parameters()).dtype
    acp = scheduler.alphas_cumprod.to(dtype)
    params = list(unet.parameters())
    flags = [p.requires_grad for p in params]
    out = {f: torch.empty(len(images), len(ts), dtype=dtype) for f in FEATURES}
    try:
        for p in params:
            p.requires_grad_(True)
        _reference_loop(unet, acp, images, ts, noise, params, out, cond)
    finally:
        for p, flag in zip(params, flags):  # leave the model as it came
            p.requires_grad_(flag)
    return out


def _reference_loop(unet, acp, images, ts, noise, params, out, cond=None) -> None:
    dtype = acp.dtype
    for i in range(len(images)):
        c = None if cond is None else cond[i:i + 1].to(dtype if cond.is_floating_point() else cond.dtype)
        for j, t in enumerate(ts.tolist()):
            x0 = images[i:i + 1].to(dtype).clone().requires_grad_(True)
            eps = noise[i, j][None].to(dtype)
            xt = acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * eps
            loss = (unet(xt, torch.tensor([t]), **unet_kwargs(c)).sample - eps).pow(2).sum()
            grads = torch.autograd.grad(loss, [x0, *params], allow_unused=True)
            out["loss"][i, j] = loss.detach()
            out["grad_x"][i, j] = grads[0].pow(2).sum()
            out["grad_theta"][i, j] = sum(g.pow(2).sum() for g in grads[1:] if g is not None)

"""Per-sample parameter-gradient norms from one ordinary backward pass.

For a batch whose samples do not interact (the UNet's GroupNorm is per
sample), the gradient of the summed loss w.r.t. a layer's output holds every
sample's own output gradient g_i.  With the layer's input a_i (kept by a
forward hook), each sample's weight gradient is a small product of the two,
and only its squared norm is kept:

- Linear   dW_i = g_i^T a_i                 (a_i: (L, in), g_i: (L, out))
- Conv2d   dW_i = the weight gradient of a convolution with one group per
           sample (one grouped convolution_backward for the batch); on small
           maps the ghost norm below, from Gram matrices; on wide layers or
           with very few output channels a batched matmul per kernel offset;
           on an input that is a nearest 2x upsampling (the UNet's upsampler
           convolutions) the same matmuls on the coarse grid, a quarter of the
           work; 1x1 convolutions are linear layers over positions
- GroupNorm dgamma_i = sum_hw g_i * xhat_i,  dbeta_i = sum_hw g_i
- LayerNorm the same, summed over the positions before the normalised dims
  (the transformer blocks of a text-conditioned UNet)

and each bias gradient is g_i summed over positions.  Where it is cheaper,
the squared norm of g_i^T a_i is taken with the "ghost norm" identity
||g^T a||^2 = sum_{p,q} (a_p . a_q)(g_p . g_q), which never forms dW_i.
No per-sample gradient of the whole model is ever materialised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)
# oneDNN's grouped weight-gradient convolution is fast up to 32 channels per group and
# erratic above (2-6x a forward convolution): wider convolutions take the per-offset matmuls.
GROUPED_MAX_CHANNELS = 32


def _sq(x: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Per-sample squared norm of a (B r, ...) tensor whose sample i is the sum of its ``r`` consecutive rows."""
    flat = x.reshape(x.shape[0] // r, r, -1).sum(1) if r > 1 else x.reshape(x.shape[0], -1)
    return torch.linalg.vector_norm(flat, dim=1).square()


def _matmul_sq_norm(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample ||g_i^T a_i||_F^2 for a: (B, L, k), g: (B, L, m), by the cheaper of two routes."""
    L, k, m = a.shape[1], a.shape[2], g.shape[2]
    if L == 1:
        return _sq(a) * _sq(g)
    if L * L * (k + m) < L * k * m:  # ghost norm: Gram matrices over positions
        return (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).flatten(1).sum(1)
    return _sq(torch.bmm(g.transpose(1, 2), a))


def _linear(module: nn.Linear, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    b = a.shape[0] // r   # a sample's rows are positions of one product: dW_i = sum over them of g^T a
    a3, g3 = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
    out = _matmul_sq_norm(a3, g3)
    if module.bias is not None:
        out = out + _sq(g3.sum(1))
    return out


def _conv2d(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    out = _CONV_ROUTES[conv_route(module, a, g, r)](module, a, g, r)
    if module.bias is not None:
        out = out + _sq(g.sum((2, 3)), r)
    return out


def conv_route(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> str:
    """Which way the per-sample weight-gradient norms of this convolution are computed (NOTES.md); with
    ``r`` > 1 rows per sample never the ghost norm (its Gram matrices would span the sample's rows)."""
    if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise NotImplementedError(f"per-sample norms for {module} (groups, padding mode) are not implemented")
    if module.kernel_size == (1, 1) and module.stride == (1, 1) and module.padding == (0, 0):
        return "1x1"
    if _same_padding(module):
        ghost = _ghost_cost(module, a, g) if r == 1 else float("inf")
        direct = _direct_cost(module, a, g)
        if direct // 4 < ghost and _nearest_upsampled(a):  # the value check only where it can pay
            return "upsampled"
        if ghost < direct:
            return "ghost"
    if _same_padding(module) and (g.shape[1] <= 4 or max(a.shape[1], g.shape[1]) > GROUPED_MAX_CHANNELS):
        return "shifted"
    return "grouped"


def _conv_1x1(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    """A 1x1 convolution is a linear layer over positions (a sample's rows: more positions)."""
    b = a.shape[0] // r
    return _matmul_sq_norm(a.flatten(2).transpose(1, 2).reshape(b, -1, a.shape[1]),
                           g.flatten(2).transpose(1, 2).reshape(b, -1, g.shape[1]))


def _same_padding(module: nn.Conv2d) -> bool:
    kh, kw = module.kernel_size
    return module.stride == (1, 1) and module.dilation == (1, 1) and module.padding == (kh // 2, kw // 2) \
        and kh % 2 == 1 and kw % 2 == 1


def _direct_cost(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> int:
    """Multiply-adds per sample to form dW_i: positions x Cout x Cin x kernel area."""
    kh, kw = module.kernel_size
    return g.shape[2] * g.shape[3] * g.shape[1] * a.shape[1] * kh * kw


def _ghost_cost(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> int:
    """Multiply-adds per sample of the ghost norm: Grams of the input and of g, and the shifted sums."""
    kh, kw = module.kernel_size
    positions = g.shape[2] * g.shape[3]
    return positions ** 2 * (a.shape[1] + g.shape[1] + kh * kw)


def _conv_ghost(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    """||dW_i||^2 = sum_{p,q} <patch_p, patch_q> <g_p, g_q>, without forming patches or dW_i.

    The patch Gram matrix is a sum of shifted blocks of the padded input's Gram
    matrix: <patch_(i,j), patch_(i',j')> = sum_(di,dj) <x_(i+di,j+dj), x_(i'+di,j'+dj)>.
    The padded positions hold zero vectors, so the padded Gram matrix is the
    input's Gram matrix padded with zeros (cheaper than the Gram of the padded input).
    Cheaper than forming dW_i on small maps (8x8) with many channels.
    """
    if r != 1:
        raise ValueError("the ghost norm takes one row per sample")
    (kh, kw), (b, _, h, w) = module.kernel_size, g.shape
    ph, pw = kh // 2, kw // 2
    x = a.flatten(2)                                                     # (B, Cin, L)
    gram = F.pad(torch.bmm(x.transpose(1, 2), x).view(b, h, w, h, w), (pw, pw, ph, ph) * 2)
    rows = _shifted_sum(lambda j: gram[:, :, j:j + w, :, j:j + w], kw)     # shifts along width first,
    patches = _shifted_sum(lambda i: rows[:, i:i + h, :, i:i + h, :], kh)   # then along height
    g2 = g.flatten(2)                                                    # (B, Cout, L)
    gram_g = torch.bmm(g2.transpose(1, 2), g2)
    return torch.bmm(patches.view(b, 1, -1), gram_g.view(b, -1, 1)).view(b)  # per-sample dot, no temporary


def _shifted_sum(block, n: int) -> torch.Tensor:
    """block(0) + ... + block(n - 1) into one new tensor, added in place."""
    out = block(0).clone() if n == 1 else block(0) + block(1)
    for k in range(2, n):
        out += block(k)
    return out


def _conv_grouped(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    """All per-sample weight gradients as one weight-gradient convolution with a group per sample."""
    b, c_in, c_out = a.shape[0], a.shape[1], g.shape[1]
    weight = module.weight.new_empty((b * c_out, *module.weight.shape[1:]))  # only its shape is read
    dw = torch.ops.aten.convolution_backward(
        g.reshape(1, b * c_out, *g.shape[2:]), a.reshape(1, b * c_in, *a.shape[2:]), weight, None,
        list(module.stride), list(module.padding), list(module.dilation), False, [0, 0], b,
        [False, True, False])[1]
    return _sq(dw.reshape(b, -1), r)


def _conv_shifted(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Per-sample weight gradients one kernel offset at a time: a batched matmul per offset, no padding.

    With maps flattened row by row, the input under kernel offset (di, dj) is
    the input shifted by di * W + dj positions: every offset is one ``bmm`` of a
    contiguous slice of g, (B, Cout, K), by a slice of the input, (B, K, Cin),
    over the output rows whose shifted row exists.  Shifting by dj != 0 wraps
    around the row ends; those terms are removed by zeroing the first (dj < 0)
    or last (dj > 0) |dj| columns of a copy of g.
    """
    (kh, kw), (ph, pw) = module.kernel_size, module.padding
    b, c_in, h, w = a.shape
    x = a.reshape(b, c_in, h * w)
    g_cols = {dj: _zero_columns(g, dj).flatten(2) for dj in range(-pw, kw - pw)}  # (B, Cout, H * W) each
    out = 0
    for i in range(kh):
        di = i - ph
        rows = max(0, -di), min(h, h - di)                                      # output rows with input row r + di
        for j in range(kw):
            dj = j - pw
            p0, p1 = rows[0] * w + max(0, -dj), rows[1] * w - max(0, dj)        # output positions (flattened)
            q0 = p0 + di * w + dj                                               # where their inputs start
            out = out + _sq(torch.bmm(g_cols[dj][:, :, p0:p1], x[:, :, q0:q0 + p1 - p0].transpose(1, 2)), r)
    return out


def _nearest_upsampled(a: torch.Tensor) -> bool:
    """Whether every 2x2 block of every map of ``a`` is constant (a nearest 2x upsampling), exactly.

    Sample 0 is checked first, so that an ordinary input is turned down at the cost of one sample.
    """
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        return False
    for x in (a[:1], a):
        even_rows = x[..., 0::2, :]
        if not (torch.equal(even_rows, x[..., 1::2, :]) and torch.equal(even_rows[..., 0::2], even_rows[..., 1::2])):
            return False
    return True


def _conv_upsampled(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Per-sample weight gradients of a "same" convolution whose input is a nearest 2x upsampling of u.

    With a_(y, x) = u_(y // 2, x // 2), the weight gradient at kernel offset
    (di, dj) is sum_(Y, X) u_(Y, X) G_(Y, X), where G sums g over the 2x2
    block of output positions whose shifted input falls in coarse cell (Y, X):
    a 2x2 sum of g shifted by (-di, -dj), read for every offset at once from
    the 2x2 sums of the zero-padded g.  Then one batched matmul on the coarse
    grid: (B, kh kw Cout, L / 4) by (B, L / 4, Cin), a quarter of the direct work.
    """
    (kh, kw), (ph, pw) = module.kernel_size, module.padding
    b, c_in, h, w = a.shape
    gp = F.pad(g, (pw, pw, ph, ph))
    pairs = gp[:, :, :-1] + gp[:, :, 1:]
    pairs = pairs[..., :-1] + pairs[..., 1:]                              # 2x2 sums at every position
    # offset (di, dj) = (ph - i, pw - j) reads pairs[..., i + 2Y, j + 2X]: every offset in one strided view
    sb, sc, sh, sw = pairs.stride()
    blocks = pairs.as_strided((b, kh, kw, g.shape[1], h // 2, w // 2), (sb, sh, sw, sc, 2 * sh, 2 * sw))
    u = a[:, :, 0::2, 0::2].reshape(b, c_in, -1)
    return _sq(torch.bmm(blocks.reshape(b, -1, u.shape[2]), u.transpose(1, 2)), r)


def _zero_columns(g: torch.Tensor, dj: int) -> torch.Tensor:
    """g with the columns that a shift by dj would wrap around the row set to zero (g itself if dj == 0)."""
    if dj == 0:
        return g
    out = g.clone()
    if dj < 0:
        out[..., :-dj] = 0
    else:
        out[..., out.shape[-1] - dj:] = 0
    return out


def _group_norm(module: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    out = torch.zeros(a.shape[0] // r, dtype=a.dtype, device=a.device)
    dims = tuple(range(2, a.ndim))
    if module.weight is not None:
        xhat = F.group_norm(a, module.num_groups, eps=module.eps)
        out = out + _sq((g * xhat).sum(dims), r)
    if module.bias is not None:
        out = out + _sq(g.sum(dims), r)
    return out


def _layer_norm(module: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor, r: int = 1) -> torch.Tensor:
    """dgamma_i = sum over positions of g_i * xhat_i, dbeta_i = sum over positions of g_i."""
    out = torch.zeros(a.shape[0] // r, dtype=a.dtype, device=a.device)
    lead = tuple(range(1, a.ndim - len(module.normalized_shape)))
    if module.weight is not None:
        xhat = F.layer_norm(a, module.normalized_shape, eps=module.eps)
        out = out + _sq((g * xhat).sum(lead) if lead else g * xhat, r)
    if module.bias is not None:
        out = out + _sq(g.sum(lead) if lead else g, r)
    return out


_CONV_ROUTES = {"1x1": _conv_1x1, "ghost": _conv_ghost, "shifted": _conv_shifted, "grouped": _conv_grouped,
                "upsampled": _conv_upsampled}
_RULES = {nn.Linear: _linear, nn.Conv2d: _conv2d, nn.GroupNorm: _group_norm, nn.LayerNorm: _layer_norm}


class PerSampleGradNorms:
    """Context manager: ``total`` holds sum over all parameters of ||dL_i/dtheta||^2 after a backward.

    With ``per_layer=True`` it also keeps each layer's share (:meth:`layer_norms`), the
    per-layer squared gradient norms that GSA classifies.

    The backward must reach ``leaves`` as well as the input, e.g.
    ``torch.autograd.grad(loss.sum(), [x, *norms.leaves])``.

    With ``rows_per_sample=r``, a sample is ``r`` consecutive rows of the batch and its gradient the
    gradient of their summed loss (GSA_1: an image's loss averaged over its timestep rows), whose
    norm is not the sum of the rows' norms: each rule sums the rows' weight-gradient pieces first.

    Every module holding parameters must be a Linear, Conv2d, GroupNorm or LayerNorm used
    once per forward pass; anything else raises NotImplementedError (use the
    ``torch.func`` kernel then).
    """

    def __init__(self, model: nn.Module, *, per_layer: bool = False, rows_per_sample: int = 1):
        named = [(name, m) for name, m in model.named_modules()
                 if any(p is not None for p in m.parameters(recurse=False))]
        self.modules = [m for _, m in named]
        self.names = {m: name for name, m in named}
        self.per_layer = per_layer
        self.rows = rows_per_sample
        self.layers: dict[str, torch.Tensor] = {}  # with per_layer: module name -> (B,) squared norms
        unsupported = {type(m).__name__ for m in self.modules if type(m) not in _RULES}
        if unsupported:
            raise NotImplementedError(f"per-sample gradient norms not implemented for {sorted(unsupported)}")
        self.total: torch.Tensor | None = None
        self.leaves: list[torch.Tensor] = []  # differentiate w.r.t. these too, see _forward_hook
        self._handles, self._seen = [], set()

    def __enter__(self) -> "PerSampleGradNorms":
        self._handles = [m.register_forward_hook(self._forward_hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _forward_hook(self, module, inputs, output) -> None:
        if module in self._seen:
            raise NotImplementedError(f"{type(module).__name__} is called twice in one forward pass")
        self._seen.add(module)
        a = inputs[0].detach()
        if a.shape[0] % self.rows:
            raise ValueError(f"a batch of {a.shape[0]} rows is not samples of {self.rows} rows each")
        if not inputs[0].requires_grad:
            # the input does not depend on the image (e.g. the timestep embedding): make the output
            # a leaf, so that a backward asked to reach ``leaves`` passes through this layer
            output = output.detach().requires_grad_(True)
            self.leaves.append(output)
        output.register_hook(lambda g, m=module, a=a: self._add(m, _RULES[type(m)](m, a, g.detach(), self.rows)))
        return output

    def _add(self, module: nn.Module, sq: torch.Tensor) -> None:
        self.total = sq if self.total is None else self.total + sq
        if self.per_layer:
            self.layers[self.names[module]] = sq

    def layer_norms(self) -> torch.Tensor:
        """(B, n_layers) per-layer squared norms, in the order of :func:`layer_names` (needs ``per_layer``)."""
        return torch.stack([self.layers[self.names[m]] for m in self.modules], dim=1)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters, in the order :class:`PerSampleGradNorms` reports them."""
    return list(PerSampleGradNorms(model).names.values())

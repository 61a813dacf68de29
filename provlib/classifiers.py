"""Small image classifiers the attacks train: a ResNet-18 design at 16x16, and its training loop.

Used by the model-blind baseline (images alone), SecMI_NNs and SeDID_NNs (maps
of the DDIM round-trip residual).  The network keeps ResNet-18's design (a 3x3
stem, four stages of two BasicBlocks, widths w, 2w, 4w, 8w, strides 1, 2, 2, 2,
BatchNorm, global average pooling, one linear output) with the CIFAR-style stem
(no max-pool) that small images need, and a base width ``w`` (default 16, a
quarter of ResNet-18's 64) sized for a 2-core CPU.  Every choice is seeded:
the same data and seed give the same scores.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import positive_int
from .progress import progress_bar


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18's design for small inputs: ``in_channels`` maps to ``outputs`` logits."""

    def __init__(self, in_channels: int = 1, outputs: int = 1, width: int = 16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for w, stride in zip(widths, (1, 2, 2, 2)):
            blocks += [BasicBlock(c, w, stride), BasicBlock(w, w, 1)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, outputs)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def train_classifier(x: torch.Tensor, y: np.ndarray, *, seed: int = 0, epochs: int = 20, lr: float = 1e-3,
                     momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 128, width: int = 16,
                     loss: str = "bce", progress: bool = False, desc: str = "classifier") -> ResNet18:
    """Train a :class:`ResNet18` on images ``x`` (N, C, H, W) with binary labels ``y`` by SGD with momentum.

    ``loss="bce"``: logistic loss on the logit; ``loss="mse"``: squared error of the
    output against the 0/1 label (SecMI_NNs' choice).  Training ends after
    ``epochs``; no checkpoint is ever chosen on evaluation rows.
    """
    y = np.asarray(y)
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"need images (N, C, H, W) and N labels, got {tuple(x.shape)} and {y.shape}")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) < 2:
        raise ValueError("labels must be 0/1 with both classes present")
    if loss not in ("bce", "mse"):
        raise ValueError(f"loss must be 'bce' or 'mse', got {loss!r}")
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ResNet18(x.shape[1], 1, width)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    x, yt = x.float(), torch.as_tensor(y, dtype=torch.float32)
    net.train()
    for _ in progress_bar(range(epochs), desc=f"{desc} (epochs)", enabled=progress):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            out = net(x[idx])[:, 0]
            err = F.binary_cross_entropy_with_logits(out, yt[idx]) if loss == "bce" else (out - yt[idx]).pow(2).mean()
            opt.zero_grad()
            err.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def classifier_scores(net: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The network's output for each image (higher = class 1)."""
    net.eval()
    return torch.cat([net(x[s:s + batch_size].float())[:, 0] for s in range(0, len(x), batch_size)]).numpy()

"""A PyTorch twin of gcnjax's benchmark workloads, written as a PyTorch user would.

The same nets, the same Langevin update and the same learning steps as

* the descriptor (:mod:`gcnjax.descriptor`): ``E(x) = ||x||²/(2σ²) − f(x)``
  (no reference term when σ is None), chains moved by
  ``x ← x − a ∇E(x) + b ξ`` (:mod:`gcnjax.langevin`), and one optimizer
  step on ``mean f(samples) − mean f(data)``;
* the generator of alternating back-propagation (:mod:`gcnjax.generator`):
  latent chains on ``E(z | x) = ||x − g(z)||²/(2σ²) + ||z||²/2`` and one
  optimizer step on ``mean ||x − g(z)||²/(2σ²)``.

Tensors are NCHW (PyTorch's layout); :func:`descriptor_from_jax` and
:func:`generator_from_jax` copy gcnjax's Flax params into a twin with the
layout transposes (conv kernels HWIO → OIHW, dense kernels transposed,
transposed-conv kernels flipped and HWIO → IOHW). ``torch`` is an optional
extra (``pip install gcnjax[bench]``); gcnjax itself never imports this.

The chains of all examples are one batch: the energy is summed over the
batch before ``autograd.grad``, which gives each chain its own gradient
because no layer mixes examples (no batch norm), exactly what gcnjax's
``vmap`` over chains computes.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as F


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """XLA's "SAME" padding (before, after) of one spatial axis; the extra
    pixel of an odd total goes after, as in TensorFlow and JAX."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DescriptorTwin(tnn.Module):
    """``f(x)`` of :class:`gcnjax.nets.DescriptorNet` (top ``"sum"``) on
    channels-first data: NCL sounds, NCHW images, NCDHW videos.

    ``layers`` are gcnjax ``ConvSpec``s (an int or one entry per axis for
    kernels, strides and integer paddings); ``image_size`` (one entry per
    axis) fixes the SAME paddings (asymmetric ones are applied with
    ``F.pad``).
    """

    def __init__(self, layers, in_channels: int, image_size: Sequence[int], activation: str = "relu",
                 activate_last: bool = True):
        super().__init__()
        sizes = [int(n) for n in image_size]
        n_axes = len(sizes)
        conv_cls = {1: tnn.Conv1d, 2: tnn.Conv2d, 3: tnn.Conv3d}[n_axes]
        self.convs = tnn.ModuleList()
        self.pads = []
        self.pad_modes = []
        c = in_channels
        for spec in layers:
            kernel, stride = spec.kernel_for(n_axes), spec.stride_for(n_axes)
            self.convs.append(conv_cls(c, spec.features, kernel, stride=stride))
            if spec.padding == "SAME":
                pairs = [same_padding(n, k, s_) for n, k, s_ in zip(sizes, kernel, stride)]
            elif spec.padding == "CIRCULAR":
                # As Flax's CIRCULAR: (k - 1) // 2 before, k // 2 after, whatever the stride, wrapped.
                pairs = [((k - 1) // 2, k // 2) for k in kernel]
            elif spec.padding == "VALID":
                pairs = [(0, 0)] * n_axes
            elif isinstance(spec.padding, str):
                raise ValueError(f"DescriptorTwin has no {spec.padding} padding (SAME, VALID or integers).")
            else:
                pairs = list(spec.flax_padding(n_axes))
            sizes = [(n + lo + hi - k) // s_ + 1 for n, (lo, hi), k, s_ in zip(sizes, pairs, kernel, stride)]
            self.pad_modes.append("circular" if spec.padding == "CIRCULAR" else "constant")
            if all(lo == hi for lo, hi in pairs) and spec.padding != "CIRCULAR":
                # Symmetric paddings go into the conv itself (PyTorch's fast path).
                self.convs[-1].padding = tuple(lo for lo, _ in pairs)
                self.pads.append(None)
            else:
                # F.pad takes the last axis first: (w_before, w_after, h_before, h_after, ...).
                self.pads.append(tuple(v for lo, hi in reversed(pairs) for v in (lo, hi)))
            c = spec.features
        self.leaky = activation == "leaky_relu"
        self.activate_last = activate_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.convs)
        for i, (conv, pad, mode) in enumerate(zip(self.convs, self.pads, self.pad_modes)):
            if pad is not None:
                x = F.pad(x, pad, mode=mode)
            x = conv(x)
            if self.activate_last or i < n - 1:
                x = F.leaky_relu(x, 0.2) if self.leaky else F.relu(x)
        return x.sum(dim=tuple(range(1, x.ndim)))


class GeneratorTwin(tnn.Module):
    """``g(z)`` of :class:`gcnjax.nets.GeneratorNet` (norm ``"none"``), NCHW out.

    Flax's transposed conv with SAME padding, kernel k and stride s pads the
    dilated input by ``(k − 1, s − 1)`` when ``s > k − 1`` and by
    ``(⌈(k+s−2)/2⌉, ⌊(k+s−2)/2⌋)`` otherwise; for k = 5, s = 2 that is
    (3, 2), i.e. PyTorch's ``ConvTranspose2d(padding=1)`` (3, 3) with the
    last row and column cropped.
    """

    def __init__(self, latent_dim: int, start=(4, 4), channels=(512, 256, 128, 64, 3), kernel: int = 5,
                 stride: int = 2, output: str = "tanh"):
        super().__init__()
        if (kernel, stride) != (5, 2):
            raise ValueError("GeneratorTwin is written for kernel 5, stride 2 (the face nets).")
        self.start = tuple(start)
        self.channels = tuple(channels)
        self.dense = tnn.Linear(latent_dim, start[0] * start[1] * channels[0])
        self.deconvs = tnn.ModuleList(
            tnn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=1)
            for cin, cout in zip(channels[:-1], channels[1:]))
        self.output = output

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).reshape(z.shape[0], self.start[0], self.start[1], self.channels[0])
        h = F.leaky_relu(h.permute(0, 3, 1, 2), 0.2)
        n = len(self.deconvs)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)[:, :, :-1, :-1]
            if i < n - 1:
                h = F.leaky_relu(h, 0.2)
        return torch.tanh(h) if self.output == "tanh" else h


# ---------------------------------------------------------------- params from gcnjax


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


@torch.no_grad()
def descriptor_from_jax(twin: DescriptorTwin, params) -> DescriptorTwin:
    """Copy a DescriptorNet's params: kernel (*k, I, O) → (O, I, *k), e.g. HWIO → OIHW."""
    p = params["params"]
    for i, conv in enumerate(twin.convs):
        k = _t(p[f"conv{i + 1}"]["kernel"])
        n = k.ndim - 2
        conv.weight.copy_(k.permute(n + 1, n, *range(n)))
        conv.bias.copy_(_t(p[f"conv{i + 1}"]["bias"]))
    return twin


@torch.no_grad()
def generator_from_jax(twin: GeneratorTwin, params) -> GeneratorTwin:
    """Copy a GeneratorNet's params: dense (in, out) → (out, in); transposed
    conv HWIO (applied unflipped) → IOHW flipped in space."""
    p = params["params"]
    twin.dense.weight.copy_(_t(p["dense"]["kernel"]).T)
    twin.dense.bias.copy_(_t(p["dense"]["bias"]))
    for i, deconv in enumerate(twin.deconvs):
        k = _t(p[f"deconv{i + 1}"]["kernel"])  # (kh, kw, in, out)
        deconv.weight.copy_(torch.flip(k, dims=(0, 1)).permute(2, 3, 0, 1))
        deconv.bias.copy_(_t(p[f"deconv{i + 1}"]["bias"]))
    return twin


def nhwc_to_nchw(x) -> torch.Tensor:
    """Channels last (gcnjax) → channels first (PyTorch), for data of any rank."""
    t = _t(x)
    return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)).contiguous()


# ---------------------------------------------------------------- Langevin and learning


def descriptor_energy(f: Callable, x: torch.Tensor, sigma: Optional[float]) -> torch.Tensor:
    """Per-image ``E(x) = ||x||²/(2σ²) − f(x)`` (``−f`` when σ is None)."""
    if sigma is None:
        return -f(x)
    return x.square().sum(dim=tuple(range(1, x.ndim))) / (2.0 * sigma**2) - f(x)


def langevin(energy: Callable, x: torch.Tensor, n_steps: int, step_size: float, noise_scale: Optional[float],
             noises: Optional[Sequence[torch.Tensor]] = None, generator: Optional[torch.Generator] = None):
    """``x ← x − a ∇E(x) + b ξ`` for ``n_steps`` steps on a batch of chains
    (``energy`` per chain; ``b = sqrt(2a)`` when ``noise_scale`` is None).
    ``noises[k]`` is step k's ξ if given, else fresh ``torch.randn``."""
    b = math.sqrt(2.0 * step_size) if noise_scale is None else noise_scale
    x = x.detach()
    for k in range(n_steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x)
        xi = noises[k] if noises is not None else torch.randn(x.shape, generator=generator, device=x.device)
        x = (x - step_size * grad + b * xi).detach()
    return x


def descriptor_learning_step(net: tnn.Module, opt: torch.optim.Optimizer, samples: torch.Tensor,
                             data: torch.Tensor) -> torch.Tensor:
    """One step on ``mean f(samples) − mean f(data)``; returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss = net(samples).mean() - net(data).mean()
    loss.backward()
    opt.step()
    return loss.detach()


def shortrun_iteration(net: DescriptorTwin, opt, data: torch.Tensor, *, n_steps: int = 100, step_size: float = 1.0,
                       noise_scale: float = 0.01, data_noise: float = 0.03, n_chains: Optional[int] = None,
                       generator=None):
    """One short-run training iteration (``gcnjax.presets.shortrun``): data
    plus N(0, 0.03²) noise, chains from U(−1, 1), K Langevin steps on E = −f,
    one Adam step."""
    n = data.shape[0] if n_chains is None else n_chains
    data = data + data_noise * torch.randn(data.shape, generator=generator, device=data.device)
    x0 = torch.rand((n,) + tuple(data.shape[1:]), generator=generator, device=data.device) * 2 - 1
    samples = langevin(lambda x: -net(x), x0, n_steps, step_size, noise_scale, generator=generator)
    return descriptor_learning_step(net, opt, samples, data)


def persistent_iteration(net: DescriptorTwin, opt, data: torch.Tensor, chains: torch.Tensor, *, sigma,
                         n_steps: int, step_size: float, noise_scale: Optional[float], generator=None):
    """One maximum-likelihood iteration with persistent chains (the
    spatial-temporal descriptor's ``descriptor.make_train_step``): K Langevin
    steps of the chains on ``E = ||x||²/(2σ²) − f``, then one optimizer step.
    Returns ``(chains, loss)``."""
    for p in net.parameters():
        p.requires_grad_(False)  # the chains need ∂/∂x only
    chains = langevin(lambda x: descriptor_energy(net, x, sigma), chains, n_steps, step_size, noise_scale,
                      generator=generator)
    for p in net.parameters():
        p.requires_grad_(True)
    return chains, descriptor_learning_step(net, opt, chains, data)


def latent_energy(g: tnn.Module, z: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-example ``E(z | x) = ||x − g(z)||²/(2σ²) + ||z||²/2``."""
    return (x - g(z)).square().sum(dim=(1, 2, 3)) / (2.0 * sigma**2) + 0.5 * z.square().sum(dim=1)


def abp_iteration(g: GeneratorTwin, opt, x: torch.Tensor, z0: torch.Tensor, *, sigma: float, n_steps: int,
                  step_size: float, noise_scale: Optional[float], noises=None, generator=None):
    """One ABP iteration: Langevin inference of z, then one step on
    ``mean ||x − g(z)||²/(2σ²)`` with z fixed. Returns ``(z, loss)``."""
    for p in g.parameters():
        p.requires_grad_(False)  # the inference needs ∂/∂z only
    z = langevin(lambda z: latent_energy(g, z, x, sigma), z0, n_steps, step_size, noise_scale, noises, generator)
    for p in g.parameters():
        p.requires_grad_(True)
    opt.zero_grad(set_to_none=True)
    loss = ((x - g(z)).square().sum(dim=(1, 2, 3)) / (2.0 * sigma**2)).mean()
    loss.backward()
    opt.step()
    return z, loss.detach()


def device() -> "torch.device":
    """CUDA when torch has it (the benchmarks on a GPU), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    """Wait for queued GPU work (timing); nothing on the CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def adam(params, lr: float, b1: float, b2: float = 0.999) -> torch.optim.Optimizer:
    """Adam as optax's (eps = 1e-8 outside the square root)."""
    return torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=1e-8)

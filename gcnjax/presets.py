"""Named configurations: the authors' settings, and the demo.

Each preset is a :class:`~gcnjax.descriptor.DescriptorConfig`; change any
field with ``dataclasses.replace(preset, field=value)``. The full-size
presets follow the authors' MatConvNet code for "A Theory of Generative
ConvNet" (224×224 images, 0..255 minus the mean, σ = 1, δ = 0.3 for maximum
likelihood and 0.5 for contrastive divergence, SGD with weight decay 1e-4
(plain for textures; momentum 0.5 for objects and CD),
each layer's gradient divided by its number of positions and capped at a
largest absolute entry of 20 (ML) or 1 (CD)); the texture net's convs wrap
at the border (see :func:`texture`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict

from gcnjax.descriptor import DescriptorConfig
from gcnjax.langevin import LangevinConfig
from gcnjax.nets import OBJECT_LAYERS, SOUND_LAYERS, STG_VARIANTS, TEXTURE_LAYERS, ConvSpec, stg_layers
from gcnjax.train import RunConfig

__all__ = ["PRESETS", "get", "texture", "object_pattern", "contrastive_divergence", "demo", "shortrun",
           "shortrun_layers", "MULTIGRID_PRESETS", "get_multigrid", "multigrid_authors", "multigrid_paper", "abp",
           "stg", "sound", "frame", "coop", "COOP_NETS"]


def texture() -> DescriptorConfig:
    """Texture synthesis from one image: f = sum of the top responses (a
    stationary model), 10 Langevin steps per iteration, persistent chains
    started at zero (the reference mean).

    Plain SGD (momentum 0), as in the authors' code: with momentum 0.5 the
    capped gradient steps and the lag of the persistent chains behind the
    model make the scale of f swing by tens of percent from one iteration
    to the next, and the synthesized textures stay blurred. The convs wrap
    around the image border (``"CIRCULAR"`` padding): every pixel of a
    synthesized texture is then seen by as many units as any other (up to
    the stride-3 grid), where zero padding leaves a frame about 8 pixels
    wide of low contrast (both
    measured: experiments/RESULTS.md, "Texture synthesis: why the ivy
    was blurred")."""
    return DescriptorConfig(
        layers=tuple(dataclasses.replace(spec, padding="CIRCULAR") for spec in TEXTURE_LAYERS),
        top="sum",
        sigma=1.0,
        langevin=LangevinConfig.from_delta(0.3, 10),
        n_chains=4,
        chain_init="zeros",
        persistent=True,
        optimizer="sgd",
        learning_rate=1e-4,
        momentum=0.0,
        weight_decay=1e-4,
        divide_by_positions=True,
        max_abs_grad=20.0,
        image_size=(224, 224),
        channels=3,
        pixel_scale="minus_mean",
        n_iterations=1000,
        run=RunConfig(image_every=100, checkpoint_every=100),
    )


def object_pattern() -> DescriptorConfig:
    """Object pattern synthesis from a few aligned images: an extra fully
    connected filter over the whole top map, 30 Langevin steps.

    The learning rate is the bottom of the authors' layer-wise range (5e-4),
    from measurements on the 64×64 egrets: at their end-to-end 1e-4 the
    dense top filter, which gets no per-position division, learned nothing
    visible in 60 iterations; at 2e-3 the energies oscillated by two orders
    of magnitude and every ReLU died (f ≡ 0) by iteration 190."""
    return dataclasses.replace(
        texture(),
        layers=OBJECT_LAYERS,
        top="dense",
        langevin=LangevinConfig.from_delta(0.3, 30),
        learning_rate=5e-4,
        # The learning rate above was chosen with this momentum.
        momentum=0.5,
        n_chains=7,
        n_iterations=1000,
    )


def contrastive_divergence() -> DescriptorConfig:
    """CD-k: every iteration one chain starts at each observed image of the
    batch (``batch_size`` 32, or all the images if fewer; ``n_chains`` plays
    no part) and runs k = 10 steps with δ = 0.5; gradients capped at 1."""
    return dataclasses.replace(
        object_pattern(),
        langevin=LangevinConfig.from_delta(0.5, 10),
        chain_init="data",
        persistent=False,
        max_abs_grad=1.0,
        n_iterations=600,
    )


def demo() -> DescriptorConfig:
    """The README's demo: a gray 128×128 texture, a few minutes on a 2-core CPU."""
    return dataclasses.replace(
        texture(),
        image_size=(128, 128),
        channels=1,
        n_chains=4,
        n_iterations=300,
        run=RunConfig(image_every=50, checkpoint_every=50),
    )


def shortrun_layers(n_filters: int = 64):
    """The short-run net on 32×32 images: conv 3×3 s1 n_f → conv 4×4 s2 2n_f →
    conv 4×4 s2 4n_f → conv 4×4 s2 8n_f (PyTorch padding 1 = "SAME" here:
    32 → 32 → 16 → 8 → 4) → conv 4×4 s1 to 1 unit, VALID (4 → 1)."""
    n = int(n_filters)
    if n < 1:
        raise ValueError(f"n_filters must be an integer >= 1, got {n_filters!r}.")
    return (
        ConvSpec(n, 3, 1, "SAME"),
        ConvSpec(2 * n, 4, 2, "SAME"),
        ConvSpec(4 * n, 4, 2, "SAME"),
        ConvSpec(8 * n, 4, 2, "SAME"),
        ConvSpec(1, 4, 1, "VALID"),
    )


def shortrun(n_filters: int = 64) -> DescriptorConfig:
    """Short-run MCMC learning (Nijkamp, Hill, Zhu, Wu, NeurIPS 2019), as in
    the authors' minimal CIFAR-10 code: non-persistent chains from uniform
    noise in [−1, 1], K = 100 steps of the DECOUPLED Langevin
    ``x ← x + ∇f(x) + 0.01 ξ`` (step size 1 on ∇f, noise 0.01; no reference
    term, σ = None, so E = −f), Gaussian noise of sd 0.03 added to the data,
    Adam lr 1e-4 with β = (0.9, 0.999), 64 chains and 64 data per
    iteration, images 32×32×3 in [−1, 1], the 5-conv LeakyReLU(0.2) net of
    :func:`shortrun_layers` with PyTorch's default initialisation. No
    gradient capping, division by positions or weight decay. The authors
    train for 10⁵ iterations; the default here is a short CPU run."""
    return DescriptorConfig(
        layers=shortrun_layers(n_filters),
        top="sum",
        activation="leaky_relu",
        activate_last=False,
        init_scheme="torch",
        sigma=None,
        # Unrolled whole although K = 100 > FULL_UNROLL_MAX_STEPS: on XLA:CPU
        # the unrolled chain runs faster than the loop by more than its longer
        # compile costs (measured: experiments/benchmarks/RESULTS.md).
        langevin=LangevinConfig(n_steps=100, step_size=1.0, noise_scale=0.01, unroll=True),
        n_chains=64,
        chain_init="uniform",
        init_scale=1.0,
        persistent=False,
        optimizer="adam",
        learning_rate=1e-4,
        beta1=0.9,
        weight_decay=0.0,
        divide_by_positions=False,
        max_abs_grad=None,
        image_size=(32, 32),
        channels=3,
        pixel_scale="unit",
        batch_size=64,
        data_noise=0.03,
        n_iterations=200,
        run=RunConfig(log_every=10, image_every=50, checkpoint_every=50),
    )


PRESETS: Dict[str, Callable[[], DescriptorConfig]] = {
    "texture": texture,
    "object": object_pattern,
    "cd": contrastive_divergence,
    "demo": demo,
    "shortrun": shortrun,
}


# ---------------------------------------------------------------- multi-grid


def multigrid_authors():
    """The multi-grid authors' code (Gao et al., CVPR 2018): grids 4, 16,
    64 from the 1×1 mean colour; des4/des16/des64 with batch norm and
    LeakyReLU 0.2; 90 Langevin steps per grid of ``x ← x + (δ²/2)∇f(x)``
    with δ = 0.3, no noise and no reference term, clipped to 0..255 on
    pixels 0..255; Adam lr 0.3, β1 0.5, batch 100 (their declared weight
    decay is never added to the loss, nor their gradient clip applied)."""
    from gcnjax.multigrid import MultigridConfig

    return MultigridConfig(
        grids=(4, 16, 64), width=1.0, norm="batch", sigma=None, start="mean",
        langevin=LangevinConfig.from_delta(0.3, 90, noise=False), clip_to_data=True, pixel_scale="pixels",
        learning_rate=0.3, beta1=0.5, max_abs_grad=None, weight_decay=0.0, batch_size=100, n_iterations=1000,
        run=RunConfig(log_every=10, image_every=100, checkpoint_every=100),
    )


def multigrid_paper():
    """The paper's Langevin for the same models:
    ``x ← x + (δ²/2)(∇f(x) − x/σ²) + δξ`` with the Gaussian reference
    (σ = 50, the ``ref_sig`` of the authors' code) centred on the data's
    mean colour (pixels minus the mean), noise on, no clipping."""
    return dataclasses.replace(
        multigrid_authors(), sigma=50.0, langevin=LangevinConfig.from_delta(0.3, 90), clip_to_data=False,
        pixel_scale="minus_mean",
    )


MULTIGRID_PRESETS = {"authors": multigrid_authors, "paper": multigrid_paper}


def get_multigrid(name: str):
    """The multi-grid preset called ``name`` (one of :data:`MULTIGRID_PRESETS`)."""
    if name not in MULTIGRID_PRESETS:
        raise ValueError(f"unknown multi-grid preset {name!r}; choose one of {', '.join(MULTIGRID_PRESETS)}.")
    return MULTIGRID_PRESETS[name]()


def get(name: str) -> DescriptorConfig:
    """The preset called ``name`` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]()


# ---------------------------------------------------------------- generator (alternating back-propagation)


def abp():
    """The generator as ``gcnjax abp train`` starts it: the face net,
    d = 100, images in [−1, 1] with σ = 0.2, inference by 10 Langevin steps
    of δ = 0.05 per iteration (warm-started), Adam lr 1e-3 with β1 = 0.5,
    batch 50, 40 epochs; pictures (and, with validation examples, the
    early-stopping check) every 50 iterations, checkpoints every 200.

    PAPERS §4's typical settings are σ = 0.3, δ = 0.3, 30 steps, lr 3e-4
    (:class:`gcnjax.generator.GeneratorConfig`'s defaults). These were
    chosen on validation faces, at 32² (the ``face32`` net, d = 20) and at
    64² (d = 100) (``experiments/abp_faces.py``, RESULTS.md). With PAPERS'
    σ = 0.3 and δ = 0.3 the prior ``||z||²/2`` pulls the posterior mode of
    faces never seen far from their best fit, and the generator reconstructs
    them worse than PCA at the same d; the rate and schedule above overfit
    a few hundred faces within some 300 iterations, so a shorter run loses
    nothing. With δ = 0.05 each training face's inference covers 0.5 units
    of Langevin time over the whole run, a short run from z ~ N(0, I): the
    training latents stay near the prior's scale, and the prior's samples
    are faces, the nearer the larger σ. σ = 0.2 reconstructed the validation
    faces best at 64² and within 1% of the best at 32² (σ = 0.3 there), both
    better than σ = 0.05 (whose latents sit far outside N(0, I) and whose
    prior samples are grey) and than PCA ("σ and the inference step"); on
    the test faces, 3 seeds, better than σ = 0.05 at 32² and within the
    seeds' spread of it at 64² ("σ = 0.2 becomes the default")."""
    from gcnjax.generator import GeneratorConfig

    return GeneratorConfig(
        net="face", latent_dim=100, sigma=0.2, langevin=LangevinConfig.from_delta(0.05, 10), optimizer="adam",
        learning_rate=1e-3, beta1=0.5, batch_size=50, n_epochs=40,
        run=RunConfig(log_every=10, image_every=50, checkpoint_every=200),
    )


# ---------------------------------------------------------------- spatial-temporal (videos, sounds)


def stg(variant: str = "st", *, frames: int = 70, image_size: int = 100, channels: int = 3,
        **overrides) -> DescriptorConfig:
    """The authors' settings for one variant (``"st"``, ``"fc_s"``,
    ``"fc_s_large"``, or our small-frame ``"st_small"``:
    :func:`gcnjax.nets.stg_layers`): ReLU, Gaussian initial weights of std 0.001, f = sum
    of the top responses, pixels 0..255 minus their mean, σ = 1, δ = 0.3,
    20 Langevin steps, 3 persistent chains started from N(0, 1) noise (near
    the mean), Adam (lr 1e-3, β1 0.5) with no per-layer division, gradient
    cap or weight decay, 500 iterations (= epochs on one video).
    ``overrides`` replace any field."""
    if variant not in STG_VARIANTS:
        raise ValueError(f"variant must be one of {STG_VARIANTS}, got {variant!r}.")
    config = DescriptorConfig(
        layers=stg_layers(variant, image_size),
        top="sum",
        activation="relu",
        init_std=0.001,
        sigma=1.0,
        langevin=LangevinConfig.from_delta(0.3, 20),
        n_chains=3,
        chain_init="noise",
        init_scale=1.0,
        persistent=True,
        optimizer="adam",
        learning_rate=1e-3,
        beta1=0.5,
        weight_decay=0.0,
        divide_by_positions=False,
        max_abs_grad=None,
        image_size=(int(frames), int(image_size), int(image_size)),
        channels=channels,
        pixel_scale="minus_mean",
        batch_size=1,
        n_iterations=500,
        run=RunConfig(image_every=50, checkpoint_every=50),
    )
    return dataclasses.replace(config, **overrides)


def sound(n_samples: int, **overrides) -> DescriptorConfig:
    """A 1-D temporal descriptor for a mono waveform of ``n_samples``
    samples (:data:`gcnjax.nets.SOUND_LAYERS`), otherwise the video
    settings of :func:`stg` (δ = 0.3, 20 steps, 3 chains, Adam 1e-3) but for
    the reference, σ = 0.5: samples are in the pixel-like units of
    :func:`gcnjax.data.sound_to_pixels` (full scale ±127.5), where the
    reference ``N(0, σ²)`` is a white hiss: with the videos' σ = 1 a
    canary's pulses come out as rounded humps over a hiss, with σ = 0.5
    with the song's sharp attacks and linear decays and a quieter hiss
    (experiments/RESULTS.md, "Sound: the trill")."""
    base = stg("st")
    config = dataclasses.replace(base, layers=SOUND_LAYERS, image_size=(int(n_samples),), channels=1, sigma=0.5)
    return dataclasses.replace(config, **overrides)


# ---------------------------------------------------------------- FRAME


def frame(kind: str = "texture", **overrides) -> DescriptorConfig:
    """Sampling and learning settings of a FRAME run (a DescriptorConfig).

    ``kind="texture"``: images standardised (``pixel_scale="standard"``:
    minus the mean, divided by the sd), σ = 1, so that the reference
    ``q = N(0, σ²I)`` is white noise of the observed variance, and
    Langevin steps of δ = 0.1 (a tenth of the data's sd), 10 per iteration,
    and the ``"pairwise"`` top (:class:`gcnjax.frame.FrameTop`): besides
    each feature's potential, the co-occurrence of the features at each
    position, whose match in expectation draws the junctions and strokes
    that potentials of single features leave out; Adam at lr 0.01 decaying
    by a cosine to 0.001 over 600 iterations: as the rate decays the chains
    catch up with the pair weights, and the floor keeps learning able to
    answer them (why the pair term needs both: :class:`gcnjax.frame.FrameTop`;
    a constant 0.01, a decay to 0, or this cosine stretched over 1200
    iterations each let brick's chains run away: lower ``learning_rate``
    for longer runs). ``"object"``: the
    paper's setting, σ = 1 and δ = 0.3 on 0..255 minus the mean, 30 steps,
    Adam at a constant lr 0.01 for 300 iterations. Both: persistent chains
    from zero, Adam's β1 0.5, no gradient capping or weight decay.

    Why the texture model is standardised: with σ = 1 pixel against a
    texture of sd 20–50 pixels, a filter-bank FRAME model can only reach
    the data's contrast through f, so ``E = ||x||²/2σ² − f`` is a cold
    model: samples sit at x ≈ σ²∇f(x), a pixel's conditional spread is
    about σ, and chains of δ = 0.3 follow the gradient from zero to a
    grating of the strongest filter and stay there. A reference of the
    data's own variance keeps the model hot enough for Langevin to mix.
    Adam, because the raw gradient ``E_data[φ] − E_model[φ]`` of a
    stationary weight is a sum over all positions (about 10³–10⁶ for a
    64×64 image): plain SGD needs a learning rate tuned to the image size,
    Adam does not. ``layers`` is only used to check image sizes: one layer
    of the bank's largest filter.
    """
    if kind not in ("texture", "object"):
        raise ValueError(f"FRAME kind must be 'texture' or 'object', got {kind!r}.")
    texture = kind == "texture"
    base = dict(
        layers=(ConvSpec(1, 15, 1, "SAME"),),
        top="pairwise" if texture else "dense",
        sigma=1.0,
        langevin=LangevinConfig.from_delta(0.1, 10) if texture else LangevinConfig.from_delta(0.3, 30),
        n_chains=4 if texture else 7,
        chain_init="zeros",
        persistent=True,
        optimizer="adam",
        learning_rate=0.01,
        learning_rate_decay="cosine" if texture else "constant",
        learning_rate_decay_to=0.1 if texture else 0.0,
        beta1=0.5,
        weight_decay=0.0,
        divide_by_positions=False,
        max_abs_grad=None,
        image_size=(128, 128),
        channels=3,
        pixel_scale="standard" if texture else "minus_mean",
        n_iterations=600 if texture else 300,
        run=RunConfig(log_every=10, image_every=50, checkpoint_every=50),
    )
    base.update(overrides)
    return DescriptorConfig(**base)


# ---------------------------------------------------------------- cooperative training


COOP_NETS = ("ours", "authors")


def coop(image_size: int = 64, channels: int = 3, width: int = 64, nets: str = "ours", **overrides):
    """The authors' settings (CoopNets TensorFlow code) at a CPU size.

    Images in [−1, 1]. Descriptor: conv 5×5 s2 w → conv 3×3 s2 2w →
    conv 3×3 s1 4w (SAME, LeakyReLU 0.2) → a fully connected top;
    σ_d = 0.016, T = 15 revision steps of δ = 0.002, Adam lr 0.007 β1 0.5.
    Generator: z (100-d) → Dense → (s, s, C0) → 5×5 transposed convs of
    stride 2 → tanh; σ_g = 0.3, no latent inference (0 steps), Adam lr
    1e-4 β1 0.5 (raise it for short runs).

    ``nets`` picks the two nets:

    * ``"authors"``: as in the authors' code. The descriptor's top is 100
      summed fully connected units (``top_units=100``); the generator
      starts at s = 4 (the authors' 1×1 → 4×4 transposed conv of kernel 4,
      VALID, which is exactly a dense layer reshaped to 4×4), C0 = 2^(L−1)·w
      halving to w at the last hidden layer, each hidden layer batch-
      normalised by its batch's statistics (``generator_norm="batch"``).
      Needs an image size of 4·2^L (32, 64 …).
    * ``"ours"``: one top unit, no normalisation, s = image_size / 2^L ≤ 8
      for the smallest such L in 2..4 (28 → 7, 32 → 8, 64 → 8).

    ``width`` (w = 64, the authors') scales every layer's channels (the
    descriptor's are w, 2w, 4w): 32 quarters the work, for CPU runs.
    ``overrides`` replace CoopConfig fields.
    """
    from gcnjax.coop import CoopConfig
    from gcnjax.generator import GeneratorConfig

    if nets not in COOP_NETS:
        raise ValueError(f"nets must be one of {COOP_NETS}, got {nets!r}.")
    size = int(image_size)
    if nets == "authors":
        n_up = next((L for L in range(1, 8) if size == 4 * 2**L), None)
        if n_up is None:
            raise ValueError(f"image size {size} is not 4·2^L (8, 16, 32, 64, 128 …), which the authors' "
                             "generator (a 4×4 start doubled L times) needs; use nets='ours' or such a size.")
    else:
        n_up = next((L for L in (2, 3, 4) if size % (2**L) == 0 and size // (2**L) <= 8), None)
        if n_up is None:
            raise ValueError(f"image size {size} cannot be made by doubling a start of at most 8 pixels; "
                             "use e.g. 28, 32 or 64.")
    start = size // 2**n_up
    w = int(width)
    if w < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}.")
    widths = tuple(w * 2**i for i in reversed(range(n_up)))  # e.g. (256, 128, 64)
    descriptor = DescriptorConfig(
        layers=(ConvSpec(w, 5, 2, "SAME"), ConvSpec(2 * w, 3, 2, "SAME"), ConvSpec(4 * w, 3, 1, "SAME")),
        top="dense", top_units=100 if nets == "authors" else 1, activation="leaky_relu", init_std=0.01,
        sigma=0.016, langevin=LangevinConfig.from_delta(0.002, 15), n_chains=64, chain_init="zeros",
        persistent=False, optimizer="adam", learning_rate=0.007, beta1=0.5, weight_decay=0.0,
        divide_by_positions=False, max_abs_grad=None, image_size=(size, size), channels=int(channels),
        pixel_scale="unit", batch_size=64,
    )
    generator = GeneratorConfig(latent_dim=100, sigma=0.3, langevin=LangevinConfig.from_delta(0.1, 0),
                                  optimizer="adam", learning_rate=1e-4, beta1=0.5)
    base = dict(descriptor=descriptor, generator=generator, generator_start=(start, start),
                generator_channels=widths + (int(channels),),
                generator_norm="batch" if nets == "authors" else "none")
    base.update(overrides)
    return CoopConfig(**base)

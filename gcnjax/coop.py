"""Cooperative training of a descriptor and a generator (CoopNets).

(Xie, Lu, Gao, Zhu, Wu, "Cooperative Training of Descriptor and Generator
Networks", AAAI 2018 / TPAMI; PAPERS §6.) The generator ``g(z; θ)``
proposes, the descriptor ``E(x; w) = ||x||²/(2σ_d²) − f(x; w)`` revises,
and each learns from the revised images. One iteration:

1. ``z ~ N(0, I)``; proposals ``x₀ = g(z; θ)`` (:mod:`gcnjax.generator`'s net);
2. revision: Langevin dynamics on the descriptor's energy from ``x₀``,
   ``x ← x − (δ²/2) ∇E(x) + δ ξ`` for T steps (:func:`gcnjax.descriptor.synthesize`),
   giving ``x̃``; the revision lowers the energy of the proposals
   (``energy_proposals`` > ``energy_revised`` in the metrics);
3. the descriptor's maximum-likelihood step on ``mean f(x̃) − mean f(data)``
   (:func:`gcnjax.descriptor.ml_loss`), with the descriptor's optimizer;
4. the generator's step ("MCMC teaching"): it learns to map its own ``z``
   to the revised images, minimising
   ``mean ||x̃ − g(z; θ)||² / (2σ_g²)`` (:func:`gcnjax.generator.learning_loss`),
   optionally after a few steps of latent inference from ``z``
   (:func:`gcnjax.generator.infer` with the generator's Langevin settings;
   0 steps, the authors' default, keeps ``z``).

Both nets' steps use the parameters from the start of the iteration; the
whole iteration is one jit'd function (:func:`make_train_step`) run by
:func:`gcnjax.run.learn`; :func:`learn_coop` writes a run directory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax import generator as G
from gcnjax.nets import DescriptorNet, GeneratorNet, init_params
from gcnjax.run import Family, Outputs, Picture, Trainer, learn
from gcnjax.train import RunConfig

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]

__all__ = ["FAMILY", "CoopConfig", "CoopState", "make_nets", "init_state", "make_train_step",
           "make_sampler", "learn_coop"]


@dataclasses.dataclass(frozen=True)
class CoopConfig:
    """Everything that defines a cooperative run (saved with its outputs).

    descriptor: the descriptor's net (``layers``, ``top``, ``activation``,
      ``init_std``), reference ``sigma``, revision Langevin (``langevin``:
      T steps of δ), optimizer, ``n_chains`` (proposals per iteration),
      ``batch_size`` (observed images per iteration), ``image_size``,
      ``channels``, ``pixel_scale`` and ``data_noise``. Its
      ``n_iterations``, ``seed``, ``run``, ``chain_init``, ``persistent``
      and ``restart_fraction`` are not used (chains start at the proposals
      every iteration); its ``learning_rate_decay`` must be ``"constant"``.
    generator: the generator's ``latent_dim``, observation ``sigma``,
      latent inference (``langevin``; 0 steps: none), optimizer. Its
      ``n_epochs``, ``batch_size``, ``latent_init``, ``warm_start``, ``seed``
      and ``run`` are not used.
    generator_start, generator_channels, generator_kernel, generator_norm:
      the generator net (:class:`gcnjax.nets.GeneratorNet`; tanh output).
      ``generator_norm="batch"`` (the authors' batch norm) normalises by
      the statistics of the proposals' batch; it needs 0 latent inference
      steps (inference runs one chain per example).
    n_iterations, seed, run: of the cooperative run.
    """

    descriptor: D.DescriptorConfig
    generator: G.GeneratorConfig
    generator_start: Tuple[int, int] = (8, 8)
    generator_channels: Tuple[int, ...] = (128, 64, 3)
    generator_kernel: int = 5
    generator_norm: str = "none"
    n_iterations: int = 300
    seed: int = 0
    # A metrics row every iteration: one host sync per (seconds-long) step.
    run: RunConfig = RunConfig(log_every=1, image_every=50, checkpoint_every=50)

    def __post_init__(self):
        if not isinstance(self.descriptor, D.DescriptorConfig):
            raise ValueError(f"CoopConfig.descriptor must be a DescriptorConfig, got {type(self.descriptor).__name__}.")
        if not isinstance(self.generator, G.GeneratorConfig):
            raise ValueError(f"CoopConfig.generator must be a GeneratorConfig, got {type(self.generator).__name__}.")
        if isinstance(self.n_iterations, bool) or not isinstance(self.n_iterations, (int, np.integer)) \
                or self.n_iterations < 1:
            raise ValueError(f"CoopConfig.n_iterations must be an integer >= 1, got {self.n_iterations!r}.")
        for name, net_config in (("descriptor", self.descriptor), ("generator", self.generator)):
            if net_config.learning_rate_decay != "constant":
                raise ValueError(
                    f"CoopConfig.{name}.learning_rate_decay must be 'constant': a decay runs over the "
                    f"{name}'s own run length, which a cooperative run does not use, got "
                    f"{net_config.learning_rate_decay!r}."
                )
        if self.descriptor.pixel_scale != "unit":
            raise ValueError(
                "CoopConfig.descriptor.pixel_scale must be 'unit' (images in [-1, 1], the range of the "
                f"generator's tanh output), got {self.descriptor.pixel_scale!r}."
            )
        if int(self.generator_channels[-1]) != self.descriptor.channels:
            raise ValueError(
                f"CoopConfig.generator_channels ends with {self.generator_channels[-1]} image channels but "
                f"descriptor.channels is {self.descriptor.channels}; make them equal."
            )
        if self.generator_norm == "batch" and self.generator.langevin.n_steps:
            raise ValueError(
                "CoopConfig.generator_norm='batch' with latent inference "
                f"(generator.langevin.n_steps = {self.generator.langevin.n_steps}): inference runs one chain per "
                "example, where batch statistics are undefined; use 0 inference steps or generator_norm 'layer'."
            )
        out = self.generator_net().output_shape()[:2]
        if tuple(out) != tuple(self.descriptor.image_size):
            raise ValueError(
                f"the generator makes {out[0]}x{out[1]} images (start {tuple(self.generator_start)} doubled "
                f"{len(self.generator_channels) - 1} times) but descriptor.image_size is "
                f"{tuple(self.descriptor.image_size)}; change generator_start or the image size."
            )

    def generator_net(self) -> GeneratorNet:
        return GeneratorNet(start=tuple(self.generator_start), channels=tuple(self.generator_channels),
                            kernel=self.generator_kernel, stride=2, norm=self.generator_norm, output="tanh")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CoopConfig":
        d = dict(d)
        d["descriptor"] = D.DescriptorConfig.from_dict(d["descriptor"])
        d["generator"] = G.GeneratorConfig.from_dict(d["generator"])
        if isinstance(d.get("run"), dict):
            d["run"] = RunConfig(**d["run"])
        for key in ("generator_start", "generator_channels"):
            d[key] = tuple(d[key])
        return cls(**d)


class CoopState(NamedTuple):
    """Training state of the pair.

    des_params, des_opt_state: the descriptor's params w and optimizer state.
    gen_params, gen_opt_state: the generator's params θ and optimizer state.
    key: the PRNG key of the next iteration.
    step: iterations done.
    """

    des_params: PyTree
    des_opt_state: PyTree
    gen_params: PyTree
    gen_opt_state: PyTree
    key: jax.Array
    step: jax.Array


def make_nets(config: CoopConfig) -> Tuple[DescriptorNet, GeneratorNet]:
    return D.make_net(config.descriptor), config.generator_net()


def init_state(key, config: CoopConfig, des_net, gen_net) -> CoopState:
    """Fresh params and optimizer states of both nets."""
    k_des, k_gen, k_next = jax.random.split(key, 3)
    size = tuple(config.descriptor.image_size) + (config.descriptor.channels,)
    des_params = init_params(des_net, k_des, jnp.zeros((1,) + size, jnp.float32))
    gen_params = init_params(gen_net, k_gen, jnp.zeros((1, config.generator.latent_dim), jnp.float32))
    des_opt = D.make_optimizer(config.descriptor, des_params, config.descriptor.image_size).init(des_params)
    gen_opt = G.make_optimizer(config.generator).init(gen_params)
    return CoopState(des_params, des_opt, gen_params, gen_opt, k_next, jnp.zeros((), jnp.int32))


def _mean_energy(des_apply, params, x, sigma):
    return jnp.mean(D.energy(des_apply, params, x, sigma))


def make_train_step(config: CoopConfig, des_apply: ApplyFn, gen_apply: ApplyFn,
                    des_optimizer: optax.GradientTransformation, gen_optimizer: optax.GradientTransformation):
    """The jit'd cooperative step ``(state, data) -> (state, metrics)``.

    ``data``: a batch of observed images in [−1, 1]. Metrics (device scalars):
    ``energy_proposals`` and ``energy_revised`` (mean descriptor energy of
    ``g(z)`` before and of ``x̃`` after the revision), ``energy_data``,
    ``f_data``, ``f_revised``, ``revision_drop`` (= energy_proposals −
    energy_revised), ``revision_mse`` (mean squared change per pixel),
    ``des_grad_norm``, ``gen_loss`` (mean ``||x̃ − g(z)||²/(2σ_g²)`` before the
    update), ``gen_mse`` (per pixel), ``gen_grad_norm``, ``chain_grad_norm``,
    ``diverged`` (chains that became non-finite). Traced once per data
    shape; the state is donated.
    """
    dcfg, gcfg = config.descriptor, config.generator
    n, d = dcfg.n_chains, gcfg.latent_dim
    revision, inference = dcfg.langevin, gcfg.langevin

    def train_step(state: CoopState, data: jax.Array):
        key, k_z, k_revise, k_infer = jax.random.split(state.key, 4)
        data = D.add_data_noise(state.key, data, dcfg.data_noise)
        z = jax.random.normal(k_z, (n, d), jnp.float32)
        proposals = gen_apply(state.gen_params, z)
        revised, info = D.synthesize(k_revise, des_apply, state.des_params, proposals, revision, dcfg.sigma)
        revised = jax.lax.stop_gradient(revised)

        # The descriptor learns from the revised images (maximum likelihood).
        des_params, des_opt_state, des_grads, terms = D.ml_update(
            des_optimizer, des_apply, state.des_params, state.des_opt_state, data, revised)
        f_revised, f_data = terms.f_samples, terms.f_data

        # The generator learns to map its z (optionally inferred from z) to them.
        if inference.n_steps:
            z, _ = G.infer(k_infer, gen_apply, state.gen_params, revised, z, sigma=gcfg.sigma, sampler=inference)
        gen_loss, gen_grads = jax.value_and_grad(G.learning_loss)(state.gen_params, gen_apply, z, revised,
                                                                  sigma=gcfg.sigma)
        gen_updates, gen_opt_state = gen_optimizer.update(gen_grads, state.gen_opt_state, state.gen_params)
        gen_params = optax.apply_updates(state.gen_params, gen_updates)

        energy_proposals = _mean_energy(des_apply, state.des_params, proposals, dcfg.sigma)
        energy_revised = _mean_energy(des_apply, state.des_params, revised, dcfg.sigma)
        finite = jnp.all(info.is_finite, axis=0) if revision.n_steps else jnp.isfinite(revised.sum())
        per_pixel = float(np.prod(revised.shape[1:]))
        des_grad_norm, gen_grad_norm = optax.tree.norm(des_grads), optax.tree.norm(gen_grads)
        metrics = {
            "f_data": f_data,
            "f_revised": f_revised,
            "energy_data": _mean_energy(des_apply, state.des_params, data, dcfg.sigma),
            "energy_proposals": energy_proposals,
            "energy_revised": energy_revised,
            "revision_drop": energy_proposals - energy_revised,
            "revision_mse": jnp.mean(jnp.square(revised - proposals)),
            "des_grad_norm": des_grad_norm,
            "gen_loss": gen_loss,
            "gen_mse": gen_loss * 2 * gcfg.sigma**2 / per_pixel,
            "gen_grad_norm": gen_grad_norm,
            "chain_grad_norm": jnp.mean(info.grad_norm[-1]) if revision.n_steps else jnp.float32(0),
            "diverged": jnp.sum(~finite),
            # Either net's learning gradient exactly zero (every unit dead, or
            # the generator's tanh saturated): learning cannot go on.
            "dead_units": ((des_grad_norm == 0) | (gen_grad_norm == 0)).astype(jnp.float32),
            "samples_flat": D.flat_samples(terms, des_grad_norm),
        }
        new_state = CoopState(des_params, des_opt_state, gen_params, gen_opt_state, key, state.step + 1)
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,))


def make_sampler(config: CoopConfig, des_apply: ApplyFn, gen_apply: ApplyFn):
    """A jit'd ``(state, z, key) -> (proposals, revised)``: the generator's
    ``g(z)`` and the descriptor's revision of them (the pictures of a run)."""
    dcfg = config.descriptor

    @jax.jit
    def sample(state: CoopState, z, key):
        proposals = gen_apply(state.gen_params, z)
        revised, _ = D.synthesize(key, des_apply, state.des_params, proposals, dcfg.langevin, dcfg.sigma)
        return proposals, revised

    return sample


def _check_images(images, config: CoopConfig) -> np.ndarray:
    images = gdata.check_batch(images, config.descriptor.channels, "observed images")
    want = tuple(config.descriptor.image_size)
    if images.shape[1:3] != want:
        raise gdata.DataError(
            f"observed images have shape {images.shape}, expected (N, {want[0]}, {want[1]}, "
            f"{config.descriptor.channels}); resize them to the config's image_size (--image-size)."
        )
    return images


def _trainer(config: CoopConfig, x: jax.Array, scale: gdata.PixelScale, images: np.ndarray,
             inputs: Dict[str, Any]) -> Trainer:
    """Cooperative learning: proposals by the generator, revision by the
    descriptor's Langevin, both nets learning from the revised images."""
    des_net, gen_net = make_nets(config)
    des_opt = D.make_optimizer(config.descriptor, jax.eval_shape(des_net.init, jax.random.key(0), x[:1]), x.shape[1:3])
    step = make_train_step(config, des_net.apply, gen_net.apply, des_opt, G.make_optimizer(config.generator))
    sampler = make_sampler(config, des_net.apply, gen_net.apply)
    k_init, k_pictures = jax.random.split(jax.random.key(config.seed))
    z_pictures = jax.random.normal(k_pictures, (inputs.get("n_pictures", 36), config.generator.latent_dim),
                                   jnp.float32)

    def pictures(state, it):
        proposals, revised = sampler(state, z_pictures, jax.random.fold_in(k_pictures, it))
        return {"proposals": Picture(scale.to_pixels(np.asarray(proposals))),
                "revised": Picture(scale.to_pixels(np.asarray(revised)))}

    def finish(state, params):
        return Outputs(pictures=pictures(state, config.n_iterations), report=[
            "| observed | generator proposals g(z) | revised by the descriptor |",
            "|---|---|---|",
            "| ![observed](observed.png) | ![proposals](proposals.png) | ![revised](revised.png) |",
            "",
        ])

    dcfg, gcfg = config.descriptor, config.generator
    return Trainer(
        phase_ends=[config.n_iterations],
        init=lambda phase: init_state(k_init, config, des_net, gen_net),
        step=lambda phase: step,
        batches=gdata.shuffled_batches(x, min(dcfg.batch_size, x.shape[0]), config.seed),
        snapshot=pictures,
        params=lambda state: {"descriptor": state.des_params, "generator": state.gen_params},
        finish=finish,
        describe=(f"{dcfg.n_chains} proposals per iteration revised by {dcfg.langevin.n_steps} Langevin steps "
                  f"(step {dcfg.langevin.step_size:g}, noise {dcfg.langevin.noise_scale}); σ_d = {dcfg.sigma}, "
                  f"σ_g = {gcfg.sigma}, {gcfg.langevin.n_steps} latent inference steps; descriptor top of "
                  f"{dcfg.top_units} summed unit(s), generator from {config.generator_start[0]}×"
                  f"{config.generator_start[1]} with {config.generator_norm} normalisation"
                  + ("; revised images clipped to [−1, 1]" if dcfg.langevin.clip is not None else "") + "."),
        plot_keys=("energy_data", "energy_proposals", "energy_revised", "revision_drop"),
    )


FAMILY = Family(
    name="coop",
    config_type=CoopConfig,
    check=lambda config, images, inputs: _check_images(images, config),
    scale=lambda config, images, inputs: gdata.PixelScale("unit"),
    load_scale=lambda d: gdata.PixelScale("unit") if d is None else gdata.PixelScale.from_dict(d),
    trainer=_trainer,
    langevin_path=("descriptor", "langevin"),
    memory_bound="lower --chains (the images of one iteration)",
    observed=lambda images, scale, inputs: {"observed": Picture(images[:inputs.get("n_pictures", 36)])},
    chains=lambda run_dir, payload, settings: _chains(run_dir, payload, settings),
)


def load_coop_run(run_dir) -> Tuple[CoopConfig, gdata.PixelScale, DescriptorNet, GeneratorNet, Dict[str, Any]]:
    """``(config, scale, descriptor net, generator net, params)`` of a
    finished CoopNets run (``params = {"descriptor": ..., "generator": ...}``)."""
    run_dir = Path(run_dir)
    for name in ("config.json", "params.msgpack"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{str(run_dir / name)!r} is missing: is {str(run_dir)!r} a finished coop run?")
    payload = json.loads((run_dir / "config.json").read_text())
    try:
        config = CoopConfig.from_dict(payload["config"])
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{str(run_dir)!r} is not a coop run ({err}).") from None
    des_net, gen_net = make_nets(config)
    template = jax.eval_shape(lambda: init_state(jax.random.key(0), config, des_net, gen_net))
    template = {"descriptor": template.des_params, "generator": template.gen_params}
    params = flax.serialization.from_bytes(template, (run_dir / "params.msgpack").read_bytes())
    return config, FAMILY.load_scale(payload.get("pixel_scale")), des_net, gen_net, params


def _chains(run_dir, payload: Dict[str, Any], settings):
    """CoopNets' samples: the generator's proposals ``g(z)``, ``z ~ N(0, I)``,
    revised by the descriptor's Langevin (traced)."""
    from gcnjax.sampling import Chains, langevin_draw

    config, scale, des_net, gen_net, params = load_coop_run(run_dir)
    dcfg = config.descriptor
    sampler = settings.chain(dcfg.langevin)

    def draw(params, key, n):
        k_z, k_chain = jax.random.split(key)
        z = jax.random.normal(k_z, (n, config.generator.latent_dim), jnp.float32)
        proposals = gen_net.apply(params["generator"], z)
        energy_fn = D.make_energy_fn(des_net.apply, params["descriptor"], dcfg.sigma)
        return langevin_draw(k_chain, energy_fn, proposals, sampler, settings.trace_points)

    return Chains(
        shape=tuple(dcfg.image_size) + (dcfg.channels,), params=params, draw=draw, to_data=scale.to_pixels,
        picture=Picture,
        describe=(f"the generator's proposals g(z), z ~ N(0, I_{config.generator.latent_dim}), revised by "
                  f"{sampler.n_steps} Langevin steps (step {sampler.step_size:g}, noise {sampler.noise_scale}) "
                  f"under the descriptor, σ = {dcfg.sigma}."
                  + (" The generator's batch norm normalises each block of chains by that block's statistics, as "
                     "the authors' code does each batch it samples (a padded last block draws its padding "
                     "from the prior too)." if config.generator_norm == "batch" else "")),
        n_steps=sampler.n_steps,
        logdensity=lambda params, x: -D.make_energy_fn(des_net.apply, params["descriptor"], dcfg.sigma)(x),
    )


def learn_coop(config: CoopConfig, images: np.ndarray, out, *, title: str = "Cooperative training",
               source: str = "", data_spec: Optional[Dict[str, Any]] = None, overwrite: bool = False,
               resume: bool = False, quiet: bool = False, n_pictures: int = 36,
               devices: Optional[int] = None) -> Dict[str, Any]:
    """Train a descriptor and a generator cooperatively on ``images``
    (pixels 0..255, ``(N, H, W, C)``) and write a run directory
    (:func:`gcnjax.run.learn` with :data:`FAMILY`): metrics.csv with the
    energies of the proposals before and after revision, grids of the
    generator's proposals and of the revised images for ``n_pictures`` fixed
    ``z`` over the iterations, ``params.msgpack`` (``{"descriptor": w,
    "generator": θ}``). Returns the engine's summary, with the paths of
    ``proposals`` and ``revised``."""
    result = learn(FAMILY, config, images, out, title=title, source=source, data_spec=data_spec,
                   overwrite=overwrite, resume=resume, quiet=quiet, devices=devices, n_pictures=n_pictures)
    result["proposals"] = result["run_dir"] / "proposals.png"
    result["revised"] = result["run_dir"] / "revised.png"
    return result

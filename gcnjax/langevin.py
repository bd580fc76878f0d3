"""Langevin dynamics: the one sampler of gcnjax.

The sampler knows nothing of images or networks. It takes an energy function
of ONE chain's position (any pytree of arrays) returning a scalar, and moves a
batch of chains (a leading chain axis on every leaf) by

    x ← x − a ∇E(x) + b ξ,          ξ ~ N(0, I),

with step size ``a`` and noise scale ``b``. Two conventions are in use:

* **coupled** (exact Langevin, the papers of the generative ConvNet family):
  ``b = sqrt(2a)``. The papers write it with a step δ as
  ``x ← x − (δ²/2) ∇E(x) + δ ξ``, i.e. ``a = δ²/2, b = δ``
  (see :func:`coupled_from_delta`). It is also the common
  ``x + ε ∇log p(x) + sqrt(2ε) ξ`` with ``ε = a``.
* **decoupled** (short-run EBM practice): ``a`` and ``b`` are set
  independently, typically a large step and tiny noise. The chain then no
  longer targets ``exp(−E)``; it targets ``exp(−E / T)`` with temperature
  ``T = b² / (2a)`` in the small-step limit.

``b = 0`` is gradient descent on E. With ``mala=True`` each move is a
proposal accepted with the Metropolis–Hastings probability, which makes the
chain exact for ``exp(−E)`` at any step size and any noise (a decoupled
move is then only a proposal; to sample ``exp(−E / T)`` exactly, pass the
energy ``E / T``).

The kernel is written in the style of BlackJAX: :func:`init` builds a
:class:`LangevinState` for one chain, :func:`step` is a pure
``(key, state) -> (state, info)`` map, and :func:`sample` runs many chains
(``jax.vmap``) for many steps (one ``jax.lax.scan``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
EnergyFn = Callable[[PyTree], jax.Array]

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "ChainDivergedError",
    "coupled_from_delta",
    "temperature",
    "init",
    "step",
    "sample",
    "raise_if_diverged",
    "LangevinConfig",
    "FULL_UNROLL_MAX_STEPS",
]


# Chains up to this length are unrolled whole by LangevinConfig's default,
# whose compile time stays short (measured: experiments/RESULTS.md).
FULL_UNROLL_MAX_STEPS = 32


class LangevinState(NamedTuple):
    """State of one chain (or of a batch of chains, leaves with a chain axis).

    position: the current point x, any pytree of arrays.
    energy: E(x), a scalar per chain.
    grad: ∇E(x), a pytree shaped like ``position``.
    """

    position: PyTree
    energy: jax.Array
    grad: PyTree


class LangevinInfo(NamedTuple):
    """What one step did, per chain.

    energy: E(x) after the step (from :func:`sample` without MALA: E(x)
        where the step started; see there).
    grad_norm: the Euclidean norm of ∇E(x) at the same point (all leaves).
    acceptance_rate: the Metropolis–Hastings acceptance probability of the
        proposal (1 for unadjusted Langevin).
    is_accepted: whether the proposal was taken (always True unadjusted).
    is_finite: whether the position after the step, and the energy and
        gradient recorded, are all finite. A False here means the chain
        diverged: its state is no longer usable, and
        :func:`raise_if_diverged` turns it into an error.
    """

    energy: jax.Array
    grad_norm: jax.Array
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_finite: jax.Array


class ChainDivergedError(FloatingPointError):
    """A Langevin chain reached a non-finite energy, gradient or position."""


def coupled_from_delta(delta: float) -> Tuple[float, float]:
    """Map the papers' Langevin step δ to ``(step_size, noise_scale)``.

    ``x ← x − (δ²/2) ∇E(x) + δ ξ`` is :func:`step` with
    ``step_size = δ²/2`` and ``noise_scale = δ``.

    >>> coupled_from_delta(0.3)
    (0.045, 0.3)
    """
    delta = float(delta)
    if not math.isfinite(delta) or delta <= 0:
        raise ValueError(
            f"Langevin delta must be a positive number, got {delta!r}; "
            "the papers use delta = 0.3 for images in 0..255 minus the mean."
        )
    return 0.5 * delta * delta, delta


def temperature(step_size: float, noise_scale: Optional[float]) -> float:
    """The temperature ``T = b² / (2a)`` that a decoupled chain targets.

    A coupled chain (``noise_scale=None`` or ``sqrt(2a)``) has ``T = 1``.
    """
    _check_settings(step_size, noise_scale, mala=False)
    if noise_scale is None:
        return 1.0
    return float(noise_scale) ** 2 / (2.0 * float(step_size))


def _check_settings(step_size, noise_scale, mala):
    # Only concrete (Python or NumPy) values can be checked here; traced
    # values pass through so that a step size can be a jit argument.
    for name, value in (("step_size", step_size), ("noise_scale", noise_scale)):
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        v = np.asarray(value)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"Langevin {name} must be finite, got {value!r}.")
        if name == "step_size" and np.any(v <= 0):
            raise ValueError(
                f"Langevin step_size must be positive, got {value!r}; "
                "use coupled_from_delta(delta) to convert the papers' delta."
            )
        if name == "noise_scale" and np.any(v < 0):
            raise ValueError(
                f"Langevin noise_scale must be >= 0 (0 is gradient descent), got {value!r}."
            )
    if mala and noise_scale is not None and not isinstance(noise_scale, jax.core.Tracer):
        if np.any(np.asarray(noise_scale) == 0):
            raise ValueError(
                "mala=True needs noise: a Metropolis–Hastings correction of "
                "gradient descent (noise_scale=0) is undefined. Use noise_scale=None "
                "(exact Langevin noise) or a positive value."
            )


def _sum_sq(tree: PyTree) -> jax.Array:
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree))


def _all_finite(tree: PyTree) -> jax.Array:
    return jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)])
    )


def init(position: PyTree, energy_fn: EnergyFn) -> LangevinState:
    """Build the state of ONE chain at ``position``."""
    energy, grad = jax.value_and_grad(energy_fn)(position)
    return LangevinState(position, energy, grad)


def _noise_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, noise)


def _resolved_noise(step_size, noise_scale):
    """``b``, with ``None`` meaning exact Langevin ``sqrt(2a)``."""
    if noise_scale is None:
        return jnp.sqrt(2.0 * jnp.asarray(step_size, jnp.float32))
    return noise_scale


def _propose(key, position, grad, step_size, noise_scale, clip):
    """``x − a∇E(x) + bξ`` (clipped to ``clip`` when given), ξ drawn from
    ``fold_in(key, 0)``."""
    noise = _noise_like(jax.random.fold_in(key, 0), position)
    proposal = jax.tree_util.tree_map(lambda x, g, n: x - step_size * g + noise_scale * n, position, grad, noise)
    if clip is not None:
        proposal = jax.tree_util.tree_map(lambda x: jnp.clip(x, clip[0], clip[1]), proposal)
    return proposal


def _log_proposal(to_pos, from_pos, from_grad, step_size, noise_scale):
    """log q(to | from) up to a constant: −||to − from + a∇E(from)||² / (2b²)."""
    diff = jax.tree_util.tree_map(
        lambda t, f, g: t - f + step_size * g, to_pos, from_pos, from_grad
    )
    return -_sum_sq(diff) / (2.0 * noise_scale**2)


def step(
    key: jax.Array,
    state: LangevinState,
    energy_fn: EnergyFn,
    step_size,
    noise_scale=None,
    mala: bool = False,
    clip: Optional[Tuple[float, float]] = None,
) -> Tuple[LangevinState, LangevinInfo]:
    """One Langevin move of ONE chain.

    Proposal ``x' = x − a ∇E(x) + b ξ`` with ``a = step_size`` and
    ``b = noise_scale`` (``None``: ``sqrt(2a)``, exact Langevin). With
    ``clip=(lo, hi)`` the proposal is clipped to the box (as some authors'
    code does for pixels; this breaks exactness and is refused with MALA).
    With ``mala=True`` the proposal is accepted with probability
    ``min(1, exp(E(x) − E(x') + log q(x | x') − log q(x' | x)))``, where
    ``q(x' | x) = N(x'; x − a∇E(x), b² I)``. A proposal with a non-finite
    energy is rejected under MALA.
    """
    if mala and clip is not None:
        raise ValueError("clip cannot be combined with mala=True: the clipped proposal has no density.")
    noise_scale = _resolved_noise(step_size, noise_scale)
    proposal = _propose(key, state.position, state.grad, step_size, noise_scale, clip)
    energy, grad = jax.value_and_grad(energy_fn)(proposal)
    new_state = LangevinState(proposal, energy, grad)

    if mala:
        log_ratio = (
            state.energy
            - energy
            + _log_proposal(state.position, proposal, grad, step_size, noise_scale)
            - _log_proposal(proposal, state.position, state.grad, step_size, noise_scale)
        )
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        acceptance_rate = jnp.minimum(1.0, jnp.exp(log_ratio))
        u = jax.random.uniform(jax.random.fold_in(key, 1))
        is_accepted = u < acceptance_rate
        new_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(is_accepted, new, old), new_state, state
        )
    else:
        acceptance_rate = jnp.ones((), jnp.float32)
        is_accepted = jnp.ones((), bool)

    is_finite = _all_finite(new_state)
    info = LangevinInfo(
        energy=new_state.energy,
        grad_norm=jnp.sqrt(_sum_sq(new_state.grad)),
        acceptance_rate=acceptance_rate,
        is_accepted=is_accepted,
        is_finite=is_finite,
    )
    return new_state, info


def _unadjusted_move(key, position, energy_fn, step_size, noise_scale, clip):
    """One unadjusted Langevin move of ONE chain from ``position``, with E and
    ∇E evaluated once, at the start: ``(new_position, info)``, ``info``
    describing the start. The same move as :func:`step`'s for the same key."""
    energy, grad = jax.value_and_grad(energy_fn)(position)
    new = _propose(key, position, grad, step_size, _resolved_noise(step_size, noise_scale), clip)
    info = LangevinInfo(
        energy=energy,
        grad_norm=jnp.sqrt(_sum_sq(grad)),
        acceptance_rate=jnp.ones((), jnp.float32),
        is_accepted=jnp.ones((), bool),
        is_finite=_all_finite((new, energy, grad)),
    )
    return new, info


def _check_sample_args(n_steps, step_size, noise_scale, mala, x0, chain_batch) -> int:
    """The number of chains in ``x0``, after :func:`sample`'s checks of its arguments."""
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
    _check_settings(step_size, noise_scale, mala)
    leaves = jax.tree_util.tree_leaves(x0)
    if not leaves:
        raise ValueError("x0 is empty: it must hold at least one array with a leading chain axis.")
    n_chains = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) > 0 else None
    if n_chains is None or any(jnp.ndim(l) == 0 or jnp.shape(l)[0] != n_chains for l in leaves):
        raise ValueError(
            "x0 must have a leading chain axis of the same length on every leaf; "
            f"got shapes {[jnp.shape(l) for l in leaves]}. For one chain use x0[None]."
        )
    if chain_batch is not None and (isinstance(chain_batch, bool) or int(chain_batch) < 1):
        raise ValueError(f"chain_batch must be None or an integer >= 1 (chains computed at once), got {chain_batch!r}.")
    return n_chains


def _chain_moves(energy_fn, x0, n_chains, step_size, noise_scale, mala, clip, chain_batch):
    """``(state, body, final_position)`` of :func:`sample`: the chains' start
    (MALA keeps E and ∇E in a :class:`LangevinState`), the scan body that
    moves every chain one step from a step key, and the positions of a state."""
    def over_chains(move):
        if chain_batch is None or int(chain_batch) >= n_chains:
            return jax.vmap(move)
        return lambda *args: jax.lax.map(lambda a: move(*a), args, batch_size=int(chain_batch))

    if mala:
        state = over_chains(lambda x: init(x, energy_fn))(x0)
        one_step = over_chains(lambda k, s: step(k, s, energy_fn, step_size, noise_scale, mala, clip))
        final_position = lambda s: s.position
    else:
        state = x0
        one_step = over_chains(lambda k, x: _unadjusted_move(k, x, energy_fn, step_size, noise_scale, clip))
        final_position = lambda x: x

    def body(state, step_key):
        return one_step(jax.random.split(step_key, n_chains), state)

    return state, body, final_position


def sample(
    key: jax.Array,
    energy_fn: EnergyFn,
    x0: PyTree,
    *,
    n_steps: int,
    step_size,
    noise_scale=None,
    mala: bool = False,
    unroll: int = 1,
    clip: Optional[Tuple[float, float]] = None,
    chunk: Optional[int] = None,
    chain_batch: Optional[int] = None,
) -> Tuple[PyTree, LangevinInfo]:
    """Run a batch of Langevin chains for ``n_steps`` steps.

    Args:
      key: a PRNG key; the same key gives the same samples.
      energy_fn: E of ONE chain's position (no chain axis), a scalar.
      x0: initial positions, every leaf with a leading chain axis.
      n_steps: number of steps (a Python int; the scan length).
      step_size: ``a`` in ``x ← x − a∇E(x) + bξ``; may be a traced scalar.
      noise_scale: ``b``; ``None`` for exact Langevin ``sqrt(2a)``, 0 for
        gradient descent. For the papers' δ use :func:`coupled_from_delta`.
      mala: add the Metropolis–Hastings correction.
      unroll: steps unrolled per iteration of the scan loop, or ``True`` to
        unroll all of them (no loop at all). A speed knob (XLA:CPU runs a
        conv net's chain fastest fully unrolled; measured:
        experiments/benchmarks/RESULTS.md), at a compile time that grows
        with ``n_steps``. A single step is never in a loop.
      clip: optional ``(lo, hi)`` box the positions are clipped to.
      chunk: run the chain as a scan loop over blocks of ``chunk`` steps,
        each block unrolled inside the loop body (the remainder of
        ``n_steps`` unrolled after the loop): a compiled program the size of
        one block for chains too long to unroll whole. ``None`` (or
        ``chunk >= n_steps``) leaves ``unroll`` in charge.
      chain_batch: how many chains each step computes at once. ``None``
        (the default): all of them, one ``jax.vmap``; ``g``: groups of
        ``g`` chains, vmapped within a group, the groups in a loop
        (``jax.lax.map(..., batch_size=g)``). A bound on memory (a call
        holds the activations of ``g`` chains at a time) at the cost of a
        loop.

    Whatever ``unroll``, ``chunk`` and ``chain_batch`` are, the same key
    gives the same samples, to float rounding (XLA may fuse straight-line
    steps differently from a loop's).

    Returns:
      ``(x_final, info)``: positions after the last step, and a
      :class:`LangevinInfo` whose fields have shape ``(n_steps, n_chains)``.
      Diverged chains are flagged in ``info.is_finite``
      (:func:`raise_if_diverged`). Without MALA, ∇E is evaluated once per
      step where the step starts (K evaluations for K steps), and
      ``info.energy[k]``, ``info.grad_norm[k]`` are those of ``x_k``; with
      MALA (K + 1 evaluations) those of the position after step ``k``.

    Example:
      >>> energy = lambda x: 0.5 * jnp.sum(x ** 2)          # N(0, I)
      >>> x, info = sample(jax.random.key(0), energy, jnp.zeros((1000, 2)),
      ...                  n_steps=200, step_size=0.1)
    """
    n_steps = int(n_steps)
    n_chains = _check_sample_args(n_steps, step_size, noise_scale, mala, x0, chain_batch)

    state, body, final_position = _chain_moves(energy_fn, x0, n_chains, step_size, noise_scale, mala, clip,
                                               chain_batch)
    step_keys = jax.random.split(key, n_steps)
    if chunk is not None:
        chunk = int(chunk)
        if chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1 (steps per unrolled block), got {chunk}.")
    if chunk is not None and 1 < chunk < n_steps:
        state, info = _sample_chunked(body, state, step_keys, chunk)
        return final_position(state), info
    if unroll is not True:
        unroll = max(1, min(int(unroll), max(n_steps, 1)))
    state, info = _scan(body, state, step_keys, unroll)
    return final_position(state), info


def _scan(body, state, xs, unroll=1):
    """``lax.scan(body, state, xs, unroll=unroll)``, a single iteration
    written out: XLA:CPU keeps the one-trip loop of a one-step scan, whatever
    its unroll, and runs a step slower inside it (measured:
    experiments/benchmarks/RESULTS.md)."""
    if xs.shape[0] == 1:
        return _unrolled(body, state, xs)
    return jax.lax.scan(body, state, xs, unroll=unroll)


def _unrolled(body, state, xs):
    """``lax.scan(body, state, xs)`` without its loop: the iterations one
    after another in Python, their outputs stacked."""
    outs = []
    for i in range(xs.shape[0]):
        state, out = body(state, xs[i])
        outs.append(out)
    return state, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)


def _sample_chunked(body, state, step_keys, chunk):
    """A scan over blocks of ``chunk`` Python-unrolled steps, the rest unrolled.

    An unrolled block amortises the loop over ``chunk`` steps without
    compiling all of them (XLA:CPU runs a conv net's step slower inside a
    while loop than in straight-line code).
    """
    n_steps = step_keys.shape[0]
    n_blocks, rest = divmod(n_steps, chunk)

    def block(state, keys):
        return _unrolled(body, state, keys)

    blocked_keys = step_keys[: n_blocks * chunk].reshape((n_blocks, chunk) + step_keys.shape[1:])
    state, info = _scan(block, state, blocked_keys)
    info = jax.tree_util.tree_map(lambda a: a.reshape((n_blocks * chunk,) + a.shape[2:]), info)
    if rest:
        state, info_rest = _unrolled(body, state, step_keys[n_blocks * chunk:])
        info = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), info, info_rest)
    return state, info


def raise_if_diverged(info: LangevinInfo, *, step_size=None, what: str = "Langevin chain") -> None:
    """Raise :class:`ChainDivergedError` if any chain in ``info`` became non-finite.

    This reads ``info`` on the host (a device sync); call it outside jit,
    e.g. every few iterations of a training loop.
    """
    finite = np.asarray(jax.device_get(info.is_finite))
    if finite.all():
        return
    # (steps, chains); one step's info has only the chain axis.
    finite = finite.reshape(1, -1) if finite.ndim < 2 else finite.reshape(finite.shape[0], -1)
    bad_chains = np.flatnonzero(~finite.all(axis=0))
    first_step = int(np.argmax(~finite.all(axis=1)))
    hint = f" at step_size={step_size!r}" if step_size is not None else ""
    raise ChainDivergedError(
        f"{what} diverged{hint}: {len(bad_chains)} chain(s) (e.g. {bad_chains[:5].tolist()}) "
        f"reached a non-finite energy or gradient, first at step {first_step}. "
        "Reduce the step size (or delta), or check the energy for overflow."
    )


@dataclasses.dataclass(frozen=True)
class LangevinConfig:
    """Settings of a Langevin run, saved with every experiment's config.

    ``step_size`` is ``a`` and ``noise_scale`` is ``b`` in
    ``x ← x − a∇E(x) + bξ`` (``None``: exact ``sqrt(2a)``; ``0``: gradient
    descent). Build the papers' coupled form with :meth:`from_delta`.
    ``unroll=None`` (the default) unrolls the whole chain when it has at
    most :data:`FULL_UNROLL_MAX_STEPS` steps (the fastest on XLA:CPU;
    measured: experiments/benchmarks/RESULTS.md), and keeps a loop
    (``unroll=1``) for longer chains, whose fully unrolled program would take
    too long to compile.
    ``chunk=k`` runs a loop over blocks of ``k`` unrolled steps instead
    (see :func:`sample`); same numbers, another speed/compile-time trade.
    ``chain_batch=g`` computes the chains in groups of ``g`` (see
    :func:`sample`); same numbers, a bound on memory.
    """

    n_steps: int = 10
    step_size: float = 0.045
    noise_scale: Optional[float] = None
    mala: bool = False
    unroll: Union[int, bool, None] = None
    clip: Optional[Tuple[float, float]] = None
    chunk: Optional[int] = None
    chain_batch: Optional[int] = None

    # How the chain is computed, not what it computes (the same samples):
    # a resumed run may change these (gcnjax.train.RunDir.load_for_resume).
    SPEED_FIELDS = ("unroll", "chunk", "chain_batch")

    @classmethod
    def from_delta(cls, delta: float, n_steps: int, *, noise: bool = True, **kwargs) -> "LangevinConfig":
        """``x ← x − (δ²/2)∇E(x) + δξ`` (``noise=False``: without the ``δξ`` term)."""
        step_size, noise_scale = coupled_from_delta(delta)
        return cls(n_steps=n_steps, step_size=step_size, noise_scale=noise_scale if noise else 0.0, **kwargs)

    @property
    def delta(self) -> float:
        """δ of the coupled form ``x ← x − (δ²/2)∇E(x) + δξ``: ``sqrt(2 · step_size)``."""
        return math.sqrt(2.0 * self.step_size)

    @property
    def is_coupled(self) -> bool:
        """Whether the noise is the exact ``sqrt(2 · step_size)`` (given as ``None`` or as that value)."""
        return self.noise_scale is None or math.isclose(self.noise_scale, self.delta, rel_tol=1e-6)

    def with_delta(self, delta: float) -> "LangevinConfig":
        """This chain with step ``δ²/2``, every other setting kept: a coupled
        chain's noise becomes ``δ`` (it stays exact), a noise-free chain stays
        noise-free, and a decoupled chain keeps its own ``noise_scale``."""
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a positive finite number, got {delta!r}.")
        step_size, coupled_noise = coupled_from_delta(delta)
        if self.noise_scale is None or self.noise_scale == 0:
            noise = self.noise_scale
        else:
            noise = coupled_noise if self.is_coupled else self.noise_scale
        return dataclasses.replace(self, step_size=step_size, noise_scale=noise)

    def __post_init__(self):
        if int(self.n_steps) < 0:
            raise ValueError(f"LangevinConfig.n_steps must be >= 0, got {self.n_steps}.")
        _check_settings(self.step_size, self.noise_scale, self.mala)
        if self.mala and self.clip is not None:
            raise ValueError("LangevinConfig: clip cannot be combined with mala=True (the clipped proposal has no density).")
        if self.chunk is not None and (isinstance(self.chunk, bool) or int(self.chunk) < 1):
            raise ValueError(f"LangevinConfig.chunk must be None or an integer >= 1 (steps per unrolled block), "
                             f"got {self.chunk!r}.")
        if self.chain_batch is not None and (isinstance(self.chain_batch, bool) or int(self.chain_batch) < 1):
            raise ValueError(f"LangevinConfig.chain_batch must be None or an integer >= 1 (chains computed at "
                             f"once), got {self.chain_batch!r}.")
        if self.clip is not None and not (len(self.clip) == 2 and self.clip[0] < self.clip[1]):
            raise ValueError(f"LangevinConfig.clip must be (lo, hi) with lo < hi, got {self.clip!r}.")

    @property
    def resolved_unroll(self) -> Union[int, bool]:
        """The ``unroll`` given to :func:`sample` (``None`` resolved)."""
        if self.unroll is None:
            return True if self.n_steps <= FULL_UNROLL_MAX_STEPS else 1
        return self.unroll

    @classmethod
    def from_dict(cls, d) -> "LangevinConfig":
        """The inverse of ``dataclasses.asdict`` (as read back from JSON)."""
        d = dict(d)
        if d.get("clip") is not None:
            d["clip"] = tuple(d["clip"])
        return cls(**d)

    def run(self, key, energy_fn: EnergyFn, x0: PyTree):
        """:func:`sample` with these settings."""
        return sample(
            key,
            energy_fn,
            x0,
            n_steps=self.n_steps,
            step_size=self.step_size,
            noise_scale=self.noise_scale,
            mala=self.mala,
            unroll=self.resolved_unroll,
            clip=None if self.clip is None else tuple(self.clip),
            chunk=self.chunk,
            chain_batch=self.chain_batch,
        )

"""Optimal-transport core: costs, log-domain Sinkhorn, entropy, MESH and exact EMD.

Pure functions on arrays, no Flax and no config. Axis convention (any leading batch dims):

  inputs  x    [..., N, D]     N input elements (pixels, set elements)
  slots   z    [..., K, D]     K slots
  cost    C    [..., N, K]
  plan    P    [..., N, K]     transport plan / attention
  a            [..., N]        marginal over inputs   (rows of P sum to a)
  b            [..., K]        marginal over slots    (columns of P sum to b)
  f, g         [..., N], [..., K]  log-domain scalings: P = exp(-C / temperature + f[:, None] + g[None, :])

`a` and `b` must carry the same total mass. The potentials are the log scalings of the
scaling form of Sinkhorn (the `u`, `v` of the MESH paper, App. D), i.e. the usual dual
variables divided by the temperature.

References: Cuturi (2013) for Sinkhorn; Zhang et al., "Unlocking Slot Attention by Changing
Optimal Transport Costs", ICML 2023 (MESH, eqs. 8-12 and App. A, D).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Potentials = Tuple[Array, Array]

# Marginal entries are clipped to this before taking logs, as the MESH reference does: it
# bounds the log at about -69 so that an (almost) empty input or slot never produces -inf.
MIN_MARGINAL = 1e-30
# The entropy objective of MESH clips plan entries to [ENTROPY_CLIP, 1] (reference semantics).
ENTROPY_CLIP = 1e-20
# Log of the smallest kernel entry kept in Sinkhorn's scaling-domain iterations.
KERNEL_LOG_FLOOR = -80.0


# --------------------------------------------------------------------------------------
# Costs: [..., N, D] x [..., K, D] -> [..., N, K]
# --------------------------------------------------------------------------------------
def _dot(x: Array, y: Array) -> Array:
  return jnp.einsum("...nd,...kd->...nk", x, y)


def sqeuclidean_cost(x: Array, y: Array) -> Array:
  """Squared Euclidean distance ||x_n - y_k||^2, clipped at 0 against round-off."""
  sq = (jnp.sum(x * x, -1)[..., :, None] + jnp.sum(y * y, -1)[..., None, :]
        - 2.0 * _dot(x, y))
  return jnp.maximum(sq, 0.0)


def euclidean_cost(x: Array, y: Array) -> Array:
  """Euclidean distance ||x_n - y_k|| (the MESH reference default, `torch.cdist`).

  The gradient at coincident points is defined as 0 instead of inf.
  """
  sq = sqeuclidean_cost(x, y)
  positive = sq > 0.0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def cosine_cost(x: Array, y: Array, eps: float = 1e-12) -> Array:
  """Cosine distance 1 - <x, y> / (|x| |y|), in [0, 2]."""
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  yn = y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), eps)
  return 1.0 - _dot(xn, yn)


def dot_cost(x: Array, y: Array) -> Array:
  """Negative scaled dot product -<x, y> / sqrt(D): softmax slot attention's logits as a cost."""
  return -_dot(x, y) / jnp.sqrt(jnp.asarray(x.shape[-1], x.dtype))


COSTS: dict[str, Callable[[Array, Array], Array]] = {
    "euclidean": euclidean_cost,
    "sqeuclidean": sqeuclidean_cost,
    "cosine": cosine_cost,
    "dot": dot_cost,
}


def get_cost_fn(name: str) -> Callable[[Array, Array], Array]:
  """Looks a cost function up by name; the error lists the valid names."""
  try:
    return COSTS[name]
  except KeyError:
    raise ValueError(f"Unknown cost {name!r}; valid costs: {sorted(COSTS)}") from None


# --------------------------------------------------------------------------------------
# Sinkhorn
# --------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _log_matvec(log_kernel: Array, kernel: Array, log_w: Array, over_slots: bool) -> Array:
  """log(kernel-weighted sum of exp(log_w)), the scaling-domain half-step of Sinkhorn.

  kernel = exp(log_kernel) is [..., K, N]. With `over_slots`, returns
  log sum_k kernel[k, n] exp(log_w[k]) ([..., N]); otherwise log sum_n kernel[k, n]
  exp(log_w[n]) ([..., K]). The forward pass is a matrix-vector product on the
  precomputed kernel (no exponentials of the full matrix); the backward pass forms the
  normalised weights exp(log_kernel + log_w - result) <= 1 directly, which keeps it
  finite where the chain rule through separate factors would multiply 0 by inf. The
  cotangent of `kernel` is returned as zero: it is a cached function of `log_kernel`.
  """
  return _log_matvec_fwd(log_kernel, kernel, log_w, over_slots)[0]


def _log_matvec_fwd(log_kernel, kernel, log_w, over_slots):
  shift = jax.lax.stop_gradient(jnp.max(log_w, axis=-1, keepdims=True))
  w = jnp.exp(log_w - shift)
  if over_slots:
    total = jnp.einsum("...kn,...k->...n", kernel, w)
  else:
    total = jnp.einsum("...kn,...n->...k", kernel, w)
  out = shift + jnp.log(jnp.maximum(total, MIN_MARGINAL))
  return out, (log_kernel, log_w, out)


def _log_matvec_bwd(over_slots, res, cot):
  log_kernel, log_w, out = res
  if over_slots:  # weights[k, n] = kernel[k, n] w[k] / total[n]
    weights = jnp.exp(log_kernel + log_w[..., :, None] - out[..., None, :])
    d_log_kernel = weights * cot[..., None, :]
    d_log_w = jnp.sum(d_log_kernel, axis=-1)
  else:           # weights[k, n] = kernel[k, n] w[n] / total[k]
    weights = jnp.exp(log_kernel + log_w[..., None, :] - out[..., :, None])
    d_log_kernel = weights * cot[..., :, None]
    d_log_w = jnp.sum(d_log_kernel, axis=-2)
  return d_log_kernel, jnp.zeros_like(log_kernel), d_log_w


_log_matvec.defvjp(_log_matvec_fwd, _log_matvec_bwd)


def sinkhorn(cost: Array, a: Array, b: Array, *, num_iters: int,
             temperature: float | Array = 1.0,
             init: Optional[Potentials] = None) -> tuple[Array, Potentials]:
  """Entropy-regularised OT by Sinkhorn with a fixed iteration count.

  Each iteration first rescales the rows (inputs) to `a`, then the columns (slots) to `b`,
  the order of the MESH reference: after every iteration the slot marginal `b` is met
  exactly (up to float round-off) and the input marginal `a` approximately.

  Implementation: the first row rescaling runs in the log domain from the (warm-start)
  potentials, which bounds every entry of the kernel E = exp(-C/temperature + f + g) by the
  row mass; the kernel is exponentiated once and the remaining half-steps rescale it in the
  scaling domain (two matrix-vector products per iteration, no exponentials), with the
  scalings folded back into log-domain potentials at the end. This is the same algorithm as
  the all-log-domain loop, with the same outputs up to float round-off (about 1e-8 on
  plans of mass ~1), and about three times faster forward and backward on CPU. Sums that
  underflow are clipped at 1e-30 so that no division by zero can occur.

  Args:
    cost: [..., N, K] cost matrix (finite).
    a: [..., N] input marginal (non-negative, same total mass as `b`).
    b: [..., K] slot marginal.
    num_iters: number of full (row + column) iterations (>= 1), in a `lax.scan`.
    temperature: entropic regularisation (epsilon). Never inferred from the data. A traced
      scalar is fine (e.g. under vmap).
    init: optional warm start `(f, g)` ([..., N], [..., K]) from an earlier call.

  Returns:
    plan [..., N, K] and the log-domain potentials `(f, g)` to warm-start a later call.
  """
  if num_iters < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  # Broadcast the batch dimensions up front: the custom backward pass of `_log_matvec`
  # returns cotangents of the broadcast shape.
  lead = jnp.broadcast_shapes(cost.shape[:-2], a.shape[:-1], b.shape[:-1])
  cost = jnp.broadcast_to(cost, lead + cost.shape[-2:])
  a = jnp.maximum(jnp.broadcast_to(a, lead + a.shape[-1:]), MIN_MARGINAL)
  b = jnp.maximum(jnp.broadcast_to(b, lead + b.shape[-1:]), MIN_MARGINAL)
  logits = -jnp.swapaxes(cost, -1, -2) / temperature  # [..., K, N]: inputs on the minor axis
  g = jnp.zeros_like(b) if init is None else init[1]
  # Row step in the log domain: f = log a - logsumexp_k(logits + g).
  f = jnp.log(a) - jax.nn.logsumexp(logits + g[..., :, None], axis=-2)
  log_kernel = logits + f[..., None, :] + g[..., :, None]  # [..., K, N], rows sum to a
  # Entries below exp(-80) (~1e-35, under float32 resolution of any row of mass >= 1e-30)
  # are dropped from the scaling iterations (the final plan keeps them).
  log_kernel = jnp.where(log_kernel > KERNEL_LOG_FLOOR, log_kernel, -1e30)
  kernel = jnp.exp(log_kernel)
  log_a, log_b = jnp.log(a), jnp.log(b)

  def body(log_v, _):
    log_u = log_a - _log_matvec(log_kernel, kernel, log_v, True)
    return log_b - _log_matvec(log_kernel, kernel, log_u, False), None

  # After the log-domain row step the row scaling is 1; then one column step.
  log_u = jnp.zeros_like(a)
  log_v = log_b - _log_matvec(log_kernel, kernel, log_u, False)
  if num_iters > 1:
    log_v, _ = jax.lax.scan(body, log_v, None, length=num_iters - 2)
    log_u = log_a - _log_matvec(log_kernel, kernel, log_v, True)
    log_v = log_b - _log_matvec(log_kernel, kernel, log_u, False)
  f, g = f + log_u, g + log_v
  # The plan is exponentiated from the potentials rather than formed as kernel * u * v:
  # an entry whose kernel underflowed to 0 must stay 0 even where u * v would overflow.
  plan = jnp.exp(logits + f[..., None, :] + g[..., :, None])
  return jnp.swapaxes(plan, -1, -2), (f, g)


def entropy(plan: Array) -> Array:
  """Shannon entropy -sum P log P over the last two axes ([..., N, K] -> [...]), 0 log 0 = 0."""
  safe = jnp.where(plan > 0, plan, 1.0)
  return -jnp.sum(jnp.where(plan > 0, plan * jnp.log(safe), 0.0), axis=(-2, -1))


def mesh_entropy(plan: Array) -> Array:
  """The MESH objective ([..., N, K] -> [...]): mean over entries of -p log p with p clipped
  to [1e-20, 1], as in the MESH reference (entries above 1, possible with marginals summing
  to K, contribute 0 and no gradient)."""
  p = jnp.clip(plan, ENTROPY_CLIP, 1.0)
  return -jnp.mean(p * jnp.log(p), axis=(-2, -1))


# --------------------------------------------------------------------------------------
# MESH: minimise the entropy of Sinkhorn by normalised gradient steps on the cost
# --------------------------------------------------------------------------------------
def _normalise(grad: Array) -> Array:
  """grad / ||grad||_F per problem (over the last two axes); a zero gradient stays zero."""
  norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=(-2, -1), keepdims=True))
  return grad / jnp.maximum(norm, 1e-12)


def mesh(cost: Array, a: Array, b: Array, noise: Array, *, num_steps: int = 4,
         lr: float | Array = 8.0, noise_scale: float = 1e-3, sinkhorn_iters: int = 5,
         temperature: float | Array = 1.0, reuse_potentials: bool = True,
         differentiate_steps: bool = False,
         objective: Optional[Callable[[Array], Array]] = None
         ) -> tuple[Array, Optional[Potentials]]:
  """MESH (eqs. 9-12): returns the cost C' whose Sinkhorn plan has low entropy.

  C'_0 = cost + noise_scale * noise, then `num_steps` steps of
  C'_{t+1} = C'_t - lr * grad / ||grad||, grad = d objective(sinkhorn(C'_t)) / d C'_t,
  taken by `jax.grad`, normalised per problem (over all N*K entries, so each entry moves by
  about lr / sqrt(N K)).

  Gradient path (the default reproduces the reference implementation): the normalised
  step is a constant (`stop_gradient`), so d C'_T / d cost is the identity (straight
  through, paper §4.1), while the warm-start potentials carried between steps and returned
  for the final Sinkhorn stay differentiable. `differentiate_steps=True` differentiates
  the unrolled steps instead (second-order; needed to learn a parametric objective).

  Defaults: the paper's text gives noise N(0, 1e-6) and leaves lambda open; the reference
  code uses noise 1e-3 * N(0, 1) and lr 8 for images. We default to the code's values,
  since those produced the published numbers; the inner Sinkhorn runs at `temperature`
  (the reference uses 1 regardless of the final Sinkhorn's temperature).

  Args:
    cost: [..., N, K].
    a, b: marginals [..., N], [..., K].
    noise: array shaped like `cost`, e.g. `jax.random.normal(key, cost.shape)`; passing it
      in keeps this function deterministic.
    num_steps: gradient steps (a `lax.scan`).
    lr: step size lambda (may be a traced, learnable scalar).
    noise_scale: multiplies `noise`.
    sinkhorn_iters: Sinkhorn iterations per step.
    temperature: temperature of the inner Sinkhorn calls.
    reuse_potentials: warm-start each step from the previous step's potentials (App. D)
      and return them; otherwise every step starts from zero and None is returned.
    differentiate_steps: see above.
    objective: maps a plan [..., N, K] to per-problem values [...] to minimise; default
      `mesh_entropy`. It may close over other arrays (e.g. the similarity term of App. B).

  Returns:
    (C' [..., N, K], potentials `(f, g)` for warm-starting the final Sinkhorn or None).
  """
  objective = mesh_entropy if objective is None else objective
  c0 = cost + noise_scale * noise.astype(cost.dtype)
  f0 = jnp.zeros_like(a)
  g0 = jnp.zeros_like(b)

  def inner(c, f, g):
    init = (f, g) if reuse_potentials else None
    plan, pots = sinkhorn(c, a, b, num_iters=sinkhorn_iters, temperature=temperature,
                          init=init)
    return jnp.sum(objective(plan)), pots

  grad_fn = jax.grad(inner, argnums=0, has_aux=True)

  def step(carry, _):
    c, f, g = carry
    grad, (f, g) = grad_fn(c, f, g)
    update = _normalise(grad + 1e-20)
    if not differentiate_steps:
      update = jax.lax.stop_gradient(update)
    return (c - lr * update, f, g), None

  (c, f, g), _ = jax.lax.scan(step, (c0, f0, g0), None, length=num_steps)
  return c, ((f, g) if reuse_potentials else None)


def mesh_sinkhorn(cost: Array, a: Array, b: Array, noise: Array, *, sinkhorn_iters: int = 5,
                  temperature: float | Array = 1.0, mesh_temperature: float | Array = 1.0,
                  **mesh_kwargs) -> Array:
  """sinkhorn(MESH(C)) (eq. 10): the SA-MESH transport plan [..., N, K]."""
  c, init = mesh(cost, a, b, noise, sinkhorn_iters=sinkhorn_iters,
                 temperature=mesh_temperature, **mesh_kwargs)
  plan, _ = sinkhorn(c, a, b, num_iters=sinkhorn_iters, temperature=temperature, init=init)
  return plan


def slot_softmax(logits: Array, eps: float = 1e-8) -> Array:
  """Softmax slot attention's normalisation (Locatello et al. 2020, Alg. 1), [..., N, K].

  Softmax over slots, plus `eps`, then renormalised over inputs: one Sinkhorn half-step
  pair with uniform marginals (MESH paper §3). `logits` are similarities (-cost).
  """
  attn = jax.nn.softmax(logits, axis=-1) + eps
  return attn / jnp.sum(attn, axis=-2, keepdims=True)


# --------------------------------------------------------------------------------------
# Exact OT (EMD) through POT on the host
# --------------------------------------------------------------------------------------
def _require_pot():
  try:
    import ot  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Exact OT (attention='emd') needs POT. Install the extra: "
        "pip install 'slot_ot_jax[emd]' (or pip install 'pot>=0.9.7,<0.10').") from e
  return ot


def _emd_host(cost: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  ot = _require_pot()
  cost = np.asarray(cost, np.float64)
  lead = cost.shape[:-2]
  n, k = cost.shape[-2:]
  cost2 = cost.reshape(-1, n, k)
  a2 = np.broadcast_to(np.asarray(a, np.float64), lead + (n,)).reshape(-1, n)
  b2 = np.broadcast_to(np.asarray(b, np.float64), lead + (k,)).reshape(-1, k)
  out = np.empty_like(cost2)
  for i in range(cost2.shape[0]):
    ai, bi = np.maximum(a2[i], 0.0), np.maximum(b2[i], 0.0)
    # POT requires equal masses to ~1e-7 relative; float32 marginals can be off by more.
    bi = bi * (ai.sum() / max(bi.sum(), 1e-300))
    out[i] = ot.emd(ai, bi, cost2[i])
  return out.reshape(cost.shape)


def _batch_axes_of_context_mesh(cost: Array) -> tuple[str, ...]:
  """The non-manual axes of the mesh set by `jax.set_mesh` that can split cost's leading axis."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or cost.ndim < 3:
    return ()
  axes = tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types)
               if kind != jax.sharding.AxisType.Manual)
  size = int(np.prod([mesh.shape[name] for name in axes])) if axes else 1
  return axes if size > 1 and cost.shape[0] % size == 0 else ()


def emd(cost: Array, a: Array, b: Array) -> Array:
  """Exact (unregularised) OT plan [..., N, K] by POT's network simplex (Bonneel et al. 2011).

  A `jax.pure_callback` to the host (works under jit and vmap; problems are solved one after
  another); no useful gradient (the result is `stop_gradient`-ed); needs the `emd` extra.
  Under a mesh set with `jax.set_mesh` (as the trainer does) the callback runs in a
  `jax.shard_map` over the leading batch axis, each device solving its own shard; without it,
  XLA's SPMD partitioner would gather the whole batch onto one device for the callback.
  """
  _require_pot()
  lead = jnp.broadcast_shapes(cost.shape[:-2], a.shape[:-1], b.shape[:-1])
  cost = jnp.broadcast_to(jax.lax.stop_gradient(cost), lead + cost.shape[-2:])
  a = jnp.broadcast_to(jax.lax.stop_gradient(a), lead + a.shape[-1:])
  b = jnp.broadcast_to(jax.lax.stop_gradient(b), lead + b.shape[-1:])

  def solve(c, aa, bb):
    out_type = jax.ShapeDtypeStruct(c.shape, c.dtype)
    return jax.pure_callback(lambda *xs: _emd_host(*xs).astype(out_type.dtype), out_type,
                             c, aa, bb, vmap_method="broadcast_all")

  axes = _batch_axes_of_context_mesh(cost)
  if axes:
    spec = jax.sharding.PartitionSpec(axes)
    solve = jax.shard_map(solve, in_specs=(spec,) * 3, out_specs=spec, axis_names=set(axes))
  return jax.lax.stop_gradient(solve(cost, a, b))


def emd_sinkhorn(cost: Array, a: Array, b: Array, *, num_iters: int,
                 temperature: float | Array = 1.0) -> Array:
  """The SA-EMD transport map of eq. 8, emd(C) + sinkhorn(C), [..., N, K].

  Taken literally, as the paper writes it: the two plans are added (so the total mass is
  doubled); the forward pass carries the exact plan, the gradient comes from Sinkhorn alone.
  """
  plan, _ = sinkhorn(cost, a, b, num_iters=num_iters, temperature=temperature)
  return emd(cost, a, b) + plan


__all__ = [
    "COSTS", "get_cost_fn", "euclidean_cost", "sqeuclidean_cost", "cosine_cost", "dot_cost",
    "sinkhorn", "entropy", "mesh_entropy", "mesh", "mesh_sinkhorn", "slot_softmax", "emd",
    "emd_sinkhorn",
]

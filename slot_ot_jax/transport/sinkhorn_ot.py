"""Entropic optimal transport: costs, log-domain Sinkhorn, entropy, softmax, EMD + Sinkhorn.

MESH (built on this Sinkhorn) is in `mesh_ot` and the exact host solver in `exact_ot`; the
package `slot_ot_jax.transport` re-exports all of them, so every plan of the papers is
reached as `transport.<name>`.

Pure functions on arrays, no Flax and no config. Axis convention (any leading batch dims):

  inputs  x    [..., N, D]     N input elements (pixels, set elements)
  slots   z    [..., K, D]     K slots
  cost    C    [..., N, K]
  plan    P    [..., N, K]     transport plan / attention
  a            [..., N]        marginal over inputs   (rows of P sum to a)
  b            [..., K]        marginal over slots    (columns of P sum to b)
  f, g         [..., N], [..., K]  log-domain scalings:
                                P = exp(-C / temperature + f[:, None] + g[None, :])

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

from slot_ot_jax.transport.exact_ot import emd

Array = jax.Array
Potentials = Tuple[Array, Array]

# Marginal entries are clipped to this before taking logs, as the MESH reference does: it
# bounds the log at about -69 so that an (almost) empty input or slot never produces -inf.
MIN_MARGINAL = 1e-30
# The entropy objective of MESH clips plan entries to [ENTROPY_CLIP, 1] (reference semantics).
ENTROPY_CLIP = 1e-20
# Log of the smallest kernel entry kept in Sinkhorn's scaling-domain iterations.
KERNEL_LOG_FLOOR = -80.0
_KERNEL_FLOOR = float(np.exp(KERNEL_LOG_FLOOR))


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
# Everything below works in the [..., K, N] layout (inputs on the minor axis), with
# logits = -cost^T / temperature. One Sinkhorn call is:
#
#   f1 = log a - logsumexp_k(logits + g0)                 (row step in the log domain)
#   E  = exp(logits + f1 + g0), entries < exp(-80) set 0  (kernel; rows sum to a)
#   column step i = 1..L:  log v_i = log b - log(E u_i)   (u_1 = 1)
#   row step    i = 2..L:  log u_i = log a - log(E^T v_{i-1})
#   f = f1 + log u_L, g = g0 + log v_L, plan = E u_L v_L
#
# The half-steps are matrix-vector products with the kernel, done with shifted scalings
# w = exp(log u - max log u) <= 1 so that nothing overflows. The backward pass is analytic:
# the weights of every half-step are E w / total, recomputed from the kernel and the
# per-iteration vectors kept by the forward pass (no stored matrices besides E), so the
# backward of L iterations costs 2L - 1 matrix-vector products and one pass that forms the
# cost gradient as E times a sum of rank-one terms.


def _sum_n(kernel: Array, w: Array) -> Array:
  """sum_n kernel[k, n] w[n]: [..., K, N] x [..., N] -> [..., K]."""
  return jnp.einsum("...kn,...n->...k", kernel, w)


def _sum_k(kernel: Array, w: Array) -> Array:
  """sum_k kernel[k, n] w[k]: [..., K, N] x [..., K] -> [..., N]."""
  return jnp.einsum("...kn,...k->...n", kernel, w)


def _half_step(kernel: Array, log_w: Array, log_marginal: Array, over_slots: bool):
  """log marginal - log(kernel-weighted sum of exp(log_w)), and the (w, total) it used."""
  shift = jnp.max(log_w, axis=-1, keepdims=True)
  w = jnp.exp(log_w - shift)
  total = _sum_k(kernel, w) if over_slots else _sum_n(kernel, w)
  return log_marginal - shift - jnp.log(jnp.maximum(total, MIN_MARGINAL)), w, total


def _sinkhorn_forward(logits, log_a, log_b, g0, num_iters):
  """Forward pass in the [..., K, N] layout; returns the plan, potentials and residuals."""
  z = logits + g0[..., :, None]
  m = jnp.max(z, axis=-2)                                            # [..., N]
  x = jnp.exp(z - m[..., None, :])
  s = jnp.sum(x, axis=-2)
  f1 = log_a - m - jnp.log(s)
  kernel = x * jnp.exp(log_a - jnp.log(s))[..., None, :]             # exp(logits + f1 + g0)
  kernel = jnp.where(kernel > _KERNEL_FLOOR, kernel, 0.0)
  # First column step, from u = 1.
  w_col1 = jnp.ones_like(log_a)
  tot_col1 = jnp.sum(kernel, axis=-1)
  log_v = log_b - jnp.log(jnp.maximum(tot_col1, MIN_MARGINAL))

  def body(log_v, _):
    log_u, w_row, tot_row = _half_step(kernel, log_v, log_a, True)
    log_v, w_col, tot_col = _half_step(kernel, log_u, log_b, False)
    return log_v, (log_u, w_row, tot_row, w_col, tot_col)

  log_v, (log_us, w_rows, tot_rows, w_cols, tot_cols) = jax.lax.scan(
      body, log_v, None, length=num_iters - 1)
  log_u = log_us[-1] if num_iters > 1 else jnp.zeros_like(log_a)
  # plan = E u v, with the scalings split so that neither factor overflows (plan <= b).
  shift = jnp.max(log_u, axis=-1, keepdims=True)
  scale_n = jnp.exp(log_u - shift)
  scale_k = jnp.exp(jnp.minimum(log_v + shift, 85.0))
  plan = kernel * scale_n[..., None, :] * scale_k[..., :, None]
  residuals = (kernel, log_a, scale_n, scale_k, w_col1, tot_col1, w_rows, tot_rows, w_cols,
               tot_cols)
  return plan, (f1 + log_u, g0 + log_v), residuals


def _sinkhorn_backward(residuals, plan_cot, f_cot, g_cot, num_iters):
  """Cotangents of (logits, log a, log b, g0) given those of (plan or None, f, g)."""
  (kernel, log_a, scale_n, scale_k, w_col1, tot_col1, w_rows, tot_rows, w_cols,
   tot_cols) = residuals
  if plan_cot is not None:
    scaled_cot = scale_n[..., None, :] * scale_k[..., :, None] * plan_cot
    weighted = kernel * scaled_cot                                   # plan * plan_cot
    f_cot = f_cot + jnp.sum(weighted, axis=-2)
    g_cot = g_cot + jnp.sum(weighted, axis=-1)

  def col_back(g_bar, w, tot):
    """Column step log v = log b - log(E w): the kernel-weighted pieces of its backward."""
    alpha = g_bar / jnp.maximum(tot, MIN_MARGINAL)
    return alpha, w * _sum_k(kernel, alpha), alpha * tot

  def body(carry, xs):
    g_bar, phi_bar, f1_bar, g0_bar, la_bar, lb_bar = carry
    w_row, tot_row, w_col, tot_col = xs
    alpha, rho, alpha_tot = col_back(g_bar, w_col, tot_col)
    phi_bar = phi_bar - rho
    beta = phi_bar / jnp.maximum(tot_row, MIN_MARGINAL)
    sigma = w_row * _sum_n(kernel, beta)
    carry = (-sigma, jnp.zeros_like(phi_bar), f1_bar - rho - beta * tot_row,
             g0_bar - alpha_tot - sigma, la_bar + phi_bar, lb_bar + g_bar)
    return carry, (alpha, beta)

  init = (g_cot, f_cot, f_cot, g_cot, jnp.zeros_like(f_cot), jnp.zeros_like(g_cot))
  (g_bar, _, f1_bar, g0_bar, la_bar, lb_bar), (alphas, betas) = jax.lax.scan(
      body, init, (w_rows, tot_rows, w_cols, tot_cols), reverse=True)
  alpha1, rho1, alpha1_tot = col_back(g_bar, w_col1, tot_col1)
  f1_bar = f1_bar - rho1
  g0_bar = g0_bar - alpha1_tot
  lb_bar = lb_bar + g_bar
  # First row step f1 = log a - logsumexp_k(logits + g0): weights E / a.
  f1_over_a = f1_bar * jnp.exp(-log_a)
  g0_bar = g0_bar - _sum_n(kernel, f1_over_a)
  la_bar = la_bar + f1_bar
  # d logits = plan * plan_cot - E * (sum of the rank-one terms of every half-step).
  terms = alpha1[..., :, None] * w_col1[..., None, :] + f1_over_a[..., None, :]
  if num_iters > 1:
    terms = terms + jnp.einsum("i...k,i...n->...kn", alphas, w_cols) + jnp.einsum(
        "i...k,i...n->...kn", w_rows, betas)
  if plan_cot is not None:
    terms = terms - scaled_cot
  return -kernel * terms, la_bar, lb_bar, g0_bar


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sinkhorn_kn(logits, log_a, log_b, g0, num_iters):
  """Sinkhorn on [..., K, N] logits: (plan [..., K, N], f, g); see the comment above."""
  plan, pots, _ = _sinkhorn_forward(logits, log_a, log_b, g0, num_iters)
  return plan, pots


def _sinkhorn_kn_fwd(logits, log_a, log_b, g0, num_iters):
  plan, pots, residuals = _sinkhorn_forward(logits, log_a, log_b, g0, num_iters)
  return (plan, pots), residuals


def _sinkhorn_kn_bwd(num_iters, residuals, cots):
  plan_cot, (f_cot, g_cot) = cots
  return _sinkhorn_backward(residuals, plan_cot, f_cot, g_cot, num_iters)


_sinkhorn_kn.defvjp(_sinkhorn_kn_fwd, _sinkhorn_kn_bwd)


def _prepare(cost, a, b):
  """Broadcasts the batch dims: cost [..., N, K] and the clipped log marginals."""
  lead = jnp.broadcast_shapes(cost.shape[:-2], a.shape[:-1], b.shape[:-1])
  cost = jnp.broadcast_to(cost, lead + cost.shape[-2:])
  a = jnp.maximum(jnp.broadcast_to(a, lead + a.shape[-1:]), MIN_MARGINAL)
  b = jnp.maximum(jnp.broadcast_to(b, lead + b.shape[-1:]), MIN_MARGINAL)
  return cost, jnp.log(a), jnp.log(b)


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
  scaling domain (two matrix-vector products per iteration, no exponentials of the full
  matrix), with the scalings folded back into log-domain potentials at the end. Kernel
  entries below exp(-80) are dropped. The backward pass is analytic (a custom VJP): it
  recomputes every half-step's weights from the kernel and the per-iteration scaling
  vectors instead of storing matrices. This is the same algorithm as the all-log-domain
  loop, with the same outputs and gradients up to float round-off (about 1e-7 relative).
  Sums that underflow are clipped at 1e-30 so that no division by zero can occur.

  Args:
    cost: [..., N, K] cost matrix (finite).
    a: [..., N] input marginal (non-negative, same total mass as `b`).
    b: [..., K] slot marginal.
    num_iters: number of full (row + column) iterations (>= 1), in a `lax.scan`.
    temperature: entropic regularisation (epsilon). Never inferred from the data. A traced
      scalar is fine (e.g. under vmap).
    init: optional warm start `(f, g)` ([..., N], [..., K]) from an earlier call; only `g`
      is used (the first row step recomputes `f`), as in the MESH reference.

  Returns:
    plan [..., N, K] and the log-domain potentials `(f, g)` to warm-start a later call.
  """
  if num_iters < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  cost, log_a, log_b = _prepare(cost, a, b)
  logits = -jnp.swapaxes(cost, -1, -2) / temperature  # [..., K, N]: inputs on the minor axis
  g0 = jnp.zeros_like(log_b) if init is None else jnp.broadcast_to(init[1], log_b.shape)
  plan, pots = _sinkhorn_kn(logits, log_a, log_b, g0, num_iters)
  return jnp.swapaxes(plan, -1, -2), pots


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


def slot_softmax(logits: Array, eps: float = 1e-8) -> Array:
  """Softmax slot attention's normalisation (Locatello et al. 2020, Alg. 1), [..., N, K].

  Softmax over slots, plus `eps`, then renormalised over inputs: one Sinkhorn half-step
  pair with uniform marginals (MESH paper §3). `logits` are similarities (-cost).
  """
  attn = jax.nn.softmax(logits, axis=-1) + eps
  return attn / jnp.sum(attn, axis=-2, keepdims=True)


# --------------------------------------------------------------------------------------
# SA-EMD (the exact plan itself: exact_ot.emd)
# --------------------------------------------------------------------------------------
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
    "sinkhorn", "entropy", "mesh_entropy", "slot_softmax", "emd",
    "emd_sinkhorn",
]


"""MESH: minimise the entropy of Sinkhorn by normalised gradient steps on the cost.

Zhang et al., "Unlocking Slot Attention by Changing Optimal Transport Costs", ICML 2023,
eqs. 9-12 and App. D. Built on the log-domain Sinkhorn of `sinkhorn_ot` (its forward and
analytic backward passes are reused inside each step); `mesh` and `mesh_sinkhorn` are
re-exported by the package as `transport.mesh` and `transport.mesh_sinkhorn`.

Axis convention as in `slot_ot_jax.transport`: cost and plan [..., N, K], marginals
a [..., N] and b [..., K].
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from slot_ot_jax.transport.sinkhorn_ot import Array
from slot_ot_jax.transport.sinkhorn_ot import Potentials
from slot_ot_jax.transport.sinkhorn_ot import _prepare
from slot_ot_jax.transport.sinkhorn_ot import _sinkhorn_backward
from slot_ot_jax.transport.sinkhorn_ot import _sinkhorn_forward
from slot_ot_jax.transport.sinkhorn_ot import mesh_entropy
from slot_ot_jax.transport.sinkhorn_ot import sinkhorn


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
  c0 = cost + noise_scale * noise.astype(cost.dtype)
  if num_steps == 0:  # No step: the noisy cost, and zero potentials (a cold start).
    zeros = (jnp.zeros(c0.shape[:-1], c0.dtype), jnp.zeros(c0.shape[:-2] + c0.shape[-1:], c0.dtype))
    return c0, (zeros if reuse_potentials else None)
  if not differentiate_steps and _is_static(lr) and _is_static(temperature):
    c0, log_a, log_b = _prepare(c0, a, b)
    obj, consts = None, ()  # None: mesh_entropy, applied in the [..., K, N] layout
    if objective is not None and objective is not mesh_entropy:
      obj, consts = jax.closure_convert(objective, jax.ShapeDtypeStruct(c0.shape, c0.dtype))
    c_kn, f, g = _mesh_kn(jnp.swapaxes(c0, -1, -2), log_a, log_b, tuple(consts),
                          _MeshConfig(obj, num_steps, float(lr), float(temperature),
                                      sinkhorn_iters, reuse_potentials))
    return jnp.swapaxes(c_kn, -1, -2), ((f, g) if reuse_potentials else None)
  return _mesh_autodiff(c0, a, b, num_steps=num_steps, lr=lr, sinkhorn_iters=sinkhorn_iters,
                        temperature=temperature, reuse_potentials=reuse_potentials,
                        differentiate_steps=differentiate_steps,
                        objective=mesh_entropy if objective is None else objective)


def _is_static(x) -> bool:
  """A Python number or a concrete array (not traced by jit, vmap or grad)."""
  return not isinstance(x, jax.core.Tracer)


def _mesh_autodiff(c0, a, b, *, num_steps, lr, sinkhorn_iters, temperature, reuse_potentials,
                   differentiate_steps, objective):
  """The MESH step loop differentiated by JAX (needed for `differentiate_steps` and a traced
  `lr` or temperature); same forward computation as `_mesh_kn`."""
  lead = jnp.broadcast_shapes(c0.shape[:-2], a.shape[:-1], b.shape[:-1])
  f0 = jnp.zeros(lead + a.shape[-1:], c0.dtype)
  g0 = jnp.zeros(lead + b.shape[-1:], c0.dtype)

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


class _MeshConfig(NamedTuple):
  """The static settings of `_mesh_kn` (hashable)."""
  objective: Optional[Callable[..., Array]]  # (plan [..., N, K], *consts) -> [...]; None:
                                             # mesh_entropy
  num_steps: int
  lr: float
  temperature: float
  sinkhorn_iters: int
  reuse_potentials: bool


def _mesh_steps(c_kn, log_a, log_b, consts, cfg: _MeshConfig):
  """The MESH step loop on [..., K, N] costs; returns C'_T, the last potentials and the
  per-step Sinkhorn residuals."""
  def plan_grad(plan_kn):
    if cfg.objective is None:  # elementwise and averaged: the layout does not matter
      return jax.grad(lambda p: jnp.sum(mesh_entropy(p)))(plan_kn)
    value = lambda p: jnp.sum(cfg.objective(jnp.swapaxes(p, -1, -2), *consts))
    return jax.grad(value)(plan_kn)

  zeros_n, zeros_k = jnp.zeros_like(log_a), jnp.zeros_like(log_b)

  def step(carry, _):
    c, g = carry
    g0 = g if cfg.reuse_potentials else zeros_k
    plan, (f, g), res = _sinkhorn_forward(-c / cfg.temperature, log_a, log_b, g0,
                                          cfg.sinkhorn_iters)
    d_logits = _sinkhorn_backward(res, plan_grad(plan), zeros_n, zeros_k,
                                  cfg.sinkhorn_iters)[0]
    # d objective / d cost = -d_logits / temperature; the step is its normalised negative.
    update = _normalise(-d_logits / cfg.temperature + 1e-20)
    return (c - cfg.lr * update, g), (f, res if cfg.reuse_potentials else None)

  (c, g), (fs, residuals) = jax.lax.scan(step, (c_kn, zeros_k), None, length=cfg.num_steps)
  return c, fs[-1], g, residuals


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _mesh_kn(c_kn, log_a, log_b, consts, cfg: _MeshConfig):
  """MESH with the reference gradient path, as one custom VJP: (C'_T [..., K, N], f, g).

  The normalised steps are constants, so d C'_T / d C'_0 is the identity; the backward
  pass runs the analytic Sinkhorn backward of each step (kernel kept by the forward pass)
  for the cotangents of the warm-start potentials, last step first, and sums the cost
  cotangents of all steps (every C'_t is C'_0 plus constants).
  """
  c, f, g, _ = _mesh_steps(c_kn, log_a, log_b, consts, cfg)
  return c, f, g


def _mesh_kn_fwd(c_kn, log_a, log_b, consts, cfg):
  c, f, g, residuals = _mesh_steps(c_kn, log_a, log_b, consts, cfg)
  return (c, f, g), (residuals, log_a, log_b, consts)


def _mesh_kn_bwd(cfg, saved, cots):
  residuals, log_a, log_b, consts = saved
  c_cot, f_cot, g_cot = cots
  zero_consts = jax.tree.map(jnp.zeros_like, consts)
  if not cfg.reuse_potentials:
    return c_cot, jnp.zeros_like(log_a), jnp.zeros_like(log_b), zero_consts

  def back(carry, res):
    f_bar, g_bar, c_bar, la_bar, lb_bar = carry
    d_logits, la, lb, g0_bar = _sinkhorn_backward(res, None, f_bar, g_bar,
                                                  cfg.sinkhorn_iters)
    carry = (jnp.zeros_like(f_bar), g0_bar, c_bar - d_logits / cfg.temperature,
             la_bar + la, lb_bar + lb)
    return carry, None

  init = (f_cot, g_cot, c_cot, jnp.zeros_like(log_a), jnp.zeros_like(log_b))
  (_, _, c_bar, la_bar, lb_bar), _ = jax.lax.scan(back, init, residuals, reverse=True)
  return c_bar, la_bar, lb_bar, zero_consts


_mesh_kn.defvjp(_mesh_kn_fwd, _mesh_kn_bwd)


def mesh_sinkhorn(cost: Array, a: Array, b: Array, noise: Array, *, sinkhorn_iters: int = 5,
                  temperature: float | Array = 1.0, mesh_temperature: float | Array = 1.0,
                  **mesh_kwargs) -> Array:
  """sinkhorn(MESH(C)) (eq. 10): the SA-MESH transport plan [..., N, K]."""
  c, init = mesh(cost, a, b, noise, sinkhorn_iters=sinkhorn_iters,
                 temperature=mesh_temperature, **mesh_kwargs)
  plan, _ = sinkhorn(c, a, b, num_iters=sinkhorn_iters, temperature=temperature, init=init)
  return plan


__all__ = ["mesh", "mesh_sinkhorn"]

"""Exact (unregularised) optimal transport on the host, through POT's network simplex.

The forward plan of SA-EMD (MESH eq. 8); `transport.emd_sinkhorn` adds the Sinkhorn plan that
carries its gradient. Shapes as in `slot_ot_jax.transport`: cost [..., N, K], a [..., N],
b [..., K] with equal total mass. Needs the `emd` extra (POT).
"""
from __future__ import annotations

import jax
from jax.experimental import buffer_callback
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def require_pot():
  """The `ot` module (POT), or an ImportError that says how to install it."""
  try:
    import ot  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Exact OT (attention='emd') needs POT. Install the extra: "
        "pip install 'slot_ot_jax[emd]' (or pip install 'pot>=0.9.7,<0.10').") from e
  return ot


def emd_host(cost: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Exact plans [..., N, K] (float64) of NumPy problems, solved one after another."""
  ot = require_pot()
  cost = np.asarray(cost, np.float64)
  lead = cost.shape[:-2]
  n, k = cost.shape[-2:]
  cost2 = cost.reshape(-1, n, k)
  a2 = np.broadcast_to(np.asarray(a, np.float64), lead + (n,)).reshape(-1, n)
  b2 = np.broadcast_to(np.asarray(b, np.float64), lead + (k,)).reshape(-1, k)
  out = np.empty_like(cost2)
  solve = network_simplex(ot)
  for i in range(cost2.shape[0]):
    ai, bi = np.maximum(a2[i], 0.0), np.maximum(b2[i], 0.0)
    # POT requires equal masses to ~1e-7 relative; float32 marginals can be off by more.
    bi = bi * (ai.sum() / max(bi.sum(), 1e-300))
    out[i] = solve(ai, bi, np.ascontiguousarray(cost2[i]))
  return out.reshape(cost.shape)


def network_simplex(ot):
  """POT's C++ network simplex without `ot.emd`'s per-call checks, or `ot.emd` where absent.

  `ot.emd` spends about 0.4 ms per call on input checks and backend dispatch around a solve
  that takes about 0.15 ms at 105 x 5 (random-objects cost): 3.5x slower per problem (POT
  0.9.7). The plan is the same (both call `emd_c`); a solve that stops early is an error.
  """
  try:
    from ot.lp import emd_wrap  # pylint: disable=g-import-not-at-top
    emd_c, check_result = emd_wrap.emd_c, emd_wrap.check_result
  except (ImportError, AttributeError):
    return ot.emd

  def solve(a, b, cost):
    plan, *_, code = emd_c(a, b, cost, 100_000, 1)  # ot.emd's default numItermax, 1 thread.
    check_result(code)
    return plan
  return solve


def _batch_axes_of_context_mesh(cost: Array) -> tuple[str, ...]:
  """The non-manual axes of the mesh set by `jax.set_mesh` that can split cost's leading axis."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or cost.ndim < 3:
    return ()
  axes = tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types)
               if kind != jax.sharding.AxisType.Manual)
  size = int(np.prod([mesh.shape[name] for name in axes])) if axes else 1
  return axes if size > 1 and cost.shape[0] % size == 0 else ()


def _solve_in_place(ctx, out, cost, a, b):
  """`buffer_callback` body: writes the exact plans into XLA's output buffer."""
  del ctx
  np.asarray(out)[...] = emd_host(np.asarray(cost), np.asarray(a), np.asarray(b))


def _solve(cost: Array, a: Array, b: Array) -> Array:
  """Exact plans of the (local) batch on the host, by the callback that suits the platform.

  On CPU, `buffer_callback` hands the solver XLA's own buffers. `jax.pure_callback` would
  first place its inputs on the CPU device as new arrays, and reading them back inside the
  callback can wait forever on that device's queue, which is busy with the computation that
  is waiting for the callback (seen with jax 0.10.2: SA-EMD training stopped at random steps,
  the callback thread blocked in `np.asarray` of its input). Other platforms copy the inputs
  to the host with `pure_callback`.
  """
  return jax.lax.platform_dependent(cost, a, b, cpu=_solve_in_buffers, default=_solve_by_copy)


def _solve_in_buffers(cost: Array, a: Array, b: Array) -> Array:
  """The CPU path of `_solve`: a `buffer_callback` on XLA's buffers."""
  out_type = jax.ShapeDtypeStruct(cost.shape, cost.dtype)
  return buffer_callback.buffer_callback(_solve_in_place, out_type,
                                         vmap_method="broadcast_all")(cost, a, b)


def _solve_by_copy(cost: Array, a: Array, b: Array) -> Array:
  """The path of `_solve` on other platforms: a `pure_callback` on host copies."""
  out_type = jax.ShapeDtypeStruct(cost.shape, cost.dtype)
  return jax.pure_callback(lambda *xs: emd_host(*xs).astype(out_type.dtype), out_type,
                           cost, a, b, vmap_method="broadcast_all")


def emd(cost: Array, a: Array, b: Array) -> Array:
  """Exact (unregularised) OT plan [..., N, K] by POT's network simplex (Bonneel et al. 2011).

  A host callback (works under jit and vmap; problems are solved one after another; see
  `_solve` for which callback); no useful gradient (the result is `stop_gradient`-ed); needs
  the `emd` extra. Under a mesh set with `jax.set_mesh` (as the trainer does) the callback runs
  in a `jax.shard_map` over the leading batch axis, each device solving its own shard;
  without it, XLA's SPMD partitioner would gather the whole batch onto one device for the
  callback.
  """
  require_pot()
  lead = jnp.broadcast_shapes(cost.shape[:-2], a.shape[:-1], b.shape[:-1])
  cost = jnp.broadcast_to(jax.lax.stop_gradient(cost), lead + cost.shape[-2:])
  a = jnp.broadcast_to(jax.lax.stop_gradient(a), lead + a.shape[-1:])
  b = jnp.broadcast_to(jax.lax.stop_gradient(b), lead + b.shape[-1:])
  solve = _solve
  axes = _batch_axes_of_context_mesh(cost)
  if axes:
    spec = jax.sharding.PartitionSpec(axes)
    solve = jax.shard_map(_solve, in_specs=(spec,) * 3, out_specs=spec, axis_names=set(axes))
  return jax.lax.stop_gradient(solve(cost, a, b))


__all__ = ["emd", "emd_host", "network_simplex", "require_pot"]

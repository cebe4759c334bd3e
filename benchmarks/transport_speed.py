"""Forward+backward speed and memory of the attention normalisations (not a test).

  python benchmarks/transport_speed.py [--shapes 64x4096x11,64x1024x7] [--repeats 10]

For each [B, N, K] problem (float32, Euclidean-like random costs, learned-style marginals)
it times d/dC sum(W * plan) for: softmax slot attention, Sinkhorn (5 iterations), MESH
(4 steps x 5 iterations, then the final 5-iteration Sinkhorn, reference gradient path) and
ott-jax's Sinkhorn at the same fixed 5 iterations. It reports the median wall time of
`--repeats` timed calls after two warm-up calls, and XLA's compiled memory estimate
(arguments + outputs + temporaries) as peak memory.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from slot_ot_jax import transport

DEFAULT_SHAPES = "64x4096x11,64x4096x6,64x1024x7,64x105x5"


def _problem(key, b, n, k):
  kc, ka, kb, kn, kw = jax.random.split(key, 5)
  cost = jnp.abs(jax.random.normal(kc, (b, n, k))) * 3.0
  a = k * jax.nn.softmax(jax.random.normal(ka, (b, n)), axis=-1)
  bb = k * jax.nn.softmax(jax.random.normal(kb, (b, k)), axis=-1)
  noise = jax.random.normal(kn, (b, n, k))
  w = jax.random.normal(kw, (b, n, k))
  return cost, a, bb, noise, w


def _ott_sinkhorn(cost, a, b, iters):
  from ott.geometry import geometry  # pylint: disable=g-import-not-at-top
  from ott.problems.linear import linear_problem  # pylint: disable=g-import-not-at-top
  from ott.solvers.linear import sinkhorn as ott_sinkhorn  # pylint: disable=g-import-not-at-top

  solver = ott_sinkhorn.Sinkhorn(min_iterations=iters, max_iterations=iters,
                                 inner_iterations=1, threshold=-1.0, implicit_diff=None)

  def one(c, aa, bb):
    geom = geometry.Geometry(cost_matrix=c, epsilon=1.0)
    return solver(linear_problem.LinearProblem(geom, aa, bb)).matrix

  return jax.vmap(one)(cost, a, b)


def methods(noise):
  return {
      "softmax attention": lambda c, a, b: transport.slot_softmax(-c),
      "sinkhorn (5 it)": lambda c, a, b: transport.sinkhorn(c, a, b, num_iters=5)[0],
      "mesh (4x5 it)": lambda c, a, b: transport.mesh_sinkhorn(c, a, b, noise, lr=8.0),
      "ott-jax sinkhorn (5 it)": lambda c, a, b: _ott_sinkhorn(c, a, b, 5),
  }


def bench(fn, args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  peak = None
  if mem is not None:
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)
  for _ in range(2):
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times) * 1e3, peak


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default=DEFAULT_SHAPES)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--methods", default="", help="comma-separated subset of method names")
  args = parser.parse_args()
  print(f"# jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{platform.processor() or platform.machine()}, float32, median of {args.repeats}")
  print("| method | B x N x K | fwd+bwd ms | peak MiB (XLA estimate) |")
  print("| --- | --- | --- | --- |")
  for shape in args.shapes.split(","):
    b, n, k = (int(s) for s in shape.split("x"))
    cost, a, bb, noise, w = _problem(jax.random.PRNGKey(0), b, n, k)
    for name, fn in methods(noise).items():
      if args.methods and name.split(" ")[0] not in args.methods.split(","):
        continue
      grad_fn = jax.grad(lambda c, a, b, fn=fn: jnp.sum(w * fn(c, a, b)))
      ms, peak = bench(grad_fn, (cost, a, bb), args.repeats)
      peak_s = f"{peak / 2**20:.1f}" if peak is not None else "n/a"
      print(f"| {name} | {b}x{n}x{k} | {ms:.1f} | {peak_s} |", flush=True)


if __name__ == "__main__":
  main()

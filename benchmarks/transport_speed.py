"""Forward+backward speed and memory of the attention normalisations, ours beside the
official PyTorch MESH code (not a test).

  python benchmarks/transport_speed.py [--shapes 64x4096x11,64x105x5] [--repeats 10]
      [--official PATH/TO/MESH] [--threads 1]

For each [B, N, K] problem (float32, random costs, learned-style marginals summing to K) it
times d/dC sum(W * plan) for: softmax slot attention, Sinkhorn (5 iterations), MESH (4 steps
x 5 iterations, lr 8, then the final 5-iteration Sinkhorn warm-started from the MESH
potentials, the reference gradient path) and ott-jax's Sinkhorn at the same fixed 5
iterations. With `--official` pointing at a checkout of the official MESH code
(https://github.com/davzha/MESH, its `mesh.py`; needs `pip install 'slot_ot_jax[bench]'`
for PyTorch and einops), the same problems also run through its `sinkhorn` and
`minimize_entropy_of_sinkhorn` + `sinkhorn` (as its `slot_attention.py` calls them) and a
PyTorch softmax attention, and the table gets their times, the speed-up and the largest
difference between the two plans and the two cost gradients.

Every method is called twice to warm up, then the methods run in turn (interleaved) for
`--repeats` rounds; the table gives medians. Ours are jitted with all arrays as arguments;
peak memory is XLA's compiled estimate (arguments + outputs + temporaries). `--threads 1`
(the default) runs both frameworks on one thread each; 0 leaves their defaults.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slot_ot_jax.training import host  # noqa: E402

DEFAULT_SHAPES = "64x4096x11,64x4096x6,64x1024x7,64x105x5"
METHODS = ("softmax", "sinkhorn", "mesh", "ott")


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default=DEFAULT_SHAPES)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--methods", default=",".join(METHODS),
                      help=f"comma-separated subset of {METHODS}")
  parser.add_argument("--official", default="",
                      help="path to a checkout of the official MESH code (holds mesh.py)")
  parser.add_argument("--threads", type=int, default=1,
                      help="threads per framework (1: single-threaded; 0: defaults)")
  args = parser.parse_args(argv)
  unknown = set(args.methods.split(",")) - set(METHODS)
  if unknown:
    parser.error(f"unknown methods {sorted(unknown)}; valid: {METHODS}")
  return args


def _load_official(path):
  """The official `mesh` module and torch, or (None, reason)."""
  if not path:
    return None, "no --official path given"
  try:
    import einops  # noqa: F401  (the official code needs it)
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return None, (f"PyTorch/einops missing ({e}); install with "
                  "pip install 'slot_ot_jax[bench]'")
  file = os.path.join(path, "mesh.py")
  if not os.path.isfile(file):
    return None, (f"{file} not found; clone https://github.com/davzha/MESH and pass its "
                  "directory")
  spec = importlib.util.spec_from_file_location("official_mesh", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return (module, torch), ""


def make_problem(jax, bsz, n, k):
  """(cost, a, b, noise, w): random costs in [0, ~12], marginals summing to K, noise, weights."""
  kc, ka, kb, kn, kw = jax.random.split(jax.random.PRNGKey(0), 5)
  return (abs(jax.random.normal(kc, (bsz, n, k))) * 3.0,
          k * jax.nn.softmax(jax.random.normal(ka, (bsz, n)), axis=-1),
          k * jax.nn.softmax(jax.random.normal(kb, (bsz, k)), axis=-1),
          jax.random.normal(kn, (bsz, n, k)),
          jax.random.normal(kw, (bsz, n, k)))


def bench_round(fns, repeats):
  """Warms every fn up twice, then times them interleaved; returns {name: median ms}."""
  for fn in fns.values():
    fn()
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main(argv=None):
  args = _parse_args(argv)
  if args.threads == 1:  # must be set before JAX initialises its backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from slot_ot_jax import transport  # pylint: disable=g-import-not-at-top

  official, why = _load_official(args.official)
  if official is not None and args.threads > 0:
    official[1].set_num_threads(args.threads)
  methods = args.methods.split(",")

  def ours(name):
    plan_fn = {
        "softmax": lambda c, a, b, nz: transport.slot_softmax(-c),
        "sinkhorn": lambda c, a, b, nz: transport.sinkhorn(c, a, b, num_iters=5)[0],
        "mesh": lambda c, a, b, nz: transport.mesh_sinkhorn(c, a, b, nz, lr=8.0),
        "ott": lambda c, a, b, nz: _ott_sinkhorn(c, a, b, 5),
    }[name]
    loss = lambda c, a, b, nz, w: jnp.sum(w * plan_fn(c, a, b, nz))
    return plan_fn, jax.value_and_grad(loss)

  host.print_host()
  print(f"# jax {jax.__version__}"
        + (f", torch {official[1].__version__}" if official else "")
        + f", {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads per framework: {args.threads or 'default'}, float32, "
        f"median of {args.repeats} interleaved after 2 warm-up calls")
  print(f"# load average at start: {os.getloadavg()}")
  if official is None:
    print(f"# official PyTorch column skipped: {why}")
  print("| B x N x K | method | ours fwd+bwd ms | official fwd+bwd ms | speed-up | "
        "max |plan diff| | max |grad diff| / max |grad| | ours peak MiB (XLA) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for shape in args.shapes.split(","):
    bsz, n, k = (int(s) for s in shape.split("x"))
    arrays = make_problem(jax, bsz, n, k)
    fns, peaks, checks = {}, {}, {}
    for name in methods:
      plan_fn, grad_fn = ours(name)
      compiled = jax.jit(grad_fn).lower(*arrays).compile()
      mem = compiled.memory_analysis()
      peaks[name] = (None if mem is None else (mem.argument_size_in_bytes
                     + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20)
      fns[("ours", name)] = lambda compiled=compiled, arrays=arrays: jax.block_until_ready(
          compiled(*arrays))
      if official is not None and name != "ott":
        torch_fn = _official_fn(official, name)
        tensors = [official[1].from_numpy(np.array(x)) for x in arrays]
        fns[("official", name)] = lambda f=torch_fn, t=tensors: _torch_fwd_bwd(official[1], f, t)
        ours_plan = np.asarray(jax.jit(plan_fn)(*arrays[:4]))
        ours_grad = np.asarray(compiled(*arrays)[1])
        their_plan, their_grad = _torch_fwd_bwd(official[1], torch_fn, tensors, values=True)
        checks[name] = (float(np.abs(ours_plan - their_plan).max()),
                        float(np.abs(ours_grad - their_grad).max() / np.abs(their_grad).max()))
    medians = bench_round(fns, args.repeats)
    for name in methods:
      ours_ms = medians[("ours", name)]
      theirs = medians.get(("official", name))
      plan_diff, grad_diff = checks.get(name, (None, None))
      fmt = lambda x, f: "n/a" if x is None else f.format(x)
      print(f"| {bsz}x{n}x{k} | {name} | {ours_ms:.1f} | {fmt(theirs, '{:.1f}')} | "
            f"{fmt(None if theirs is None else theirs / ours_ms, '{:.1f}x')} | "
            f"{fmt(plan_diff, '{:.1e}')} | {fmt(grad_diff, '{:.1e}')} | "
            f"{fmt(peaks[name], '{:.1f}')} |", flush=True)
  print(f"# load average at end: {os.getloadavg()}")


def _ott_sinkhorn(cost, a, b, iters):
  import jax  # pylint: disable=g-import-not-at-top
  from ott.geometry import geometry  # pylint: disable=g-import-not-at-top
  from ott.problems.linear import linear_problem  # pylint: disable=g-import-not-at-top
  from ott.solvers.linear import sinkhorn as ott_sinkhorn  # pylint: disable=g-import-not-at-top

  solver = ott_sinkhorn.Sinkhorn(min_iterations=iters, max_iterations=iters,
                                 inner_iterations=1, threshold=-1.0, implicit_diff=None)

  def one(c, aa, bb):
    geom = geometry.Geometry(cost_matrix=c, epsilon=1.0)
    return solver(linear_problem.LinearProblem(geom, aa, bb)).matrix

  return jax.vmap(one)(cost, a, b)


def _official_fn(official, name):
  """(C, a, b, noise) -> plan with the official code (as its slot_attention.py calls it)."""
  module, torch = official
  if name == "softmax":  # Locatello et al.'s normalisation, written in PyTorch here
    def softmax_attention(c, a, b, noise):
      attn = torch.softmax(-c, dim=-1) + 1e-8
      return attn / attn.sum(dim=-2, keepdim=True)
    return softmax_attention
  if name == "sinkhorn":
    return lambda c, a, b, noise: module.sinkhorn(c, a, b, n_sh_iters=5)[0]

  def mesh_plan(c, a, b, noise):
    c_t, u, v = module.minimize_entropy_of_sinkhorn(c, a, b, noise=noise, mesh_lr=8.0,
                                                    n_mesh_iters=4, n_sh_iters=5)
    return module.sinkhorn(c_t, a, b, u=u, v=v, n_sh_iters=5)[0]
  return mesh_plan


def _torch_fwd_bwd(torch, fn, tensors, values=False):
  cost, a, b, noise, w = tensors
  cost = cost.clone().requires_grad_(True)
  plan = fn(cost, a, b, noise)
  (w * plan).sum().backward()
  if values:
    return plan.detach().numpy(), cost.grad.numpy()
  return None


if __name__ == "__main__":
  sys.exit(main())

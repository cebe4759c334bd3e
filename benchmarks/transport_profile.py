"""Per-part timing and memory of Sinkhorn and MESH, optionally beside an earlier revision of
`slot_ot_jax/transport/sinkhorn_ot.py` (not a test): where the forward+backward time goes.

  python benchmarks/transport_profile.py [--shapes 64x4096x11,64x105x5] [--repeats 10]
      [--baseline GIT_REVISION]

For each [B, N, K] it times (jitted, all arrays as arguments, medians of `--repeats`
interleaved rounds after two warm-up calls): Sinkhorn forward, Sinkhorn forward+backward,
one MESH step (Sinkhorn forward plus the entropy gradient), `mesh_sinkhorn` forward and
`mesh_sinkhorn` forward+backward (d/dC sum(W * plan)), with XLA's compiled memory estimate.
With `--baseline`, the same parts of `transport.py` at that git revision run in the same
rounds, so the before/after ratios are measured side by side. `--threads 1` (default):
single-threaded XLA.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transport_speed import bench_round  # pylint: disable=g-import-not-at-top,wrong-import-position
from transport_speed import (  # pylint: disable=g-import-not-at-top,wrong-import-position
  make_problem,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slot_ot_jax.training import host  # noqa: E402

DEFAULT_SHAPES = "64x4096x11,64x105x5"


def _git_show(revision, path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=root, capture_output=True,
                          text=True)
  return result.stdout if result.returncode == 0 else None


def _load(name, source):
  path = os.path.join(tempfile.mkdtemp(), f"{name}.py")
  with open(path, "w") as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def module_at(revision):
  """transport.py at a git revision, imported as a standalone module, with that revision's
  MESH (in transport.py itself before it moved to mesh_ot.py, in mesh_ot.py after)."""
  source = _git_show(revision, "slot_ot_jax/transport/sinkhorn_ot.py")
  if source is None:
    raise ValueError(f"slot_ot_jax/transport/sinkhorn_ot.py not found at revision {revision!r}")
  module = _load("transport_baseline", source)
  mesh_source = _git_show(revision, "slot_ot_jax/transport/mesh_ot.py")
  if mesh_source is not None:  # its Sinkhorn imports must resolve to the baseline's
    mesh_source = mesh_source.replace("from slot_ot_jax.transport import",
                                      "from transport_baseline import")
    mesh_module = _load("mesh_ot_baseline", mesh_source)
    module.mesh, module.mesh_sinkhorn = mesh_module.mesh, mesh_module.mesh_sinkhorn
  return module


def parts(t, jax, jnp):
  """Each part maps (cost, a, b, noise, w) to arrays."""
  sk = lambda c, a, b, nz, w: t.sinkhorn(c, a, b, num_iters=5)[0]
  me = lambda c, a, b, nz, w: t.mesh_sinkhorn(c, a, b, nz, lr=8.0)
  entropy_of = lambda c, a, b, nz, w: jnp.sum(t.mesh_entropy(sk(c, a, b, nz, w)))
  loss = lambda fn: lambda c, a, b, nz, w: jnp.sum(w * fn(c, a, b, nz, w))
  return {
      "sinkhorn forward": sk,
      "sinkhorn forward+backward": jax.grad(loss(sk)),
      "one MESH step (sinkhorn + entropy gradient)": jax.grad(entropy_of),
      "mesh_sinkhorn forward": me,
      "mesh_sinkhorn forward+backward": jax.grad(loss(me)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default=DEFAULT_SHAPES)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--baseline", default="", help="git revision to compare against")
  parser.add_argument("--threads", type=int, default=1)
  args = parser.parse_args()
  if args.threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from slot_ot_jax import transport  # pylint: disable=g-import-not-at-top

  versions = {"now": transport}
  if args.baseline:
    versions[args.baseline] = module_at(args.baseline)
  host.print_host()
  print(f"# jax {jax.__version__}, float32, single-threaded: {args.threads == 1}, median of "
        f"{args.repeats} interleaved; load average at start {os.getloadavg()}")
  cols = list(versions)
  print("| part | B x N x K | " + " | ".join(f"{v} ms | {v} MiB" for v in cols)
        + (" | speed-up |" if len(cols) > 1 else " |"))
  print("| --- | --- | " + " | ".join("--- | ---" for _ in cols)
        + (" | --- |" if len(cols) > 1 else " |"))
  for shape in args.shapes.split(","):
    b, n, k = (int(s) for s in shape.split("x"))
    arrays = make_problem(jax, b, n, k)
    fns, mib = {}, {}
    for tag, module in versions.items():
      for name, fn in parts(module, jax, jnp).items():
        compiled = jax.jit(fn).lower(*arrays).compile()
        mem = compiled.memory_analysis()
        mib[(tag, name)] = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                            + mem.temp_size_in_bytes) / 2**20
        fns[(tag, name)] = lambda c=compiled, a=arrays: jax.block_until_ready(c(*a))
    ms = bench_round(fns, args.repeats)
    for name in parts(transport, jax, jnp):
      row = " | ".join(f"{ms[(v, name)]:.1f} | {mib[(v, name)]:.1f}" for v in cols)
      ratio = (f" | {ms[(cols[1], name)] / ms[('now', name)]:.2f}x |" if len(cols) > 1
               else " |")
      print(f"| {name} | {shape} | {row}{ratio}", flush=True)
  print(f"# load average at end {os.getloadavg()}")


if __name__ == "__main__":
  main()

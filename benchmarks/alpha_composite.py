"""Alpha compositing + MSE, forward + backward, two ways of taking the alpha channel (not a test).

  python benchmarks/alpha_composite.py [--repeats=20]

Shapes of the shapes model's training batch: decoded [16, 4, 32, 32, 4] (B, K, H, W, C + 1).
"slice" takes the logits as decoded[..., -1:] (a unit trailing axis, as the code did before);
"index" as decoded[..., -1] with the unit axis added after the softmax
(`models.alpha_composite`). Same values and gradients; one thread; medians, interleaved.
"""
import argparse
import os
import statistics
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                           " intra_op_parallelism_threads=1").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from slot_ot_jax.modules import models  # noqa: E402
from slot_ot_jax.training import host  # noqa: E402


def _slice(d, image):
  masks = jax.nn.softmax(d[..., -1:], axis=1)
  return jnp.mean(jnp.square(jnp.sum(masks * d[..., :-1], axis=1) - image))


def _index(d, image):
  return models.reconstruction_loss(models.alpha_composite(d, slot_axis=1), image)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=20)
  a = p.parse_args()
  d = jax.random.normal(jax.random.PRNGKey(0), (16, 4, 32, 32, 4))
  image = jax.random.normal(jax.random.PRNGKey(1), (16, 32, 32, 3))
  fns = {name: jax.jit(jax.grad(f)) for name, f in (("slice", _slice), ("index", _index))}
  grads = {name: jax.block_until_ready(f(d, image)) for name, f in fns.items()}
  diff = float(jnp.max(jnp.abs(grads["slice"] - grads["index"])))
  times = {name: [] for name in fns}
  for r in range(a.repeats):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      start = time.perf_counter()
      jax.block_until_ready(fns[name](d, image))
      times[name].append(time.perf_counter() - start)
  print("\n".join(host.host_lines()))
  for name, t in times.items():
    print(f"{name}: {1e3 * statistics.median(t):.2f} ms (median of {a.repeats})")
  print(f"largest gradient difference: {diff:.2e}")


if __name__ == "__main__":
  main()

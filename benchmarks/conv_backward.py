r"""Where a CPU training step of the image models goes: one convolution's forward pass against
its two backward convolutions under XLA:CPU, and formulations of the weight gradient that
avoid XLA's (not a test).

  python benchmarks/conv_backward.py [--batch 64] [--size 32] [--channels 16] [--kernel 5]
      [--repeats 7] [--threads 1] [--torch]

Times (median of --repeats after one warm-up call, jitted, float32, NHWC, "SAME" padding,
stride 1) of:
  forward            y = conv(x, w)
  input gradient     d<y, g>/dx (XLA's transposed convolution; jitted, so the unused
                     forward is dropped)
  weight gradient    d<y, g>/dw (XLA's weight-gradient convolution)
  weight gradient as a convolution with batch and channels swapped (lhs "CHWN"), and the
    same with its operands transposed into the canonical NHWC / HWIO layouts first
  weight gradient as k*k shifted contractions over batch and pixels (one einsum per offset)
  weight gradient through im2col patches and one matrix product
and, with --torch (PyTorch installed), the same forward / input / weight gradients of
torch.nn.functional.conv2d for comparison. Each formulation is checked against XLA's weight
gradient (max relative error printed).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from slot_ot_jax.training import host  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--size", type=int, default=32)
  p.add_argument("--channels", type=int, default=16)
  p.add_argument("--kernel", type=int, default=5)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--torch", action="store_true", help="also time PyTorch's conv2d")
  args = p.parse_args()
  if args.threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  b, h, c, k = args.batch, args.size, args.channels, args.kernel
  pad = k // 2
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.random.normal(jax.random.key(0), (b, h, h, c))
  w = jax.random.normal(jax.random.key(1), (k, k, c, c)) / (k * np.sqrt(c))
  g = jax.random.normal(jax.random.key(2), (b, h, h, c))

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

  def wgrad_swapped(x, g):
    # dW[i, j, ci, co] = sum_{b,h,w} xpad[b, h+i, w+j, ci] g[b, h, w, co]: a VALID
    # convolution whose batch is ci, whose features are b, and whose filter is g.
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return jax.lax.conv_general_dilated(xp, g, (1, 1), "VALID",
                                        dimension_numbers=("CHWN", "IHWO", "HWNC"))

  def wgrad_canonical(x, g):
    # The same swapped convolution with the operands transposed into XLA's canonical
    # NHWC / HWIO layouts first.
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = jax.lax.conv_general_dilated(jnp.transpose(xp, (3, 1, 2, 0)),
                                       jnp.transpose(g, (1, 2, 0, 3)), (1, 1), "VALID",
                                       dimension_numbers=dn)      # [ci, k, k, co]
    return jnp.transpose(out, (1, 2, 0, 3))

  def wgrad_shifted(x, g):
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = [jnp.einsum("bhwc,bhwo->co", xp[:, i:i + h, j:j + h, :], g)
            for i in range(k) for j in range(k)]
    return jnp.stack(rows).reshape(k, k, c, c)

  def wgrad_im2col(x, g):
    patches = jax.lax.conv_general_dilated_patches(x, (k, k), (1, 1), "SAME",
                                                   dimension_numbers=dn)  # [..., c*k*k]
    m = jnp.einsum("bhwp,bhwo->po", patches, g)
    return jnp.transpose(m.reshape(c, k, k, c), (1, 2, 0, 3))

  def time_fn(fn, *xs):
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*xs))
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*xs))
      times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)

  # Every array is an argument of the jitted functions (a captured array would be a constant
  # that XLA may fold at compile time).
  xla_wgrad = jax.grad(lambda x, w, g: jnp.vdot(conv(x, w), g), argnums=1)
  ref = jax.jit(xla_wgrad)(x, w, g)
  rows = [
      ("forward", time_fn(conv, x, w), None),
      ("input gradient (XLA)",
       time_fn(jax.grad(lambda x, w, g: jnp.vdot(conv(x, w), g)), x, w, g), None),
      ("weight gradient (XLA)", time_fn(xla_wgrad, x, w, g), 0.0),
  ]
  for name, fn in (("weight gradient, swapped-axes convolution", wgrad_swapped),
                   ("weight gradient, swapped, canonical layouts", wgrad_canonical),
                   ("weight gradient, shifted einsums", wgrad_shifted),
                   ("weight gradient, im2col + matmul", wgrad_im2col)):
    err = float(jnp.max(jnp.abs(fn(x, g) - ref)) / jnp.max(jnp.abs(ref)))
    rows.append((name, time_fn(fn, x, g), err))

  host.print_host()
  print(f"# jax {jax.__version__}, {args.threads} thread(s); x [{b}, {h}, {h}, {c}], "
        f"w [{k}, {k}, {c}, {c}]; median of {args.repeats}; load average "
        f"{os.getloadavg()[0]:.1f}")
  print("| computation | ms | / forward | max rel. error vs XLA's weight gradient |")
  print("| --- | --- | --- | --- |")
  fwd = rows[0][1]
  for name, ms, err in rows:
    print(f"| {name} | {ms:.1f} | {ms / fwd:.1f}x | {'-' if err is None else f'{err:.1e}'} |")

  if args.torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      print("PyTorch is not installed (pip install -e .[bench]); its column is skipped.")
      return
    torch.set_num_threads(args.threads)
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    wt = torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy()).requires_grad_(True)
    gt = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())

    def time_torch(fn):
      fn()
      times = []
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
      return 1e3 * statistics.median(times)

    conv_t = lambda: torch.nn.functional.conv2d(xt, wt, padding=pad)
    with torch.no_grad():
      t_fwd = time_torch(conv_t)
    t_x = time_torch(lambda: torch.autograd.grad((conv_t() * gt).sum(), xt))
    t_w = time_torch(lambda: torch.autograd.grad((conv_t() * gt).sum(), wt))
    print(f"\n# torch {torch.__version__}, {args.threads} thread(s), NCHW")
    print("| computation | ms |")
    print("| --- | --- |")
    print(f"| forward | {t_fwd:.1f} |")
    print(f"| forward + input gradient | {t_x:.1f} |")
    print(f"| forward + weight gradient | {t_w:.1f} |")


if __name__ == "__main__":
  main()

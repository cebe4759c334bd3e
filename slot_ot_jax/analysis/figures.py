r"""The analysis figures of the MESH paper (Zhang et al., ICML 2023), regenerated as PNGs.

  python -m slot_ot_jax.analysis.figures NAME... [--out=benchmarks/results/figures] [--tiny]

Run from the repository root (the attention-map figure imports `configs/`). NAME:

  entropy_gradient   Fig. 1: normalised entropy of the plan and normalised norm of its
                     gradient w.r.t. the cost, against the scale of a 10x10 identity, for
                     Sinkhorn at several temperatures and MESH at several learning rates.
  gradient_scale     App. E (Fig. 4): the same gradient norms without normalisation (linear
                     and log y axis).
  reuse_potentials   App. D (Fig. 3): mean absolute gap between the 5-iteration Sinkhorn plan
                     computed inside each MESH step and the converged plan of the same cost,
                     with and without reusing the potentials of the previous step.
  attention_maps     Fig. 2 / App. J (Figs. 7-8): per-slot attention maps of the three
                     iterations and alpha masks of SA and SA-MESH on the offline shapes
                     dataset. Trains both models first (`--workdir`, resumed when present;
                     `--steps`, default 3,000: 9-11 min per model on one core of a quiet
                     2-core CPU in the demonstration of docs/object_discovery.md with
                     these settings), or with `--no_train` draws the workdirs' latest
                     checkpoints as they are.
                     Also writes NAME.md with the numbers behind the figure.
  all                every figure above.

The attention-map figure lives in `slot_ot_jax.analysis.attention_figure` (training,
decomposition and per-slot statistics of the two models); this module holds the analytic
figures and the command line. Everything is computed with the library's public functions
(`transport.sinkhorn`, `mesh`, `mesh_sinkhorn`, `entropy`; `SlotAttention`'s sown
intermediates; `train.train_and_evaluate`).
The curve functions return plain numpy arrays so that tests can check their properties.
`--tiny` shrinks every figure to seconds (the tests use the same switch).
"""
from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax import transport
from slot_ot_jax.analysis import attention_figure
from slot_ot_jax.evaluation import visualize
from slot_ot_jax.transport import mesh_ot

DEFAULT_OUT = os.path.join("benchmarks", "results", "figures")
NAMES = ("entropy_gradient", "gradient_scale", "reuse_potentials", "attention_maps")
DEFAULT_STEPS = attention_figure.DEFAULT_STEPS

# Fig. 1 / App. E settings. The paper's text gives the problem (a scaled 10x10 identity) but
# not the temperatures, learning rates, scale range or iteration counts (they are only in the
# lost figure). Our choice: the identity enters as a similarity (cost = -scale * I), so that a
# large scale is a confident assignment as the paper's reading says; unit marginals as in
# SA-MESH's slot marginal; the module's defaults for everything else (5 Sinkhorn iterations,
# 4 MESH steps, noise 1e-3 N(0, 1)).
FIG1_SIZE = 10
FIG1_SCALES = (-3.0, 3.0)  # log10 range of the scale factor
FIG1_TEMPERATURES = (1.0, 0.1, 0.01)
FIG1_LRS = (0.5, 1.0, 2.0, 4.0)
FIG1_SINKHORN_ITERS = 5
FIG1_MESH_STEPS = 4
FIG1_NOISE_SCALE = 1e-3


# --------------------------------------------------------------------------------------
# Fig. 1 and App. E: entropy and its gradient against the cost scale
# --------------------------------------------------------------------------------------
def _uniform_entropy(n: int, k: int, mass: float) -> float:
  """Entropy of the uniform (maximum-entropy) plan of n x k entries and total `mass`."""
  p = mass / (n * k)
  return float(-n * k * p * np.log(p))


def scaled_identity_curves(scales: Sequence[float], *, size: int = FIG1_SIZE,
                           temperatures: Sequence[float] = FIG1_TEMPERATURES,
                           lrs: Sequence[float] = FIG1_LRS,
                           sinkhorn_iters: int = FIG1_SINKHORN_ITERS,
                           mesh_steps: int = FIG1_MESH_STEPS,
                           noise_scale: float = FIG1_NOISE_SCALE, seed: int = 0
                           ) -> dict[str, dict[str, np.ndarray]]:
  """Entropy of the plan and |d entropy / d cost| on cost = -scale * I (size x size).

  Sinkhorn: plan = sinkhorn(C, 1, 1, temperature=tau). MESH: plan = sinkhorn(MESH(C)) with
  learning rate lr (`mesh_ot.mesh_sinkhorn`, straight-through gradient, the SA-MESH
  default). The entropy is Shannon's (`transport.entropy`) divided by that of the uniform
  plan, so 1 is the maximum; the gradient is the Frobenius norm of d entropy / d C, both for
  the normalised entropy.

  Returns:
    {curve label: {"entropy": [S], "grad_norm": [S]}} for the labels
    "Sinkhorn, tau=..." and "MESH, lr=...", in that order.
  """
  scales = jnp.asarray(scales, jnp.float32)
  eye = jnp.eye(size, dtype=jnp.float32)
  ones = jnp.ones((size,), jnp.float32)
  noise = jax.random.normal(jax.random.PRNGKey(seed), (size, size), jnp.float32)
  h_max = _uniform_entropy(size, size, float(size))

  def h_and_grad(plan_fn, c, setting):
    """Normalised entropy of plan_fn(c, setting) and |d entropy / d c|_F."""
    h, g = jax.value_and_grad(lambda c: transport.entropy(plan_fn(c, setting)) / h_max)(c)
    return h, jnp.sqrt(jnp.sum(jnp.square(g)))

  def sweep(plan_fn, settings):
    # One compilation per method: vmapped over the settings (tau or lr) and the scales.
    over_scales = jax.vmap(lambda s, v: h_and_grad(plan_fn, -s * eye, v), in_axes=(0, None))
    fn = jax.jit(jax.vmap(over_scales, in_axes=(None, 0)))
    h, g = fn(scales, jnp.asarray(settings, jnp.float32))
    return np.asarray(h), np.asarray(g)

  sinkhorn_plan = lambda c, tau: transport.sinkhorn(
      c, ones, ones, num_iters=sinkhorn_iters, temperature=tau)[0]
  mesh_plan = lambda c, lr: mesh_ot.mesh_sinkhorn(
      c, ones, ones, noise, lr=lr, num_steps=mesh_steps, noise_scale=noise_scale,
      sinkhorn_iters=sinkhorn_iters)
  out = {}
  for name, plan_fn, settings in (("Sinkhorn, tau", sinkhorn_plan, temperatures),
                                  ("MESH, lr", mesh_plan, lrs)):
    h, g = sweep(plan_fn, settings)
    for i, v in enumerate(settings):
      out[f"{name}={v:g}"] = {"entropy": h[i], "grad_norm": g[i]}
  return out


def _fig1_scales(tiny: bool) -> np.ndarray:
  return np.logspace(*FIG1_SCALES, 13 if tiny else 61)


@functools.lru_cache(maxsize=2)
def _fig1_curves(tiny: bool) -> dict[str, dict[str, np.ndarray]]:
  """Fig. 1 and App. E plot the same curves: computed once per process."""
  return scaled_identity_curves(_fig1_scales(tiny))


def _line_styles(labels):
  """Sinkhorn curves solid in blues, MESH dashed in oranges (one shade per setting)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  sh = [lab for lab in labels if lab.startswith("Sinkhorn")]
  me = [lab for lab in labels if lab.startswith("MESH")]
  styles = {}
  for i, lab in enumerate(sh):
    styles[lab] = dict(color=plt.cm.Blues(0.45 + 0.5 * i / max(len(sh) - 1, 1)), ls="-")
  for i, lab in enumerate(me):
    styles[lab] = dict(color=plt.cm.Oranges(0.45 + 0.5 * i / max(len(me) - 1, 1)), ls="--")
  return styles


def plot_entropy_gradient(path: str, tiny: bool = False) -> dict:
  """Fig. 1: entropy (left) and gradient norm scaled to a maximum of 1 per curve (right)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  scales = _fig1_scales(tiny)
  curves = _fig1_curves(tiny)
  styles = _line_styles(curves)
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
  for label, c in curves.items():
    left.semilogx(scales, c["entropy"], label=label, **styles[label])
    g = c["grad_norm"]
    right.semilogx(scales, g / max(float(g.max()), 1e-30), label=label, **styles[label])
  left.set(xlabel="scale of the 10x10 identity", ylabel="entropy (1 = uniform plan)",
           title="Entropy of the transport plan")
  right.set(xlabel="scale of the 10x10 identity", ylabel="gradient norm (max 1 per curve)",
            title="Norm of d entropy / d cost")
  right.legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  visualize.save_figure(fig, path)
  return curves


def plot_gradient_scale(path: str, tiny: bool = False) -> dict:
  """App. E (Fig. 4): the unnormalised gradient norms, linear (left) and log (right) y axis."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  scales = _fig1_scales(tiny)
  curves = _fig1_curves(tiny)
  styles = _line_styles(curves)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for label, c in curves.items():
    axes[0].semilogx(scales, c["grad_norm"], label=label, **styles[label])
    axes[1].loglog(scales, np.maximum(c["grad_norm"], 1e-12), label=label, **styles[label])
  for ax, yscale in zip(axes, ("linear", "log")):
    ax.set(xlabel="scale of the 10x10 identity", ylabel="gradient norm",
           title=f"Norm of d entropy / d cost ({yscale} y axis)")
  axes[1].set_ylim(1e-8, None)
  axes[0].legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  visualize.save_figure(fig, path)
  return curves


# --------------------------------------------------------------------------------------
# App. D (Fig. 3): reusing the Sinkhorn potentials across MESH steps
# --------------------------------------------------------------------------------------
def reuse_potentials_gaps(max_steps: int = 8, *, batch: int = 64, num_inputs: int = 64,
                          num_slots: int = 7, dim: int = 16, cost_scale: float = 1.0,
                          lr: float = 8.0, sinkhorn_iters: int = 5,
                          converged_iters: int = 2000, noise_scale: float = 1e-3,
                          seed: int = 0) -> dict[str, np.ndarray]:
  """Mean |P_5 - P_inf| of the Sinkhorn plan run inside each MESH step.

  Problems: `batch` random slot-attention-like problems, inputs and slots from N(0, I) in
  `dim` dims, Euclidean cost times `cost_scale`, input marginal K/N (total mass K), slot
  marginal 1, as SA-MESH uses them. At MESH step t (1-based) the step runs a
  `sinkhorn_iters`-iteration Sinkhorn on the current cost C'_(t-1), warm-started from the
  potentials of step t-1 when reusing (App. D) and from zero otherwise; P_inf is the plan of
  `converged_iters` iterations on the same C'_(t-1). Each variant follows its own MESH
  trajectory (its own C'), as in the paper's ablation.

  Returns:
    {"steps": [T] 1..max_steps, "reuse": [T], "no_reuse": [T]} mean absolute errors.
  """
  kx, kz, kn = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(kx, (batch, num_inputs, dim))
  z = jax.random.normal(kz, (batch, num_slots, dim))
  cost = cost_scale * transport.euclidean_cost(x, z)
  a = jnp.full((batch, num_inputs), num_slots / num_inputs)
  b = jnp.ones((batch, num_slots))
  noise = jax.random.normal(kn, cost.shape)

  # Sinkhorn from potentials (zero potentials are the cold start: `init=None`) and the
  # converged plan: each compiled once for all steps.
  warm_plan = jax.jit(lambda c, f, g: transport.sinkhorn(c, a, b, num_iters=sinkhorn_iters,
                                                         init=(f, g))[0])
  ideal_plan = jax.jit(lambda c: transport.sinkhorn(c, a, b, num_iters=converged_iters)[0])

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def mesh_after(num_done: int, reuse: bool):
    # MESH with `num_done` steps gives C'_(num_done) and the potentials its last step
    # computed: exactly the warm start of step num_done + 1.
    c, pots = mesh_ot.mesh(cost, a, b, noise, num_steps=num_done, lr=lr,
                             noise_scale=noise_scale, sinkhorn_iters=sinkhorn_iters,
                             reuse_potentials=reuse)
    if not (reuse and num_done > 0):
      pots = (jnp.zeros_like(a), jnp.zeros_like(b))
    return c, pots

  def gap(num_done: int, reuse: bool) -> float:
    c, (f, g) = mesh_after(num_done, reuse)
    return float(jnp.mean(jnp.abs(warm_plan(c, f, g) - ideal_plan(c))))

  steps = np.arange(1, max_steps + 1)
  return {"steps": steps,
          "reuse": np.asarray([gap(t - 1, True) for t in steps]),
          "no_reuse": np.asarray([gap(t - 1, False) for t in steps])}


def plot_reuse_potentials(path: str, tiny: bool = False) -> dict:
  """App. D (Fig. 3): gap to the converged plan per MESH step, with and without reuse."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  kwargs = dict(max_steps=2, batch=4, converged_iters=200) if tiny else {}
  gaps = reuse_potentials_gaps(**kwargs)
  fig, ax = plt.subplots(figsize=(5, 3.6))
  ax.semilogy(gaps["steps"], gaps["no_reuse"], "o-", label="restart (u = v = 1)")
  ax.semilogy(gaps["steps"], gaps["reuse"], "s-", label="reuse u, v of the previous step")
  ax.set(xlabel="MESH step", ylabel="mean |P - P_converged|",
         title="5 Sinkhorn iterations inside MESH")
  ax.legend()
  fig.tight_layout()
  visualize.save_figure(fig, path)
  return gaps


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
PLOTS = {
    "entropy_gradient": plot_entropy_gradient,
    "gradient_scale": plot_gradient_scale,
    "reuse_potentials": plot_reuse_potentials,
    "attention_maps": attention_figure.plot_attention_maps,
}


def main(argv: Sequence[str] | None = None) -> list[str]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("name", nargs="+", help=f"any of {', '.join(NAMES)}, or all")
  p.add_argument("--out", default=DEFAULT_OUT, help="output folder of the PNGs")
  p.add_argument("--tiny", action="store_true", help="toy sizes (seconds)")
  p.add_argument("--workdir", default=os.path.join("workdirs", "figures"),
                 help="attention_maps: where the two models are trained (resumed if present)")
  p.add_argument("--steps", type=int, default=None,
                 help=f"attention_maps: training steps per model (default {DEFAULT_STEPS}; tiny 2)")
  p.add_argument("--no_train", action="store_true",
                 help="attention_maps: draw the workdirs' latest checkpoints as they are, even "
                 "ones saved before the end of the schedule")
  a = p.parse_args(argv)
  names = NAMES if "all" in a.name else a.name
  unknown = [n for n in names if n not in PLOTS]
  if unknown:
    p.error(f"unknown figure {unknown[0]!r}; valid names: {', '.join(NAMES)}, all")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  written = []
  for name in names:
    path = os.path.join(a.out, f"{name}.png")
    t0 = time.time()
    kwargs = (dict(workdir=a.workdir, steps=a.steps, train=not a.no_train)
              if name == "attention_maps" else {})
    PLOTS[name](path, tiny=a.tiny, **kwargs)
    print(f"wrote {path} ({time.time() - t0:.0f} s)", flush=True)
    written.append(path)
  return written


if __name__ == "__main__":
  main()

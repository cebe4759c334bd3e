"""The analysis figures at toy sizes: they render, and their curves have the papers' properties.

The attention-map figure (two trained models) is exercised by notebooks/object_discovery.ipynb,
which calls `attention_figure.plot_attention_maps` at toy size in tests/test_notebooks.py.
"""
import os
import tempfile

from absl.testing import absltest
import numpy as np

from slot_ot_jax.analysis import attention_figure
from slot_ot_jax.analysis import figures

# One toy rendering of each figure for the whole module (the expensive part is compilation).
_OUT = tempfile.mkdtemp(prefix="figures_")
_CACHE = {}


def _figure(name, **kwargs):
  if name not in _CACHE:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    path = os.path.join(_OUT, f"{name}.png")
    _CACHE[name] = (path, figures.PLOTS[name](path, tiny=True, **kwargs))
  return _CACHE[name]


class EntropyGradientTest(absltest.TestCase):
  """MESH Fig. 1 and App. E on the scaled 10x10 identity (13 scales from 1e-3 to 1e3)."""

  def setUp(self):
    super().setUp()
    self.path, self.curves = _figure("entropy_gradient")
    self.scales = figures._fig1_scales(tiny=True)
    self.small = self.scales <= 0.1

  def test_renders_every_curve(self):
    self.assertGreater(os.path.getsize(self.path), 10_000)
    self.assertLen(self.curves, len(figures.FIG1_TEMPERATURES) + len(figures.FIG1_LRS))
    for c in self.curves.values():
      self.assertTrue(np.all(np.isfinite(c["entropy"])) and np.all(np.isfinite(c["grad_norm"])))
      self.assertTrue(np.all(c["entropy"] <= 1 + 1e-4) and np.all(c["entropy"] >= -1e-6))

  def test_confident_scales_have_low_entropy_and_no_gradient(self):
    for label, c in self.curves.items():
      self.assertLess(c["entropy"][-1], 1e-3, label)
      self.assertLess(c["grad_norm"][-1], 1e-6, label)

  def test_sinkhorn_gradient_vanishes_outside_a_band(self):
    for tau in figures.FIG1_TEMPERATURES:
      g = self.curves[f"Sinkhorn, tau={tau:g}"]["grad_norm"]
      peak = int(np.argmax(g))
      self.assertTrue(0 < peak < len(g) - 1, tau)
      self.assertLess(g[0], 0.05 * g[peak], tau)   # vanishing at small scales ...
      self.assertLess(g[-1], 1e-6 * g[peak], tau)  # ... and at large ones
    # At tau = 1 the plan stays uniform (entropy ~1) at small scales: no entropy reduction.
    self.assertGreater(self.curves["Sinkhorn, tau=1"]["entropy"][self.small].min(), 0.999)

  def test_mesh_lowers_entropy_and_keeps_gradients_at_small_scales(self):
    sinkhorn = self.curves["Sinkhorn, tau=1"]
    for lr in figures.FIG1_LRS:
      c = self.curves[f"MESH, lr={lr:g}"]
      self.assertTrue(np.all(c["entropy"][self.small] < sinkhorn["entropy"][self.small] - 1e-3),
                      lr)
      self.assertGreater(c["grad_norm"][0], 0.1 * c["grad_norm"].max(), lr)
      self.assertGreater(c["grad_norm"][0], 10 * sinkhorn["grad_norm"][0], lr)

  def test_gradient_scale_depends_on_temperature_not_on_mesh_lr(self):
    # App. E: Sinkhorn's peak gradient grows like 1 / tau; MESH's stays similar across lrs.
    peak = {label: c["grad_norm"].max() for label, c in self.curves.items()}
    taus = figures.FIG1_TEMPERATURES
    self.assertGreater(peak[f"Sinkhorn, tau={min(taus):g}"],
                       10 * peak[f"Sinkhorn, tau={max(taus):g}"])
    mesh = [peak[f"MESH, lr={lr:g}"] for lr in figures.FIG1_LRS]
    self.assertLess(max(mesh), 3 * min(mesh))

  def test_unnormalised_plot_reuses_the_curves(self):
    path, curves = _figure("gradient_scale")
    self.assertGreater(os.path.getsize(path), 10_000)
    self.assertIs(curves, self.curves)


class ReusePotentialsTest(absltest.TestCase):
  """MESH App. D (Fig. 3): warm-starting Sinkhorn inside MESH narrows the gap."""

  def test_reuse_narrows_the_gap_after_the_first_step(self):
    path, gaps = _figure("reuse_potentials")
    self.assertTrue(os.path.exists(path))
    np.testing.assert_array_equal(gaps["steps"], np.arange(1, len(gaps["steps"]) + 1))
    self.assertAlmostEqual(gaps["reuse"][0], gaps["no_reuse"][0], places=7)  # same cold start
    self.assertTrue(np.all(gaps["reuse"][1:] < gaps["no_reuse"][1:]))


class AttentionStatsTest(absltest.TestCase):

  def test_entropy_and_background_share(self):
    segmentation = np.zeros((1, 2, 2), np.int32)
    segmentation[0, 0, 0] = 1                     # one object pixel, three background
    uniform = np.full((1, 1, 4, 2), 0.25)
    peaked = np.zeros((1, 1, 4, 2))
    peaked[0, 0, 0, :] = 1.0                      # both slots on the object pixel
    stats = attention_figure.attention_stats(np.concatenate([uniform, peaked]), segmentation)
    np.testing.assert_allclose(stats["entropy"], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(stats["background"], [0.75, 0.0], atol=1e-12)

  def test_rejects_a_downsampled_grid(self):
    with self.assertRaisesRegex(ValueError, "full-resolution"):
      attention_figure.attention_stats(np.ones((1, 1, 4, 2)), np.zeros((1, 4, 4), np.int32))


class CommandLineTest(absltest.TestCase):

  def test_unknown_name_lists_the_valid_ones(self):
    with self.assertRaises(SystemExit):
      figures.main(["no_such_figure"])


if __name__ == "__main__":
  absltest.main()

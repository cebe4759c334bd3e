"""The custom-VJP Sinkhorn and MESH (slot_ot_jax/transport/sinkhorn_ot.py) against autodiff."""
from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from test_transport import _problem  # pylint: disable=g-bad-import-order

from slot_ot_jax import transport as T


def _ref_sinkhorn(cost, a, b, num_iters, temperature=1.0, g0=None):
  """Plain log-domain Sinkhorn (row then column steps), differentiated by JAX autodiff."""
  logits = -cost / temperature
  log_a = jnp.log(jnp.maximum(a, T.MIN_MARGINAL))
  log_b = jnp.log(jnp.maximum(b, T.MIN_MARGINAL))
  g = jnp.zeros(logits.shape[:-2] + b.shape[-1:]) if g0 is None else g0
  for _ in range(num_iters):
    f = log_a - jax.nn.logsumexp(logits + g[..., None, :], axis=-1)
    g = log_b - jax.nn.logsumexp(logits + f[..., :, None], axis=-2)
  return jnp.exp(logits + f[..., :, None] + g[..., None, :]), (f, g)


def _ref_mesh(cost, a, b, noise, *, num_steps=4, lr=8.0, sinkhorn_iters=5, temperature=1.0,
              reuse_potentials=True, differentiate_steps=False, objective=T.mesh_entropy):
  """MESH written out with `_ref_sinkhorn` and `jax.grad` (the reference gradient path)."""
  c = cost + 1e-3 * noise
  g = None
  for _ in range(num_steps):
    obj = lambda cc, g=g: jnp.sum(objective(
        _ref_sinkhorn(cc, a, b, sinkhorn_iters, temperature, g)[0]))
    step = jax.grad(obj)(c)
    if not differentiate_steps:
      step = jax.lax.stop_gradient(step)
    _, (f, g_new) = _ref_sinkhorn(c, a, b, sinkhorn_iters, temperature, g)
    g = g_new if reuse_potentials else None
    norm = jnp.sqrt(jnp.sum((step + 1e-20) ** 2, (-2, -1), keepdims=True))
    c = c - lr * (step + 1e-20) / jnp.maximum(norm, 1e-12)
  return c, ((f, g) if reuse_potentials else None)


def _assert_trees_close(test, got, want, rtol, atol, what):
  for i, (x, y) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want))):
    test.assertEqual(x.shape, y.shape, f"{what} leaf {i}")
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{what} leaf {i}")


class AgainstAutodiffReferenceTest(parameterized.TestCase):
  """The custom-VJP Sinkhorn and MESH against plain autodiff of the log-domain loops."""

  @parameterized.named_parameters(
      ("five_iters", dict(batch=(3,), n=9, k=4, iters=5, tau=1.0)),
      ("one_iter_cold_low_temperature", dict(batch=(2,), n=7, k=5, iters=1, tau=0.3,
                                             cold=True)),
      ("two_iters_fewer_inputs_than_slots", dict(batch=(2,), n=3, k=6, iters=2, tau=2.0)),
      ("shared_marginals_two_batch_dims", dict(batch=(2, 2), n=8, k=3, iters=4, tau=0.7,
                                               shared=True)),
      ("scan_iters_uniform", dict(batch=(2,), n=6, k=3, iters=12, tau=0.5, uniform=True)),
  )
  def test_sinkhorn_values_and_gradients(self, cfg):
    cost, a, b, w = _problem(30 + cfg["iters"], batch=cfg["batch"], n=cfg["n"], k=cfg["k"])
    if cfg.get("uniform"):
      a, b = jnp.ones_like(a), jnp.full_like(b, cfg["n"] / cfg["k"])
    if cfg.get("shared"):
      a, b = a[(0,) * len(cfg["batch"])], b[(0,) * len(cfg["batch"])] * 0 + a[0, 0].sum() / cfg["k"]
    g0 = None if cfg.get("cold") else jnp.asarray(
        np.random.default_rng(1).normal(size=cfg["batch"] + (cfg["k"],)) * 0.3, jnp.float32)
    wf, wg = jnp.sin(jnp.arange(cfg["n"]) * 1.0), jnp.cos(jnp.arange(cfg["k"]) * 1.0)

    def loss(fn):
      def value(c, aa, bb, g, tau):
        plan, (f, gg) = fn(c, aa, bb, g, tau)
        return jnp.sum(w * plan) + jnp.sum(wf * f) + jnp.sum(wg * gg), (plan, f, gg)
      return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2, 3, 4), has_aux=True))

    ours = lambda c, aa, bb, g, tau: T.sinkhorn(
        c, aa, bb, num_iters=cfg["iters"], temperature=tau,
        init=None if g is None else (jnp.zeros(c.shape[:-1]), g))
    ref = lambda c, aa, bb, g, tau: _ref_sinkhorn(c, aa, bb, cfg["iters"], tau, g)
    args = (cost, a, b, g0, jnp.float32(cfg["tau"]))
    (v1, out1), grads1 = loss(ours)(*args)
    (v2, out2), grads2 = loss(ref)(*args)
    _assert_trees_close(self, out1, out2, 1e-5, 1e-6, "plan and potentials")
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    _assert_trees_close(self, grads1, grads2, 1e-4, 1e-5, "gradients")

  # MESH amplifies float32 round-off through its normalised steps (C' differs by ~1e-4
  # between two float32 implementations at lr 8), so it is compared in float64, tightly.
  @parameterized.named_parameters(
      ("reuse_potentials", dict(num_steps=3, sinkhorn_iters=4)),
      ("no_reuse_low_temperature", dict(num_steps=2, sinkhorn_iters=3,
                                        reuse_potentials=False, temperature=0.5)),
      ("one_iter_high_temperature", dict(num_steps=2, sinkhorn_iters=1, temperature=2.0,
                                         lr=1.0)),
      ("differentiate_steps", dict(num_steps=2, sinkhorn_iters=2, differentiate_steps=True,
                                   lr=1.0)),
      ("custom_objective_closing_over_an_array", dict(num_steps=2, sinkhorn_iters=3,
                                                      objective="similarity", lr=2.0)),
      ("learned_lr", dict(num_steps=2, sinkhorn_iters=3, lr="traced")),
  )
  def test_mesh_values_and_gradients(self, kwargs):
    with jax.enable_x64(True):
      cost, a, b, noise = (x.astype(jnp.float64)
                           for x in _problem(40, batch=(2,), n=6, k=3, scale=1.0))
      w = jax.random.normal(jax.random.PRNGKey(3), cost.shape, jnp.float64)
      kwargs = dict(kwargs)
      if kwargs.get("objective") == "similarity":
        target = jnp.asarray(np.random.default_rng(2).random(cost.shape))
        kwargs["objective"] = lambda p: T.mesh_entropy(p) + jnp.mean((p - target) ** 2, (-2, -1))
      traced_lr = kwargs.get("lr") == "traced"  # e.g. learn_mesh_lr: the autodiff path
      lr = jnp.float64(3.0) if traced_lr else kwargs.pop("lr", 8.0)
      kwargs.pop("lr", None)
      iters = kwargs["sinkhorn_iters"]

      def loss(mesh_fn):
        def value(c, aa, bb, lr):
          cm, pots = mesh_fn(c, aa, bb, lr)
          plan = T.sinkhorn(cm, aa, bb, num_iters=iters, init=pots)[0]
          extra = 0.0 if pots is None else jnp.sum(jnp.cos(pots[1])) + jnp.sum(jnp.sin(pots[0]))
          return jnp.sum(w * plan) + extra, (cm, pots, plan)
        argnums = (0, 1, 2, 3) if traced_lr else (0, 1, 2)
        fn = jax.value_and_grad(value, argnums=argnums, has_aux=True)
        return jax.jit(fn) if traced_lr else jax.jit(fn, static_argnums=3)

      ours = loss(lambda c, aa, bb, lr: T.mesh(c, aa, bb, noise, lr=lr, **kwargs))
      ref = loss(lambda c, aa, bb, lr: _ref_mesh(c, aa, bb, noise, lr=lr, **kwargs))
      (v1, out1), grads1 = ours(cost, a, b, lr)
      (v2, out2), grads2 = ref(cost, a, b, lr)
      _assert_trees_close(self, out1, out2, 1e-9, 1e-11, "C', potentials, plan")
      np.testing.assert_allclose(v1, v2, rtol=1e-10)
      _assert_trees_close(self, grads1, grads2, 1e-8, 1e-10, "gradients")
      # The step loop moved the cost and the gradient is not trivially the identity.
      self.assertGreater(float(jnp.abs(out1[0] - cost).max()), 0.1)


if __name__ == "__main__":
  absltest.main()

"""Tests of MESH (slot_ot_jax/transport/mesh_ot.py, reached through slot_ot_jax.transport)."""
from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
from test_transport import _problem  # pylint: disable=g-bad-import-order

from slot_ot_jax import transport as T
from slot_ot_jax.transport import mesh_ot


class MeshTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_lowers_entropy_and_keeps_marginals(self):
    cost, a, b, noise = _problem(10, batch=(16,), n=12, k=5, scale=1.0)
    sh = self.variant(lambda c: T.sinkhorn(c, a, b, num_iters=5)[0])(cost)
    me = self.variant(lambda c: T.mesh_sinkhorn(c, a, b, noise, lr=1.0))(cost)
    self.assertTrue(bool(jnp.all(T.entropy(me) < T.entropy(sh))),
                    (T.entropy(me), T.entropy(sh)))
    np.testing.assert_allclose(me.sum(-2), b, atol=2e-6)
    # Input marginal: as close as Sinkhorn's own 5 iterations get.
    self.assertLess(float(jnp.abs(me.sum(-1) - a).max()), 0.05)

  def test_zero_steps_return_the_noisy_cost_and_a_cold_start(self):
    cost, a, b, noise = _problem(11, batch=(3,), n=6, k=4, scale=1.0)
    for reuse in (True, False):
      c, pots = T.mesh(cost, a, b, noise, num_steps=0, noise_scale=1e-3, reuse_potentials=reuse)
      np.testing.assert_allclose(c, cost + 1e-3 * noise, rtol=1e-6)
      if reuse:
        self.assertEqual([p.shape for p in pots], [(3, 6), (3, 4)])
        self.assertEqual(float(jnp.abs(pots[0]).max() + jnp.abs(pots[1]).max()), 0.0)
      else:
        self.assertIsNone(pots)

  def test_breaks_a_two_by_two_tie(self):
    cost, ones = jnp.ones((1, 2, 2)), jnp.ones((1, 2))
    noise = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2))
    sh, _ = T.sinkhorn(cost, ones, ones, num_iters=5)
    me = T.mesh_sinkhorn(cost, ones, ones, noise, lr=8.0)
    np.testing.assert_allclose(sh, 0.5, atol=1e-7)  # Sinkhorn cannot break the tie.
    self.assertAlmostEqual(float(T.entropy(sh)[0]), 2 * np.log(2), places=5)
    self.assertLess(float(T.entropy(me)[0]), 1e-3)  # measured: ~1e-10
    perm = np.round(np.asarray(me[0]))
    self.assertIn(perm.tolist(), ([[1, 0], [0, 1]], [[0, 1], [1, 0]]))

  def test_separates_duplicate_slots(self):
    """Two identical slots and two identical inputs plus a distinct pair (App. B example)."""
    x = jnp.asarray([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]])
    z = jnp.asarray([[0.1, 0.0], [0.1, 0.0], [3.0, 3.1]])
    cost = T.euclidean_cost(x, z)[None]
    ones = jnp.ones((1, 3))
    noise = jax.random.normal(jax.random.PRNGKey(1), cost.shape)
    sh, _ = T.sinkhorn(cost, ones, ones, num_iters=50, temperature=0.1)
    me = T.mesh_sinkhorn(cost, ones, ones, noise, lr=8.0, temperature=0.1)
    np.testing.assert_allclose(sh[0, :2, :2], 0.5, atol=1e-4)  # tied slots average
    np.testing.assert_allclose(me[0, 2, 2], 1.0, atol=1e-3)     # the distinct pair stays
    top = np.asarray(me[0, :2, :2])
    self.assertLess(float(T.entropy(me)[0]), 0.05)
    self.assertTrue(np.allclose(np.round(top), np.eye(2)) or
                    np.allclose(np.round(top), np.eye(2)[::-1]))

  def test_multiset_not_set_equivariant(self):
    """Ties: permuting the slots does not permute the plan (no set-equivariance), but the
    plan's values are the same up to a permutation (multiset-equivariance, App. C)."""
    cost, ones = jnp.ones((1, 2, 2)), jnp.ones((1, 2))
    noise = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2))
    plan = T.mesh_sinkhorn(cost, ones, ones, noise, lr=8.0)
    plan_perm = T.mesh_sinkhorn(cost[:, :, ::-1], ones, ones, noise, lr=8.0)
    self.assertFalse(np.allclose(plan_perm, plan[:, :, ::-1], atol=0.1))
    np.testing.assert_allclose(np.sort(plan_perm.ravel()), np.sort(plan.ravel()), atol=1e-5)

  def test_without_ties_noise_free_mesh_is_set_equivariant(self):
    cost, a, b, _ = _problem(11, batch=(), n=8, k=3)
    zero = jnp.zeros_like(cost)
    pk = np.array([2, 0, 1])
    plan = T.mesh_sinkhorn(cost, a, b, zero, lr=1.0)
    plan_k = T.mesh_sinkhorn(cost[:, pk], a, b[pk], zero[:, pk], lr=1.0)
    np.testing.assert_allclose(plan_k, plan[:, pk], atol=1e-5)

  def test_default_gradient_path_is_the_reference_one(self):
    """Straight-through cost update, differentiable warm-start potentials."""
    cost, a, b, noise = _problem(12, n=7, k=3)
    w = jax.random.normal(jax.random.PRNGKey(0), cost.shape)

    def manual(c):
      # Same computation written out: constant steps, potentials kept in the graph.
      ct = c + 1e-3 * noise
      f, g = jnp.zeros_like(a), jnp.zeros_like(b)
      for _ in range(4):
        obj = lambda cc, f=f, g=g: jnp.sum(T.mesh_entropy(
            T.sinkhorn(cc, a, b, num_iters=5, init=(f, g))[0]))
        step = jax.lax.stop_gradient(jax.grad(obj)(ct))
        _, (f, g) = T.sinkhorn(ct, a, b, num_iters=5, init=(f, g))
        norm = jnp.sqrt(jnp.sum((step + 1e-20) ** 2, (-2, -1), keepdims=True))
        ct = ct - 8.0 * (step + 1e-20) / norm
      return T.sinkhorn(ct, a, b, num_iters=5, init=(f, g))[0]

    loss = lambda fn: jax.jit(jax.grad(lambda c: jnp.sum(w * fn(c))))
    ours = lambda c: T.mesh_sinkhorn(c, a, b, noise)
    np.testing.assert_allclose(jax.jit(ours)(cost), jax.jit(manual)(cost), atol=1e-5)
    g_ours = loss(ours)(cost)
    np.testing.assert_allclose(g_ours, loss(manual)(cost), rtol=1e-4, atol=1e-5)

    # Detaching the potentials, or differentiating the steps, changes the gradient.
    def detached(c):
      cm, pots = T.mesh(c, a, b, noise)
      return T.sinkhorn(cm, a, b, num_iters=5, init=jax.lax.stop_gradient(pots))[0]
    through = lambda c: T.mesh_sinkhorn(c, a, b, noise, differentiate_steps=True)
    rel = lambda g: float(jnp.linalg.norm(g - g_ours) / jnp.linalg.norm(g_ours))
    self.assertGreater(rel(loss(detached)(cost)), 0.05)
    self.assertGreater(rel(loss(through)(cost)), 0.05)

  def test_warm_start_closes_the_gap_to_converged_sinkhorn(self):
    """App. D / Fig. 3: reusing potentials beats restarting at a fixed iteration budget."""
    cost, a, b, noise = _problem(13, batch=(32,), n=20, k=5, scale=1.0)
    gaps = {}
    for reuse in (True, False):
      cm, pots = T.mesh(cost, a, b, noise, lr=2.0, reuse_potentials=reuse, sinkhorn_iters=3)
      plan, _ = T.sinkhorn(cm, a, b, num_iters=3, init=pots)
      exact, _ = T.sinkhorn(cm, a, b, num_iters=1000)
      gaps[reuse] = float(jnp.mean(jnp.abs(plan - exact)))
    self.assertLess(gaps[True], 0.5 * gaps[False], gaps)

  def test_reached_through_transport(self):
    # MESH lives in mesh_ot; the transport package re-exports it.
    self.assertIs(T.mesh, mesh_ot.mesh)
    self.assertIs(T.mesh_sinkhorn, mesh_ot.mesh_sinkhorn)
    with self.assertRaisesRegex(AttributeError, "no attribute 'mesh_solver'"):
      _ = T.mesh_solver

  def test_custom_objective(self):
    cost, a, b, noise = _problem(14)
    neg = T.mesh_sinkhorn(cost, a, b, noise, lr=1.0, objective=lambda p: -T.mesh_entropy(p))
    pos = T.mesh_sinkhorn(cost, a, b, noise, lr=1.0)
    self.assertTrue(bool(jnp.all(T.entropy(neg) > T.entropy(pos))))


if __name__ == "__main__":
  absltest.main()

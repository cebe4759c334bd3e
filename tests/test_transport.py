"""Tests of the optimal-transport core (slot_ot_jax/transport/sinkhorn_ot.py)."""
import itertools
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import scipy.optimize

from slot_ot_jax import transport as T
from slot_ot_jax.transport import exact_ot


def _problem(seed, batch=(3,), n=9, k=4, scale=3.0):
  rng = np.random.default_rng(seed)
  cost = np.abs(rng.normal(size=batch + (n, k))) * scale
  a = k * _softmax(rng.normal(size=batch + (n,)))
  b = k * _softmax(rng.normal(size=batch + (k,)))
  noise = rng.normal(size=batch + (n, k))
  return tuple(jnp.asarray(x, jnp.float32) for x in (cost, a, b, noise))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


class CostTest(parameterized.TestCase):

  def test_costs_against_numpy(self):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4, 3))
    diff = x[:, :, None] - y[:, None]
    sq = (diff ** 2).sum(-1)
    xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=-1, keepdims=True)
    expected = {
        "sqeuclidean": sq,
        "euclidean": np.sqrt(sq),
        "cosine": 1 - np.einsum("bnd,bkd->bnk", xn, yn),
        "dot": -np.einsum("bnd,bkd->bnk", x, y) / np.sqrt(3),
    }
    for name, want in expected.items():
      got = T.get_cost_fn(name)(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)

  def test_euclidean_gradient_finite_at_coincident_points(self):
    x = jnp.ones((1, 2, 3))
    g = jax.grad(lambda x: T.euclidean_cost(x, x).sum())(x)
    self.assertTrue(np.isfinite(g).all())

  def test_unknown_cost_lists_valid(self):
    with self.assertRaisesRegex(ValueError, "euclidean"):
      T.get_cost_fn("l3")


class SinkhornTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_marginals_met(self):
    cost, a, b, _ = _problem(0)
    fn = self.variant(lambda c, a, b: T.sinkhorn(c, a, b, num_iters=300))
    plan, (f, g) = fn(cost, a, b)
    np.testing.assert_allclose(plan.sum(-1), a, atol=1e-5)
    np.testing.assert_allclose(plan.sum(-2), b, atol=1e-5)
    # The plan is exactly the one the potentials describe.
    np.testing.assert_allclose(plan, jnp.exp(-cost + f[..., None] + g[..., None, :]),
                               rtol=1e-5, atol=1e-7)

  def test_slot_marginal_exact_after_every_iteration(self):
    cost, a, b, _ = _problem(1)
    for iters in (1, 2, 5):
      plan, _ = T.sinkhorn(cost, a, b, num_iters=iters)
      np.testing.assert_allclose(plan.sum(-2), b, atol=2e-6)
    # ... while the input marginal is still off after one iteration.
    plan, _ = T.sinkhorn(cost, a, b, num_iters=1)
    self.assertGreater(float(jnp.abs(plan.sum(-1) - a).max()), 1e-3)

  def test_jit_and_eager_agree(self):
    cost, a, b, _ = _problem(2)
    eager = T.sinkhorn(cost, a, b, num_iters=7, temperature=0.3)[0]
    jitted = jax.jit(lambda c: T.sinkhorn(c, a, b, num_iters=7, temperature=0.3)[0])(cost)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-7)

  def test_matches_log_domain_reference_iteration_by_iteration(self):
    """Same algorithm as the plain log-domain loop (row then column), float64 numpy."""
    cost, a, b, _ = _problem(3)
    c, aa, bb = (np.asarray(x, np.float64) for x in (cost, a, b))
    tau = 0.7
    f, g = np.zeros_like(aa), np.zeros_like(bb)
    lse = lambda x, ax: np.log(np.exp(x).sum(ax))
    for _ in range(4):
      f = np.log(aa) - lse(-c / tau + g[..., None, :], -1)
      g = np.log(bb) - lse(-c / tau + f[..., :, None], -2)
    want = np.exp(-c / tau + f[..., :, None] + g[..., None, :])
    got, (gf, gg) = T.sinkhorn(cost, a, b, num_iters=4, temperature=tau)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(gf, f, atol=1e-4)
    np.testing.assert_allclose(gg, g, atol=1e-4)

  def test_agrees_with_ott_jax_and_pot_at_convergence(self):
    import ot
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    cost, a, b, _ = _problem(4, batch=())
    tau = 0.5
    ours, _ = T.sinkhorn(cost, a, b, num_iters=500, temperature=tau)
    geom = geometry.Geometry(cost_matrix=cost, epsilon=tau)
    out = ott_sinkhorn.Sinkhorn(threshold=1e-7, max_iterations=5000)(
        linear_problem.LinearProblem(geom, a, b))
    # Tolerances: float32 plans of total mass K=4, converged to ~1e-6 marginal error.
    np.testing.assert_allclose(ours, out.matrix, atol=2e-5)
    pot = ot.bregman.sinkhorn_log(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                  np.asarray(cost, np.float64), tau, numItermax=5000,
                                  stopThr=1e-12)
    np.testing.assert_allclose(ours, pot, atol=2e-5)

  def test_warm_start_from_converged_potentials_is_a_fixed_point(self):
    cost, a, b, _ = _problem(5)
    plan, pots = T.sinkhorn(cost, a, b, num_iters=400)
    plan2, _ = T.sinkhorn(cost, a, b, num_iters=1, init=pots)
    np.testing.assert_allclose(plan2, plan, atol=1e-6)

  def test_set_equivariance_over_slots_and_inputs(self):
    cost, a, b, _ = _problem(6, batch=())
    pk, pn = np.random.default_rng(0).permutation(4), np.random.default_rng(1).permutation(9)
    plan, _ = T.sinkhorn(cost, a, b, num_iters=5)
    plan_k, _ = T.sinkhorn(cost[:, pk], a, b[pk], num_iters=5)
    plan_n, _ = T.sinkhorn(cost[pn], a[pn], b, num_iters=5)
    np.testing.assert_allclose(plan_k, plan[:, pk], atol=1e-6)
    np.testing.assert_allclose(plan_n, plan[pn], atol=1e-6)

  def test_gradient_float64(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      cost = jnp.asarray(np.abs(rng.normal(size=(2, 4, 3))), jnp.float64)
      a = jnp.asarray(_softmax(rng.normal(size=(2, 4))) * 3, jnp.float64)
      b = jnp.asarray(_softmax(rng.normal(size=(2, 3))) * 3, jnp.float64)
      w = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float64)
      init = (jnp.asarray(rng.normal(size=(2, 4)) * 0.1),
              jnp.asarray(rng.normal(size=(2, 3)) * 0.1))
      fn = lambda c, a, b, f, g: jnp.sum(w * T.sinkhorn(c, a, b, num_iters=4,
                                                        temperature=0.8, init=(f, g))[0])
      check_grads(fn, (cost, a, b) + init, order=1, modes=("rev",), atol=1e-6, rtol=1e-6)

  def test_marginals_shared_across_the_batch(self):
    # a [N] and b [K] broadcast against cost [B, N, K]: values and gradients (w.r.t. cost and
    # the shared marginals) equal those of explicitly broadcast marginals.
    cost, a, b, w = _problem(7)
    a0, b0 = a[0] * (b[0].sum() / a[0].sum()), b[0]
    def loss(c, aa, bb):
      return jnp.sum(w * T.sinkhorn(c, aa, bb, num_iters=4)[0])
    shared = jax.grad(loss, argnums=(0, 1, 2))(cost, a0, b0)
    full = jax.grad(lambda c, aa, bb: loss(c, jnp.broadcast_to(aa, (3, 9)),
                                           jnp.broadcast_to(bb, (3, 4))),
                    argnums=(0, 1, 2))(cost, a0, b0)
    for x, y in zip(shared, full):
      self.assertEqual(x.shape, y.shape)
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


class RobustnessTest(absltest.TestCase):

  def test_no_nan_or_inf_over_ten_thousand_problems(self):
    n, k, count = 6, 3, 10_000
    rng = np.random.default_rng(0)
    scale = 10.0 ** rng.uniform(-4, 4, size=count)
    temp = 10.0 ** rng.uniform(-2, 1, size=count)
    cost = np.abs(rng.normal(size=(count, n, k))) * scale[:, None, None]
    a = _softmax(rng.normal(size=(count, n)) * 3) * k
    b = _softmax(rng.normal(size=(count, k)) * 3) * k
    # A third of the problems get marginal entries down to 1e-30.
    tiny = rng.random(count) < 1 / 3
    a[tiny, 0] = 10.0 ** rng.uniform(-30, -10, size=tiny.sum())
    b[tiny, -1] = 10.0 ** rng.uniform(-30, -10, size=tiny.sum())
    noise = rng.normal(size=cost.shape)
    w = rng.normal(size=cost.shape)
    args = tuple(jnp.asarray(x, jnp.float32) for x in (cost, a, b, noise, w, temp))

    def one(c, a, b, nz, w, t):
      sh = lambda c: T.sinkhorn(c, a, b, num_iters=5, temperature=t)
      me = lambda c: T.mesh_sinkhorn(c, a, b, nz, temperature=t, lr=8.0)
      (plan, pots), vjp = jax.vjp(sh, c)
      grad_sh = vjp((w, (jnp.ones_like(a), jnp.ones_like(b))))[0]
      mplan, grad_me = jax.value_and_grad(lambda c: jnp.sum(w * me(c)))(c)
      return plan, pots, grad_sh, mplan, grad_me

    outs = jax.jit(jax.vmap(one))(*args)
    for name, x in zip(("plan", "potentials", "grad sinkhorn", "mesh plan", "grad mesh"), outs):
      for leaf in jax.tree.leaves(x):
        self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))), name)


class EmdTest(parameterized.TestCase):

  @parameterized.parameters(itertools.product((3, 5, 8), (0, 1)))
  def test_square_uniform_is_a_permutation_matching_lsa(self, n, seed):
    rng = np.random.default_rng(seed)
    cost = jnp.asarray(rng.random((2, n, n)), jnp.float32)
    ones = jnp.ones((2, n))
    plan = np.asarray(jax.jit(T.emd)(cost, ones, ones))
    self.assertTrue(np.all((np.abs(plan) < 1e-6) | (np.abs(plan - 1) < 1e-6)))
    for i in range(2):
      rows, cols = scipy.optimize.linear_sum_assignment(np.asarray(cost[i]))
      want = np.zeros((n, n))
      want[rows, cols] = 1
      np.testing.assert_allclose(plan[i], want, atol=1e-6)

  def test_vmap_and_rectangular_marginals(self):
    cost, a, b, _ = _problem(20, batch=(2, 3))
    plan = jax.jit(jax.vmap(T.emd))(cost, a, b)
    np.testing.assert_allclose(plan.sum(-1), a, atol=1e-5)
    np.testing.assert_allclose(plan.sum(-2), b, atol=1e-4)

  def test_host_solver_matches_pot_emd_and_falls_back_to_it(self):
    ot = exact_ot.require_pot()
    rng = np.random.default_rng(3)
    cost = rng.random((4, 30, 5))
    a = rng.random((4, 30))
    a[0, :12] = 0.0  # Zero-weight inputs: the solver drops them; the plan rows stay zero.
    a /= a.sum(-1, keepdims=True)
    b = np.full((4, 5), 0.2)
    want = np.stack([ot.emd(a[i], b[i], cost[i]) for i in range(4)])
    np.testing.assert_allclose(exact_ot.emd_host(cost, a, b), want, atol=1e-12)
    self.assertIsNot(exact_ot.network_simplex(ot), ot.emd)
    with mock.patch.object(ot.lp, "emd_wrap", object()):  # No emd_c: plain ot.emd.
      self.assertIs(exact_ot.network_simplex(ot), ot.emd)
      np.testing.assert_allclose(exact_ot.emd_host(cost, a, b), want, atol=1e-12)

  def test_cpu_solves_in_xla_buffers_and_both_callbacks_agree(self):
    # On CPU the plans are written into XLA's buffers (buffer_callback): pure_callback's
    # copies of the inputs could deadlock training on the CPU device (exact_ot._solve).
    cost, a, b, _ = _problem(24, batch=(2, 3))
    text = jax.jit(T.emd).lower(cost, a, b).as_text()
    self.assertIn("xla_buffer_python_cpu_callback", text)
    self.assertNotIn("xla_ffi_python_cpu_callback", text)
    want = exact_ot.emd_host(np.asarray(cost), np.asarray(a), np.asarray(b))
    for solve in (exact_ot._solve_in_buffers, exact_ot._solve_by_copy):
      np.testing.assert_allclose(jax.jit(solve)(cost, a, b), want, atol=1e-6)
      np.testing.assert_allclose(jax.jit(jax.vmap(solve))(cost, a, b), want, atol=1e-6)
    np.testing.assert_allclose(cost, _problem(24, batch=(2, 3))[0])  # inputs untouched

  def test_batch_dims_broadcast_across_arguments(self):
    cost, a, b, _ = _problem(23, batch=(3,))
    want = T.emd(jnp.broadcast_to(cost[0], cost.shape), a, jnp.broadcast_to(b[0], b.shape))
    np.testing.assert_allclose(T.emd(cost[0], a, b[0]), want, atol=1e-6)

  def test_emd_sinkhorn_value_and_gradient(self):
    cost, a, b, _ = _problem(21)
    w = jax.random.normal(jax.random.PRNGKey(0), cost.shape)
    combined = T.emd_sinkhorn(cost, a, b, num_iters=5)
    sh = T.sinkhorn(cost, a, b, num_iters=5)[0]
    np.testing.assert_allclose(combined, T.emd(cost, a, b) + sh, atol=1e-6)
    g1 = jax.grad(lambda c: jnp.sum(w * T.emd_sinkhorn(c, a, b, num_iters=5)))(cost)
    g2 = jax.grad(lambda c: jnp.sum(w * T.sinkhorn(c, a, b, num_iters=5)[0]))(cost)
    np.testing.assert_allclose(g1, g2, atol=1e-6)

  def test_sharded_over_a_context_mesh(self):
    # Under `jax.set_mesh` the host callback runs per shard of the leading axis: the result
    # equals the single-device one and stays sharded over the data axis (without the
    # shard_map, SPMD places the callback on one device and the output is not data-sharded).
    from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
    from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
    from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
    self.assertGreaterEqual(jax.device_count(), 4)
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    cost, a, b, _ = _problem(22, batch=(8,), n=12, k=3)
    want = T.emd_sinkhorn(cost, a[0], b, num_iters=3)
    sharded = NamedSharding(mesh, P("data"))
    cost_s, b_s = jax.device_put((cost, b), sharded)
    with jax.set_mesh(mesh):
      fn = jax.jit(lambda c, aa, bb: T.emd_sinkhorn(c, aa, bb, num_iters=3))
      got = fn(cost_s, a[0], b_s)
      grad = jax.jit(jax.grad(lambda c: jnp.sum(T.emd_sinkhorn(c, a[0], b_s, num_iters=3))))(
          cost_s)
    np.testing.assert_allclose(got, want, atol=1e-6)
    self.assertEqual(got.sharding.spec, P("data"))
    self.assertEqual(grad.shape, cost.shape)
    self.assertTrue(np.all(np.isfinite(grad)))


if __name__ == "__main__":
  absltest.main()

"""Tests of SlotAttention (slot_ot_jax/modules/attention.py)."""
import functools
import itertools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax import SlotAttention
from slot_ot_jax import SlotMLP
from slot_ot_jax.modules import attention as attention_lib

B, N, D_IN, K, D = 2, 12, 6, 3, 8


def _rngs(seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {"params": keys[0], "slots": keys[1], "mesh": keys[2]}


def _inputs(seed=0):
  return jax.random.normal(jax.random.PRNGKey(100 + seed), (B, N, D_IN))


def _module(**kw):
  # Small iteration counts keep compilation short; tests that need more say so.
  kw.setdefault("num_slots", K)
  kw.setdefault("sinkhorn_iters", 3)
  kw.setdefault("mesh_steps", 2)
  return SlotAttention(slot_size=D, mlp_size=16, **kw)


@functools.lru_cache(maxsize=None)
def _jitted_apply(module, train, num_slots):
  return jax.jit(functools.partial(module.apply, train=train, num_slots=num_slots,
                                   mutable=["batch_stats", "intermediates"]))


def _init(module, x):
  return jax.jit(functools.partial(module.init, train=True))(_rngs(0), x)


def _run(module, variables, x, *, train=True, rngs=None, num_slots=None, initial_slots=None):
  rngs = rngs or _rngs(1)
  return _jitted_apply(module, train, num_slots)(variables, x, rngs=rngs,
                                                 initial_slots=initial_slots)


# Parameters that get no gradient by construction (explained where they are asserted).
def _allowed_zero(path, module):
  name = "/".join(str(getattr(p, "key", p)) for p in path)
  if module.mesh_objective == "learned" and "mesh_objective_mlp" in name and "bias" in name:
    # MESH steps use d objective / d plan; for a ReLU MLP this is piecewise constant in
    # the biases, so they receive no gradient (a property of App. I's ReLU objective).
    return True
  if module.slot_init == "identical" and module.num_iters == 1 and "marginal_slots" in name:
    # Identical slots in the only iteration: b = K softmax_K(h_b(z)) is uniform whatever
    # h_b's parameters are (all K logits move together), so they get no gradient.
    return True
  return False


class CombinationTest(parameterized.TestCase):
  """Every attention x update_norm x initialisation: shapes, jit, finite, gradients."""

  @parameterized.parameters(itertools.product(
      attention_lib.ATTENTIONS, attention_lib.UPDATE_NORMS, attention_lib.SLOT_INITS))
  def test_combination(self, attention, update_norm, slot_init):
    # One iteration of everything keeps the 96 compilations cheap; the iteration loop
    # itself is covered by the tests below.
    module = _module(attention=attention, update_norm=update_norm, slot_init=slot_init,
                     num_iters=1, sinkhorn_iters=1, mesh_steps=1)
    x = _inputs()
    variables = _init(module, x)

    @jax.jit
    def loss(params, x):
      out, state = _run(module, {**variables, "params": params}, x)
      w = jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size
      return jnp.sum(w * out), (out, state)

    (value, (out, state)), grads = jax.value_and_grad(loss, has_aux=True)(
        variables["params"], x)
    self.assertEqual(out.shape, (B, K, D))
    self.assertTrue(bool(jnp.isfinite(value)))
    attn = state["intermediates"]["attn"]
    self.assertLen(attn, 1)
    self.assertEqual(attn[-1].shape, (B, N, K))
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))), path)
      if not _allowed_zero(path, module):
        self.assertGreater(float(jnp.abs(g).max()), 0.0, f"no gradient for {path}")
    if slot_init == "fixed_random":
      self.assertNotIn("slots_mu", variables["params"])


class MeshObjectiveTest(parameterized.TestCase):

  @parameterized.parameters("similarity", "learned")
  def test_parametric_objectives_train_their_parameters(self, objective):
    module = _module(attention="mesh", mesh_objective=objective, learn_mesh_lr=True)
    x = _inputs()
    variables = _init(module, x)
    grads = jax.grad(lambda p: jnp.sum(_run(module, {"params": p}, x)[0] ** 2))(
        variables["params"])
    key = "mesh_similarity" if objective == "similarity" else "mesh_objective_mlp"
    total = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[key]))
    self.assertGreater(total, 0.0)
    self.assertGreater(abs(float(grads["mesh_lr"])), 0.0)

  def test_per_entry_step_is_the_total_step_times_sqrt_nk(self):
    x = _inputs()
    per_entry = _module(attention="mesh", mesh_lr=0.05, mesh_lr_per_entry=True)
    total = _module(attention="mesh", mesh_lr=0.05 * math.sqrt(N * K))
    variables = _init(per_entry, x)
    np.testing.assert_allclose(_run(per_entry, variables, x)[0], _run(total, variables, x)[0],
                               rtol=1e-5, atol=1e-6)
    unscaled = _module(attention="mesh", mesh_lr=0.05)
    self.assertGreater(float(jnp.max(jnp.abs(_run(per_entry, variables, x)[0]
                                             - _run(unscaled, variables, x)[0]))), 1e-4)

  def test_entropy_objective_straight_through_by_default(self):
    with_steps = _module(attention="mesh", mesh_differentiate_steps=True)
    default = _module(attention="mesh")
    x = _inputs()
    variables = _init(default, x)
    g = lambda m: jax.grad(lambda p: jnp.sum(_run(m, {"params": p}, x)[0] ** 2))(
        variables["params"])
    ga, gb = g(default), g(with_steps)
    diff = max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(ga),
                                                           jax.tree.leaves(gb)))
    self.assertGreater(diff, 1e-6)


class EquivarianceTest(parameterized.TestCase):

  @parameterized.parameters(*attention_lib.ATTENTIONS)
  def test_input_permutation_leaves_slots_unchanged(self, attention):
    module = _module(attention=attention)
    x = _inputs()
    perm = np.random.default_rng(0).permutation(N)
    variables = _init(module, x)
    init = jax.random.normal(jax.random.PRNGKey(5), (B, K, D))
    if attention == "mesh":
      # Same noise for the same (input, slot) pair: zero noise makes that trivially so.
      module = _module(attention=attention, mesh_noise_scale=0.0)
    out, _ = _run(module, variables, x, initial_slots=init)
    out_p, _ = _run(module, variables, x[:, perm], initial_slots=init)
    np.testing.assert_allclose(out_p, out, atol=2e-5)

  @parameterized.parameters("softmax", "sinkhorn")
  def test_slot_permutation_permutes_output(self, attention):
    module = _module(attention=attention)
    x = _inputs()
    variables = _init(module, x)
    init = jax.random.normal(jax.random.PRNGKey(5), (B, K, D))
    perm = np.array([2, 0, 1])
    out, _ = _run(module, variables, x, initial_slots=init)
    out_p, _ = _run(module, variables, x, initial_slots=init[:, perm])
    np.testing.assert_allclose(out_p, out[:, perm], atol=2e-5)

  @parameterized.parameters(("softmax", False), ("sinkhorn", False), ("mesh", True),
                            ("emd", True))
  def test_identical_initial_slots(self, attention, separates):
    """001 §4.1: only MESH and EMD can break the tie between identical slots."""
    module = _module(attention=attention, slot_init="identical", mesh_steps=4,
                     sinkhorn_iters=5)
    x = _inputs()
    variables = _init(module, x)
    out, _ = _run(module, variables, x)
    spread = float(jnp.max(jnp.abs(out[:, 0] - out[:, 1])))
    if separates:
      self.assertGreater(spread, 1e-2)
    else:
      self.assertLess(spread, 1e-5)


class NormalisationTest(absltest.TestCase):

  def test_batch_norm_batch_statistics_in_training_running_in_eval(self):
    module = _module(attention="softmax", update_norm="batch_norm")
    x = _inputs()
    variables = _init(module, x)
    stats0 = variables["batch_stats"]["batch_norm"]
    np.testing.assert_allclose(stats0["mean"], 0.0)
    np.testing.assert_allclose(stats0["var"], 1.0)
    _, state = _run(module, variables, x, train=True)
    stats1 = state["batch_stats"]["batch_norm"]
    self.assertNotAlmostEqual(float(stats1["mean"]), 0.0, places=6)
    # Evaluation: output depends on the running averages, not on the batch.
    eval_a, _ = _run(module, variables, x, train=False)
    eval_b, _ = _run(module, {**variables, "batch_stats": state["batch_stats"]}, x, train=False)
    self.assertGreater(float(jnp.abs(eval_a - eval_b).max()), 1e-6)
    # In evaluation an example's slots do not depend on the rest of the batch; in
    # training they do, through the batch statistics.
    init = jax.random.normal(jax.random.PRNGKey(5), (B, K, D))
    for train, same in ((False, True), (True, False)):
      single, _ = _run(module, variables, x[:1], train=train, initial_slots=init[:1])
      full, _ = _run(module, variables, x, train=train, initial_slots=init)
      self.assertEqual(bool(np.allclose(single[0], full[0], atol=1e-5)), same, train)

  def test_batch_norm_normalises_with_first_iteration_statistics(self):
    """With alpha=1, beta=0 the first iteration's updates have mean 0 and variance 1."""
    bn = attention_lib.ScalarBatchNorm()
    u = jax.random.normal(jax.random.PRNGKey(0), (B, K, D)) * 3 + 2
    bn_vars = bn.init(jax.random.PRNGKey(0), u, (jnp.zeros(()), jnp.ones(())))

    def normed(u):
      stats = bn.apply(bn_vars, u, True, method=bn.stats, mutable=["batch_stats"])[0]
      return bn.apply(bn_vars, u, stats)
    out = normed(u)
    self.assertAlmostEqual(float(out.mean()), 0.0, places=5)
    self.assertAlmostEqual(float(out.var(ddof=1)), 1.0, places=3)

  def test_weighted_sum_obeys_bound_of_eq_13(self):
    """|u_kd| <= max_n |v_nd| for the 1/N-scaled weighted sum (Krimmel et al., eq. 13)."""
    for attention in ("softmax", "sinkhorn"):
      module = _module(attention=attention, update_norm="weighted_sum", num_iters=1,
                       marginals="uniform", marginal_scale=float(K))
      x = _inputs() * 10
      variables = _init(module, x)
      _, state = _run(module, variables, x)
      attn = state["intermediates"]["attn"][0]
      p = variables["params"]
      xn = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)
      xn = xn * p["norm_inputs"]["scale"] + p["norm_inputs"]["bias"]
      v = xn @ p["project_v"]["kernel"]
      u = jnp.einsum("bnk,bnd->bkd", attn, v) / N
      bound = jnp.max(jnp.abs(v), axis=1)[:, None, :]
      self.assertTrue(bool(jnp.all(jnp.abs(u) <= bound + 1e-6)))
      # Rows of the softmax attention sum to 1, and of the uniform plan to K/N * ... <= 1.
      self.assertLessEqual(float(attn.sum(-1).max()), 1.0 + 1e-5)

  def test_weighted_mean_of_an_ot_plan_divides_by_the_slot_marginal(self):
    x = _inputs()
    init = jax.random.normal(jax.random.PRNGKey(5), (B, K, D))
    outs = {}
    for norm in ("sum", "weighted_mean"):
      module = _module(attention="sinkhorn", update_norm=norm, num_iters=1)
      variables = _init(module, x)
      outs[norm] = _run(module, variables, x, initial_slots=init)[1]["intermediates"]
    b = outs["sum"]["b"][0]
    attn = outs["sum"]["attn"][0]
    np.testing.assert_allclose(attn.sum(1), b, atol=1e-5)  # columns of the plan sum to b


class DetachSlotsTest(absltest.TestCase):

  def test_gradient_only_through_last_iteration(self):
    """detach_slots=True equals running T-1 iterations without gradient, then one with."""
    x = _inputs()
    init = jax.random.normal(jax.random.PRNGKey(5), (B, K, D))
    full = _module(attention="sinkhorn", num_iters=3, detach_slots=True)
    one = _module(attention="sinkhorn", num_iters=1)
    two = _module(attention="sinkhorn", num_iters=2)
    variables = _init(full, x)
    params = variables["params"]

    def manual(p):
      s = jax.lax.stop_gradient(_run(two, {"params": p}, x, initial_slots=init)[0])
      return _run(one, {"params": p}, x, initial_slots=s)[0]

    def detached(p):
      return _run(full, {"params": p}, x, initial_slots=init)[0]

    np.testing.assert_allclose(detached(params), manual(params), atol=1e-5)
    loss = lambda f: (lambda p: jnp.sum(jnp.sin(f(p))))
    g_manual, g_detached = jax.grad(loss(manual))(params), jax.grad(loss(detached))(params)
    for a, b in zip(jax.tree.leaves(g_detached), jax.tree.leaves(g_manual)):
      np.testing.assert_allclose(a, b, atol=1e-5)
    # Without detaching, the gradient differs.
    plain = _module(attention="sinkhorn", num_iters=3)
    g_plain = jax.grad(loss(lambda p: _run(plain, {"params": p}, x, initial_slots=init)[0]))(
        params)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g_plain),
                                                           jax.tree.leaves(g_detached)))
    self.assertGreater(diff, 1e-5)


class SlotCountTest(absltest.TestCase):

  def test_more_slots_at_evaluation_with_shared_init(self):
    module = _module(attention="mesh")
    x = _inputs()
    variables = _init(module, x)
    out, state = _run(module, variables, x, train=False, num_slots=5)
    self.assertEqual(out.shape, (B, 5, D))
    self.assertEqual(state["intermediates"]["attn"][-1].shape, (B, N, 5))

  def test_per_slot_init_rejects_a_different_count(self):
    module = _module(slot_init="per_slot")
    x = _inputs()
    variables = _init(module, x)
    with self.assertRaisesRegex(ValueError, "per_slot.*fixed at 3"):
      _run(module, variables, x, num_slots=5)

  def test_eval_iterations(self):
    module = _module(num_iters=3, num_iters_eval=5)
    x = _inputs()
    variables = _init(module, x)
    self.assertLen(_run(module, variables, x, train=False)[1]["intermediates"]["attn"], 5)
    self.assertLen(_run(module, variables, x, train=True)[1]["intermediates"]["attn"], 3)

  def test_norm_inputs(self):
    # With the input LayerNorm the slots do not see the inputs' scale (up to its epsilon);
    # without it they do, and the module has no norm_inputs parameters.
    x = _inputs()
    for norm, same in ((True, True), (False, False)):
      module = _module(attention="sinkhorn", norm_inputs=norm)
      variables = _init(module, x)
      self.assertEqual("norm_inputs" in variables["params"], norm)
      scaled = _run(module, variables, 10.0 * x)[0]
      self.assertEqual(bool(np.allclose(scaled, _run(module, variables, x)[0], atol=1e-4)),
                       same)

  def test_unknown_value_lists_valid_ones(self):
    with self.assertRaisesRegex(ValueError, "valid values.*softmax.*mesh"):
      _module(attention="meshy").init(_rngs(0), _inputs(), train=True)
    with self.assertRaisesRegex(ValueError, "valid costs"):
      _module(attention="sinkhorn", cost="l1").init(_rngs(0), _inputs(), train=True)


class SlotMLPTest(absltest.TestCase):

  def test_shapes(self):
    feats = jnp.ones((2, 32, 32, 4))
    for variant, size in (("set_prediction", D), ("object_discovery", 64)):
      m = SlotMLP(num_slots=K, slot_size=D, variant=variant)
      out = jax.eval_shape(lambda m=m: m.init_with_output(jax.random.PRNGKey(0), feats)[0])
      self.assertEqual(out.shape, (2, K, size))


if __name__ == "__main__":
  absltest.main()

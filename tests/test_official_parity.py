"""Parity with the official MESH code (github davzha/MESH, commit c7e8320), without PyTorch.

tests/data/official_mesh_outputs.npz holds the official `SlotAttentionVariant` (SA, SA-SH,
SA-MESH with a fixed and a learned step) and `SlotAttentionObjectDiscovery` (SA, SA-MESH) at
tiny sizes: their weights, the forward's two `torch.randn` draws, inputs, per-iteration
records and the gradients of a weighted-sum loss (tests/data/README.md). Each test loads the
weights into our modules through `slot_ot_jax.modules.official_mesh`, injects the recorded
noise, and compares everything recorded: slots after every iteration, costs, marginals,
attention / transport plans, GRU inputs, final slots, the autoencoder's encoder output,
colours, masks and reconstruction, and the gradients w.r.t. the inputs and every official
parameter (our gradients mapped to the official layout by the converter's adjoint).

Error measure: scaled error = max |ours - official| / max |official| per array. For
gradients the denominator is at least 1e-3 x the case's largest gradient entry, so that an
array whose exact gradient is zero (softmax attention is invariant to a shift of all slot
logits, so d loss / d norm_slots.bias = 0; PyTorch records round-off of about 2e-8) is judged
against the case's gradient scale instead of its own round-off.

Tolerances (forward, gradients) and why, with the largest errors observed on CPU:
  * SA and SA-SH: 1e-5, 2e-5. float32 has a unit round-off of 6e-8; both implementations
    compute the same formulas with different summation orders and fusions (and our Sinkhorn
    runs its half-steps in the scaling domain, with an analytic backward pass), so agreement
    to a few dozen round-offs is what float32 allows. Observed: forward 5e-7, inputs'
    gradient 7e-7, parameter gradients 1.9e-6 (norm_slots.bias against the floor; 8e-7
    elsewhere).
  * SA-MESH: 1e-4, 2e-4. Each of the 4 MESH steps moves the whole cost by lr = 8 along the
    normalised entropy gradient, and the plan is exp(-cost / T): round-off in the step
    direction comes out at about 1e-5 in costs and plans and up to 2e-5 in the gradients of
    the projections (our two MESH gradient paths, custom VJP and autodiff, differ from each
    other by as much). Observed: forward 8.8e-6, gradients 1.7e-5. Real deviations are far
    larger: a MESH noise scale of 2e-3 instead of 1e-3 gives 6e-3 in the plans and 3e-2 in
    the gradients; a cold-started final Sinkhorn (no reuse_u_v) 0.3 and 0.8.
  * Autoencoder: SA 1e-5, 5e-5; SA-MESH 5e-4, 1e-4. The gradients w.r.t. the images are
    small (about 1.5e-5) sums of many cancelling terms through four 5x5 convolutions, and
    MESH on 64 inputs moves plan entries by up to 1e-4 of the largest one. Observed: SA
    forward 4e-7, gradients 7.1e-6; SA-MESH forward 1.0e-4 (first plan), gradients 1.0e-5.

The recorded noise goes in through the module's own draws: `jax.random.normal` is replaced,
while the model is traced, by a function that returns the recorded arrays for the two noise
shapes ([B, K, D] slots, [B, N, K] MESH). The first input scale compiles one program per case
(forward, intermediates and gradients together); the second scale reuses it.

The last test converts the recorded autoencoder weights with
scripts/convert_official_checkpoint.py (through its .npz path) into a workdir and restores
the checkpoint the way `main.py --config.mode=eval` does.
"""
import contextlib
import importlib.util
import json
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax.modules import official_mesh

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "official_mesh_outputs.npz"

# (forward, gradients) tolerances of the scaled error; see the module docstring.
TOLERANCES = {
    "sa_softmax": (1e-5, 2e-5), "sa_sinkhorn": (1e-5, 2e-5),
    "sa_mesh": (1e-4, 2e-4), "sa_mesh_learned_lr": (1e-4, 2e-4),
    "ae_softmax": (1e-5, 5e-5), "ae_mesh": (5e-4, 1e-4),
}
GRAD_FLOOR = 1e-3  # x the case's largest gradient entry, see the module docstring.

_NPZ = None


def _record(case: str) -> dict:
  """The arrays of `case` ("sa_mesh", ...), keys without the "case/" prefix."""
  global _NPZ
  if _NPZ is None:
    with np.load(DATA) as z:
      _NPZ = {k: z[k] for k in z.files}
  prefix = case + "/"
  return {k[len(prefix):]: v for k, v in _NPZ.items() if k.startswith(prefix)}


def _sub(record: dict, prefix: str) -> dict:
  return {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}


@contextlib.contextmanager
def _recorded_noise(slot_noise, mesh_noise):
  """`jax.random.normal` returns the recorded draws for their shapes while active."""
  real = jax.random.normal
  table = {tuple(slot_noise.shape): slot_noise}
  if mesh_noise is not None:
    table[tuple(mesh_noise.shape)] = mesh_noise
  if len(table) != (1 if mesh_noise is None else 2):
    raise ValueError("the two noise shapes coincide; cannot tell the draws apart")

  def normal(key, shape=(), dtype=jnp.float32, *args, **kwargs):
    if tuple(shape) in table:
      return jnp.asarray(table[tuple(shape)], dtype)
    return real(key, shape, dtype, *args, **kwargs)

  with mock.patch.object(jax.random, "normal", normal):
    yield


def _scaled_error(ours, official, floor=0.0) -> float:
  ours = np.asarray(ours, np.float64)
  official = np.asarray(official, np.float64)
  if ours.shape != official.shape:
    raise AssertionError(f"shape {ours.shape} != official {official.shape}")
  scale = max(np.abs(official).max(initial=0.0), floor, 1e-30)
  return float(np.abs(ours - official).max(initial=0.0) / scale)


def _dummy_rngs():
  key = jax.random.PRNGKey(0)  # Unused: the draws are the recorded ones.
  return {"slots": key, "mesh": key}


class _ParityTest(parameterized.TestCase):

  def check_all(self, errors: dict, tol: float, what: str):
    worst = max(errors, key=errors.get)
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= tol}
    self.assertEmpty(bad, f"{what}: scaled errors above {tol:g}: {bad}")
    return worst, errors[worst]

  def check_gradients(self, ours: dict, record: dict, grad_prefix: str, tol: float):
    official = _sub(record, grad_prefix)
    self.assertEqual(set(ours), set(official), "gradient names differ")
    floor = GRAD_FLOOR * max(np.abs(g).max() for g in official.values())
    errors = {k: _scaled_error(ours[k], official[k], floor) for k in official}
    return self.check_all(errors, tol, "gradients")


class SlotAttentionParityTest(_ParityTest):
  """The bare SlotAttentionVariant: B=2, N=16 inputs of 12, K=4 slots of 16, 3 iterations."""

  @parameterized.named_parameters(
      (c, c) for c in ("sa_softmax", "sa_sinkhorn", "sa_mesh", "sa_mesh_learned_lr"))
  def test_matches_official(self, case):
    record = _record(case)
    kwargs = json.loads(str(record["kwargs"]))
    softmax = kwargs["attention_type"] == "original_slot_attention"
    model = official_mesh.build_slot_attention(kwargs)
    self.assertEqual(model.framework_defaults, "torch")  # LayerNorm eps 1e-5
    params = official_mesh.slot_attention_params(_sub(record, "param/"))
    mesh_noise = record.get("mesh_noise")

    def run(params, inputs, slot_noise, mesh_noise, loss_weight):
      def loss_fn(params, inputs):
        with _recorded_noise(slot_noise, mesh_noise):
          slots, state = model.apply({"params": params}, inputs, rngs=_dummy_rngs(),
                                     capture_intermediates=True, mutable=["intermediates"])
        return jnp.sum(slots * loss_weight), (slots, state["intermediates"])
      (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
          params, inputs)
      return loss, aux, grads

    run = jax.jit(run)
    tol_fwd, tol_grad = TOLERANCES[case]
    scales = [s for s in ("x1", "x0.01") if f"{s}/inputs" in record]
    self.assertNotEmpty(scales)
    for scale in scales:
      with self.subTest(scale=scale):
        rec = _sub(record, scale + "/")
        loss, (slots, inter), (grads, grad_inputs) = run(
            params, rec["inputs"], record["slot_noise"], mesh_noise, record["loss_weight"])
        b, k, d = slots.shape
        values = inter["project_v"]["__call__"][0]                      # [B, N, D]
        slots0 = params["slots_mu"] + np.exp(params["slots_log_sigma"]) * record["slot_noise"]
        errors = {"loss": _scaled_error(loss, rec["loss"]),
                  "slots": _scaled_error(slots, rec["slots"]),
                  "slots_0": _scaled_error(slots0, rec["slots_per_iter"][0])}
        if not softmax:
          errors["a"] = _scaled_error(inter["a"][0], rec["a"])
        for t in range(kwargs["n_sa_iters"]):
          attn, cost = inter["attn"][t], inter["cost"][t]
          if softmax:  # Ours sows softmax + eps and the cost -logits; the update normalises.
            attn = attn / jnp.sum(attn, axis=1, keepdims=True)
            cost = -cost
          else:
            errors[f"b_{t + 1}"] = _scaled_error(inter["b"][t], rec["b_per_iter"][t])
          updates = jnp.einsum("bnk,bnd->bkd", attn, values)
          after = (inter["gru"]["__call__"][t][0].reshape(b, k, d)
                   + inter["mlp"]["__call__"][t])                          # slots + mlp(...)
          errors[f"cost_{t + 1}"] = _scaled_error(cost, rec["cost_per_iter"][t])
          errors[f"attn_{t + 1}"] = _scaled_error(attn, rec["attn_per_iter"][t])
          errors[f"updates_{t + 1}"] = _scaled_error(updates, rec["updates_per_iter"][t])
          errors[f"slots_{t + 1}"] = _scaled_error(after, rec["slots_per_iter"][t + 1])
        if mesh_noise is not None:  # The MESH-updated costs, from the recorded cost and marginals.
          errors.update(self._mesh_costs(model, rec, mesh_noise, params))
        self.check_all(errors, tol_fwd, f"{case} {scale} forward")
        errors_in = {"inputs": _scaled_error(grad_inputs, rec["grad_inputs"])}
        self.check_all(errors_in, tol_grad, f"{case} {scale} d loss / d inputs")
        ours = official_mesh.slot_attention_state_dict(grads, gradients=True)
        self.check_gradients(ours, rec, "grad/", tol_grad)

  def _mesh_costs(self, model, rec, mesh_noise, params):
    """transport.mesh on the official cost and marginals of each iteration vs. the official
    MESH-updated cost (the module itself does not expose it)."""
    from slot_ot_jax import transport  # pylint: disable=g-import-not-at-top
    lr = float(params["mesh_lr"]) if model.learn_mesh_lr else model.mesh_lr
    errors = {}
    for t in range(rec["cost_per_iter"].shape[0]):
      cost, _ = transport.mesh(
          rec["cost_per_iter"][t], rec["a"], rec["b_per_iter"][t], mesh_noise,
          num_steps=model.mesh_steps, lr=lr, noise_scale=model.mesh_noise_scale,
          sinkhorn_iters=model.sinkhorn_iters, temperature=model.mesh_temperature,
          reuse_potentials=model.mesh_reuse_potentials)
      errors[f"mesh_cost_{t + 1}"] = _scaled_error(cost, rec["mesh_cost_per_iter"][t])
    return errors


class ObjectDiscoveryParityTest(_ParityTest):
  """SlotAttentionObjectDiscovery at 8x8, 4 CNN channels, K=4 slots of 8 (NCHW in the record)."""

  @parameterized.named_parameters((c, c) for c in ("ae_softmax", "ae_mesh"))
  def test_matches_official(self, case):
    record = _record(case)
    kwargs = json.loads(str(record["kwargs"]))
    softmax = kwargs["slot_attention"]["attention_type"] == "original_slot_attention"
    model = official_mesh.build_object_discovery(kwargs)
    state_dict = {**_sub(record, "param/"), **_sub(record, "buffer/")}
    params = official_mesh.object_discovery_params(state_dict)
    images = official_mesh.images_from_official(record["images"])        # NHWC
    loss_weight = official_mesh.images_from_official(record["loss_weight"])

    def loss_fn(params, images):
      with _recorded_noise(record["slot_noise"], record.get("mesh_noise")):
        out, state = model.apply({"params": params}, images, train=False, rngs=_dummy_rngs(),
                                 capture_intermediates=True, mutable=["intermediates"])
      return jnp.sum(out["reconstruction"] * loss_weight), (out, state["intermediates"])

    run = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
    (loss, (out, inter)), (grads, grad_images) = run(params, images)
    tol_fwd, tol_grad = TOLERANCES[case]
    to_nchw = official_mesh.images_to_official
    errors = {
        "loss": _scaled_error(loss, record["loss"]),
        "mse": _scaled_error(jnp.mean(jnp.square(out["reconstruction"] - images)),
                             record["mse"]),
        "encoder_out": _scaled_error(inter["encoder"]["__call__"][0], record["encoder_out"]),
        "slots": _scaled_error(out["slots"], record["slots"]),
        "reconstruction": _scaled_error(to_nchw(out["reconstruction"]), record["reconstruction"]),
        "rgb": _scaled_error(to_nchw(out["rgb"]), record["rgb"]),
        "masks": _scaled_error(to_nchw(out["masks"]), record["masks"]),
    }
    sa = inter["slot_attention"]
    b, k, d = out["slots"].shape
    for t in range(kwargs["slot_attention"]["n_sa_iters"]):
      attn = sa["attn"][t]
      if softmax:
        attn = attn / jnp.sum(attn, axis=1, keepdims=True)
      else:
        errors[f"b_{t + 1}"] = _scaled_error(sa["b"][t], record["b_per_iter"][t])
      after = sa["gru"]["__call__"][t][0].reshape(b, k, d) + sa["mlp"]["__call__"][t]
      errors[f"attn_{t + 1}"] = _scaled_error(attn, record["attn_per_iter"][t])
      errors[f"slots_{t + 1}"] = _scaled_error(after, record["slots_per_iter"][t + 1])
    self.check_all(errors, tol_fwd, f"{case} forward")
    self.check_all({"images": _scaled_error(to_nchw(grad_images), record["grad_images"])},
                   tol_grad, f"{case} d loss / d images")
    ours = official_mesh.object_discovery_state_dict(grads, gradients=True)
    self.check_gradients(ours, record, "grad/", tol_grad)


class ConverterTest(parameterized.TestCase):

  def test_round_trip_and_errors(self):
    record = _record("ae_mesh")
    state_dict = _sub(record, "param/")
    params = official_mesh.object_discovery_params(state_dict)
    back = official_mesh.object_discovery_state_dict(params)
    self.assertEqual(set(back), set(state_dict))
    for name, value in state_dict.items():
      if name.endswith(("gru.bias_ih", "gru.bias_hh")):
        continue  # The r, z biases are summed in Flax: only their sums are kept.
      np.testing.assert_array_equal(back[name], value, err_msg=name)
    total = back["slot_attention.gru.bias_ih"] + back["slot_attention.gru.bias_hh"]
    np.testing.assert_allclose(
        total, state_dict["slot_attention.gru.bias_ih"] + state_dict["slot_attention.gru.bias_hh"],
        rtol=1e-6, atol=1e-7)
    self.assertEqual(official_mesh.find_prefix(
        {f"net.{k}": v for k, v in state_dict.items()}), "net.")
    with self.assertRaisesRegex(ValueError, "unexpected entries.*encoder.99.weight"):
      official_mesh.object_discovery_params({**state_dict, "encoder.99.weight": np.zeros(1)})
    missing = dict(state_dict)
    del missing["slot_attention.gru.weight_hh"]
    with self.assertRaisesRegex(ValueError, "missing entries.*gru.weight_hh"):
      official_mesh.object_discovery_params(missing)

  def test_unsupported_options_are_listed(self):
    kwargs = json.loads(str(_record("sa_mesh")["kwargs"]))
    kwargs.update(init_slot_method="fixed_random", attention_type="emd",
                  mesh_args={"n_sh_iters": 3, "n_mesh_iters": 4, "reuse_u_v": True})
    with self.assertRaisesRegex(official_mesh.UnsupportedOfficialOption,
                                "attention_type='emd'(.|\n)*fixed_random"):
      official_mesh.slot_attention_fields(kwargs)
    kwargs = json.loads(str(_record("sa_mesh")["kwargs"]))
    kwargs["mesh_args"] = {"n_sh_iters": 3, "n_mesh_iters": 4, "reuse_u_v": True}
    with self.assertRaisesRegex(official_mesh.UnsupportedOfficialOption, "n_sh_iters=3"):
      official_mesh.slot_attention_fields(kwargs)

  @parameterized.parameters(("original_slot_attention", "l2", -2.0),
                            ("original_slot_attention", "dot_prod", 2.0),
                            ("sinkhorn", "dot_prod", -2.0), ("sinkhorn", "cosine", 2.0))
  def test_cost_sign_convention(self, attention_type, distance, cost_scale):
    kwargs = json.loads(str(_record("sa_sinkhorn")["kwargs"]))
    kwargs.update(attention_type=attention_type, pairwise_distance=distance, scale_cost=2.0)
    self.assertEqual(official_mesh.slot_attention_fields(kwargs)["cost_scale"], cost_scale)


def _load_script():
  path = REPO / "scripts" / "convert_official_checkpoint.py"
  spec = importlib.util.spec_from_file_location("convert_official_checkpoint", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConvertCheckpointScriptTest(absltest.TestCase):

  def test_npz_to_workdir_restores_the_official_weights(self):
    from configs import shapes  # pylint: disable=g-import-not-at-top
    from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top
    script = _load_script()
    record = _record("ae_softmax")
    kwargs = json.loads(str(record["kwargs"]))
    config = script.apply_official_overrides(shapes.get_config("attention=softmax"), kwargs)
    expected = official_mesh.object_discovery_params(_sub(record, "param/"))
    with tempfile.TemporaryDirectory() as tmp:
      workdir = pathlib.Path(tmp) / "workdir"
      state_dict = script.load_state_dict(str(DATA))
      # The whole record holds several models: the prefix must be given.
      with self.assertRaisesRegex(ValueError, "several official models"):
        official_mesh.find_prefix(state_dict)
      step = script.convert(config, state_dict, str(workdir), prefix="ae_softmax/param/",
                            official_kwargs=kwargs)
      self.assertEqual(step, 0)
      self.assertTrue((workdir / checkpointing.CONFIG_FILE).exists())
      # Restore as `train.evaluate_checkpoint` does.
      task = tasks.get_task(config)
      trainer = train.Trainer(config, task, jax.devices()[:1])
      checkpointer = checkpointing.Checkpointer(workdir, config)
      try:
        found = checkpointer.restore_latest(trainer.abstract_state_dict())
      finally:
        checkpointer.close()
      self.assertIsNotNone(found)
      self.assertEqual(found[0], 0)
      restored = found[1]["params"]
      flat_restored = dict(jax.tree_util.tree_flatten_with_path(restored)[0])
      flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
      self.assertEqual(set(flat_restored), set(flat_expected))
      for path, value in flat_expected.items():
        np.testing.assert_array_equal(np.asarray(flat_restored[path]), value,
                                      err_msg=jax.tree_util.keystr(path))
      # A second conversion into the same workdir is refused.
      with self.assertRaisesRegex(FileExistsError, "already holds checkpoints"):
        script.convert(config, state_dict, str(workdir), prefix="ae_softmax/param/")

  def test_config_mismatch_is_an_error(self):
    from configs import shapes  # pylint: disable=g-import-not-at-top
    script = _load_script()
    softmax_kwargs = json.loads(str(_record("ae_softmax")["kwargs"]))
    mesh_kwargs = json.loads(str(_record("ae_mesh")["kwargs"]))
    config = script.apply_official_overrides(shapes.get_config("attention=softmax"),
                                             softmax_kwargs)
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(ValueError, "attention: 'softmax' in the config, 'mesh'"):
        script.convert(config, script.load_state_dict(str(DATA)), tmp,
                       prefix="ae_mesh/param/", official_kwargs=mesh_kwargs)
      # Without the kwargs, the parameter shapes still catch it (no marginal networks).
      with self.assertRaisesRegex(ValueError, "do not fit the config's model"):
        script.convert(config, script.load_state_dict(str(DATA)), tmp,
                       prefix="ae_mesh/param/")


if __name__ == "__main__":
  absltest.main()

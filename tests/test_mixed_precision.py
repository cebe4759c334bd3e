"""Mixed precision of the object-discovery model (`config.model.compute_dtype="bfloat16"`).

The encoder, decoder, position embeddings and the slot attention's layers outside the OT
core compute in bfloat16, while every input of the OT core (cost, marginals, MESH noise) is
float32: the transport functions are wrapped to record the dtypes they are traced with
(abstract evaluation only, no compilation), the sown intermediates are checked, and the
jaxpr must contain bfloat16 convolutions and matrix products. One real training step in
bfloat16 mode gives a finite float32 loss and float32 parameters.
"""
import os
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import object_discovery as od_config  # pylint: disable=g-import-not-at-top
from slot_ot_jax import tasks
from slot_ot_jax import transport
from slot_ot_jax.training import train
from slot_ot_jax.transport import mesh_ot


def _config(attention, dtype="bfloat16"):
  config = od_config.build("shapes", "runlocal=1")
  config.model.slot_attention.attention = attention  # SA-EMD is not an image config.
  config.model.compute_dtype = dtype
  config.data.resolution = 16
  config.batch_size = config.eval_batch_size = 2
  return config


def _trace(config):
  """(model, abstract variables, abstract sown intermediates, jaxpr) of a training forward."""
  task = tasks.get_task(config)
  model = task.build_model()
  key = jax.random.PRNGKey(0)
  rngs = {name: key for name in ("params", *task.rng_streams)}
  variables = jax.eval_shape(lambda: task.init_variables(model, rngs))
  variables = {k: v for k, v in variables.items() if k != "intermediates"}
  image = task.dummy_batch(2)["image"]

  def forward(v):
    return model.apply(v, image, train=True, rngs=rngs, mutable=["intermediates"])
  (outputs, state) = jax.eval_shape(forward, variables)
  return outputs, variables, state["intermediates"], jax.make_jaxpr(forward)(variables)


def _dtypes_of(jaxpr, primitive):
  """Dtypes of the first operand of every `primitive` equation, sub-jaxprs included."""
  found = [eqn.invars[0].aval.dtype for eqn in jaxpr.eqns if eqn.primitive.name == primitive]
  for sub in jax.extend.core.subjaxprs(jaxpr):
    found += _dtypes_of(sub, primitive)
  return found


class MixedPrecisionTest(parameterized.TestCase):

  @parameterized.parameters("sinkhorn", "mesh", "emd")
  def test_ot_core_inputs_are_float32(self, attention):
    recorded = []

    def recording(fn, name):
      def wrapped(*args, **kwargs):
        recorded.append((name, [x.dtype for x in args if hasattr(x, "dtype")]))
        return fn(*args, **kwargs)
      return wrapped
    # The modules SlotAttention calls them from (MESH lives in mesh_ot).
    modules = {"sinkhorn": transport, "mesh": mesh_ot, "emd_sinkhorn": transport}
    originals = {name: getattr(module, name) for name, module in modules.items()}
    try:
      for name, module in modules.items():
        setattr(module, name, recording(originals[name], name))
      outputs, variables, sown, jaxpr = _trace(_config(attention))
    finally:
      for name, fn in originals.items():
        setattr(modules[name], name, fn)

    called = {name for name, _ in recorded}
    self.assertIn({"sinkhorn": "sinkhorn", "mesh": "mesh", "emd": "emd_sinkhorn"}[attention],
                  called)
    for name, dtypes in recorded:
      self.assertGreaterEqual(len(dtypes), 3, name)  # cost, a, b (+ MESH noise).
      self.assertEqual(set(dtypes), {jnp.dtype(jnp.float32)}, name)
    sa = sown["slot_attention"]
    for key in ("cost", "a", "b", "attn"):
      self.assertEqual({x.dtype for x in sa[key]}, {jnp.dtype(jnp.float32)}, key)
    # The backbone does compute in bfloat16: the encoder's convolutions, the decoder's
    # transposed convolutions and the Dense layers.
    convs = _dtypes_of(jaxpr.jaxpr, "conv_general_dilated")
    self.assertGreaterEqual(len(convs), 8)
    self.assertEqual(set(convs), {jnp.dtype(jnp.bfloat16)})
    self.assertIn(jnp.dtype(jnp.bfloat16), _dtypes_of(jaxpr.jaxpr, "dot_general"))
    # Parameters and the composited output stay float32.
    self.assertEqual({x.dtype for x in jax.tree.leaves(variables["params"])},
                     {jnp.dtype(jnp.float32)})
    self.assertEqual(outputs["reconstruction"].dtype, jnp.float32)

  def test_float32_mode_has_no_bfloat16(self):
    *_, jaxpr = _trace(_config("mesh", dtype="float32"))
    self.assertNotIn("bf16", str(jaxpr))

  def test_unknown_dtype_lists_valid_ones(self):
    config = _config("sinkhorn", dtype="float16")
    with self.assertRaisesRegex(ValueError, "float32, bfloat16"):
      tasks.get_task(config).build_model()

  def test_bfloat16_train_step(self):
    config = _config("sinkhorn")
    task = tasks.get_task(config)
    trainer = train.Trainer(config, task, jax.devices()[:1])
    state = trainer.create_state()
    image = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    new_state, metrics, finite = trainer.train_step(state, trainer.global_batch({"image": image}))
    self.assertTrue(bool(finite))
    loss = metrics.compute()["loss"]
    self.assertEqual(loss.dtype, jnp.float32)
    self.assertGreater(float(loss), 0.0)
    self.assertEqual(int(new_state.step), 1)
    self.assertEqual({x.dtype for x in jax.tree.leaves(new_state.params)},
                     {jnp.dtype(jnp.float32)})


if __name__ == "__main__":
  absltest.main()

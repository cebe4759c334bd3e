"""Tests of the encoders, decoders and whole models (slot_ot_jax/modules/models.py)."""
import importlib.util
from typing import Optional

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax.modules import models


class StandInSlotAttention(nn.Module):
  """Follows the SlotAttention call contract: mean-pooled inputs -> Dense -> K noisy slots."""
  num_slots: int
  slot_size: int

  @nn.compact
  def __call__(self, inputs, *, train: bool, initial_slots=None,
               num_slots: Optional[int] = None):
    del train, initial_slots
    k = num_slots or self.num_slots
    batch, n, _ = inputs.shape
    pooled = nn.Dense(self.slot_size)(inputs.mean(axis=1))                 # [B, D]
    noise = jax.random.normal(self.make_rng("slots"), (batch, k, self.slot_size))
    self.sow("intermediates", "attn", jnp.full((batch, n, k), 1.0 / k))
    return pooled[:, None, :] + noise                                       # [B, K, D]


def _autoencoder(dataset, num_slots=4, slot_size=64, attention=None):
  encoder, decoder = models.object_discovery_modules(dataset)
  attention = attention or StandInSlotAttention(num_slots, slot_size)
  return models.ObjectDiscoveryAutoencoder(encoder, decoder, attention)


RNGS = {"params": jax.random.PRNGKey(0), "slots": jax.random.PRNGKey(1),
        "mesh": jax.random.PRNGKey(2)}


def _cheap_init(module, *args, **kwargs):
  """Variables of the right shapes filled by numpy (fan-in scaled normals for params).

  Compiling `module.init` spends most of its time on the random initialisers, which these
  tests do not need; `jax.eval_shape` gives the shapes for free.
  """
  shapes = jax.eval_shape(lambda *a: module.init(RNGS, *a, **kwargs), *args)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    if path[0].key != "params":
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


class PositionEmbeddingTest(absltest.TestCase):

  def test_grid_ramps(self):
    grid = np.asarray(models.build_grid(3, 5))
    self.assertEqual(grid.shape, (3, 5, 4))
    np.testing.assert_allclose(grid[0, 0], [0, 0, 1, 1])
    np.testing.assert_allclose(grid[-1, -1], [1, 1, 0, 0])
    np.testing.assert_allclose(grid[1, :, 0], 0.5)
    np.testing.assert_allclose(grid[:, 1, 1], 0.25)
    np.testing.assert_allclose(grid[..., :2] + grid[..., 2:], 1.0)

  def test_adds_learned_projection(self):
    module = models.SoftPositionEmbedding()
    x = jnp.zeros((2, 3, 5, 6))
    params = jax.jit(module.init)(RNGS, x)
    self.assertEqual(params["params"]["dense"]["kernel"].shape, (4, 6))
    out = jax.jit(module.apply)(params, x)
    self.assertEqual(out.shape, x.shape)
    np.testing.assert_allclose(out[0], out[1])  # the same embedding for every example


class ArchitectureTest(parameterized.TestCase):

  def test_clevr_layers(self):
    model = _autoencoder("clevr")
    image = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(RNGS, x, train=False), image)
    shapes = jax.tree.map(lambda x: x.shape, variables["params"])
    enc, dec = shapes["encoder"], shapes["decoder"]
    self.assertEqual(enc["conv_0"]["kernel"], (5, 5, 3, 64))
    for i in range(1, 4):
      self.assertEqual(enc[f"conv_{i}"]["kernel"], (5, 5, 64, 64))
    self.assertNotIn("conv_4", enc)
    self.assertEqual(enc["mlp_hidden"]["kernel"], (64, 64))
    self.assertEqual(enc["mlp_out"]["kernel"], (64, 64))
    self.assertEqual(dec["position"]["dense"]["kernel"], (4, 64))
    for i in range(5):
      self.assertEqual(dec[f"deconv_{i}"]["kernel"], (5, 5, 64, 64))
    self.assertEqual(dec["deconv_out"]["kernel"], (3, 3, 64, 4))
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, rngs=RNGS), variables, image)
    self.assertEqual(out["reconstruction"].shape, (2, 128, 128, 3))
    self.assertEqual(out["masks"].shape, (2, 4, 128, 128, 1))
    self.assertEqual(out["rgb"].shape, (2, 4, 128, 128, 3))
    self.assertEqual(out["slots"].shape, (2, 4, 64))

  @parameterized.parameters(("clevrtex", 64, 64, 11, 128), ("multi_dsprites", 64, 32, 6, 64))
  def test_full_resolution_shapes(self, dataset, size, width, num_slots, slot_size):
    model = _autoencoder(dataset, num_slots=num_slots, slot_size=slot_size)
    image = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(RNGS, x, train=False), image)
    dec = variables["params"]["decoder"]
    self.assertEqual(dec["deconv_0"]["kernel"].shape, (5, 5, slot_size, width))
    self.assertEqual(dec["deconv_2"]["kernel"].shape, (5, 5, width, width))
    self.assertNotIn("deconv_3", dec)
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, rngs=RNGS), variables, image)
    self.assertEqual(out["masks"].shape, (2, num_slots, size, size, 1))
    self.assertEqual(out["reconstruction"].shape, (2, size, size, 3))

  def test_property_prediction_encoder_strides(self):
    encoder = models.property_prediction_encoder()
    image = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
    features = jax.eval_shape(lambda x: encoder.init_with_output(RNGS, x)[0], image)
    self.assertEqual(features.shape, (2, 32 * 32, 64))

  def test_resolution_mismatch_is_an_error(self):
    model = _autoencoder("clevrtex")
    with self.assertRaisesRegex(ValueError, "does not fit image"):
      jax.eval_shape(lambda x: model.init(RNGS, x, train=False),
                     jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    with self.assertRaisesRegex(ValueError, "unknown dataset"):
      models.object_discovery_modules("clevr10")


class ForwardTest(parameterized.TestCase):

  def test_tetrominoes_forward(self):
    # 35 x 35 is decoded at full resolution (stride-1 decoder), so no size arithmetic.
    model = _autoencoder("tetrominoes", num_slots=4, slot_size=16)
    image = jax.random.uniform(jax.random.PRNGKey(3), (2, 35, 35, 3), minval=-1, maxval=1)
    variables = _cheap_init(model, image, train=False)
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs=RNGS,
                                                  mutable=["intermediates"]))(variables, image)
    self.assertEqual(out["reconstruction"].shape, (2, 35, 35, 3))
    self.assertEqual(out["masks"].shape, (2, 4, 35, 35, 1))
    np.testing.assert_allclose(out["masks"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["reconstruction"],
                               (out["masks"] * out["rgb"]).sum(axis=1), atol=1e-5)
    attn = state["intermediates"]["slot_attention"]["attn"][0]
    self.assertEqual(attn.shape, (2, 35 * 35, 4))
    loss = models.reconstruction_loss(out, image)
    np.testing.assert_allclose(loss, np.mean((np.asarray(out["reconstruction"]) - image) ** 2),
                               rtol=1e-5)
    # More slots at evaluation; the decoder weights are shared, so nothing new is needed.
    more = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, num_slots=6, rngs=RNGS),
                          variables, image)
    self.assertEqual(more["masks"].shape, (2, 6, 35, 35, 1))

  def test_decoder_shares_weights_across_slots(self):
    decoder = models.SpatialBroadcastDecoder(broadcast_resolution=(5, 4), channels=(8, 8),
                                             strides=(1, 1))
    slots = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 6))
    params = _cheap_init(decoder, slots)
    together = jax.jit(decoder.apply)(params, slots)
    self.assertEqual(together.shape, (2, 3, 5, 4, 4))
    alone = jax.jit(decoder.apply)(params, slots[1, 2])
    np.testing.assert_allclose(together[1, 2], alone, atol=1e-5)

  @parameterized.parameters((5, (6, 7), "flax"), (4, (5, 5), "torch"), (3, (4, 6), "keras"))
  def test_folded_first_layer_equals_broadcast_then_convolve(self, kernel, grid, style):
    # Same parameter tree and initial values, same outputs and gradients (float rounding).
    kwargs = dict(broadcast_resolution=grid, channels=(5, 6), strides=(1, 1),
                  kernel_size=kernel, out_channels=3, framework_defaults=style)
    folded = models.SpatialBroadcastDecoder(**kwargs)
    plain = models.SpatialBroadcastDecoder(fold_broadcast=False, **kwargs)
    slots = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 7))
    params = folded.init(jax.random.PRNGKey(0), slots)
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), params,
                                  plain.init(jax.random.PRNGKey(0), slots))
    self.assertTrue(all(jax.tree_util.tree_leaves(same)))
    np.testing.assert_allclose(folded.apply(params, slots), plain.apply(params, slots),
                               atol=2e-6)
    grad = lambda m: jax.grad(lambda p, s: jnp.sum(jnp.sin(m.apply(p, s))), (0, 1))(params,
                                                                                 slots)
    for a, b in zip(jax.tree_util.tree_leaves(grad(folded)),
                    jax.tree_util.tree_leaves(grad(plain))):
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)

  def test_strided_first_layer_is_not_folded(self):
    decoder = models.SpatialBroadcastDecoder(broadcast_resolution=(2, 2), channels=(4,),
                                             strides=(2,))
    slots = jnp.ones((3, 5))
    out = decoder.init_with_output(jax.random.PRNGKey(0), slots)[0]
    ref = decoder.clone(fold_broadcast=False).init_with_output(jax.random.PRNGKey(0), slots)[0]
    np.testing.assert_array_equal(out, ref)

  def test_property_head(self):
    head = models.PropertyPredictionHead()
    slots = jax.random.normal(jax.random.PRNGKey(5), (2, 10, 64))
    params = _cheap_init(head, slots)
    self.assertEqual(params["params"]["hidden"]["kernel"].shape, (64, 64))
    out = jax.jit(head.apply)(params, slots)
    self.assertEqual(out.shape, (2, 10, 19))
    self.assertTrue(np.all((out > 0) & (out < 1)))
    model = models.SetPredictionModel(models.CNNEncoder(channels=(8,), strides=(2,),
                                                        mlp_size=8, out_size=8),
                                      StandInSlotAttention(3, 16), models.PropertyPredictionHead())
    image = jnp.zeros((1, 8, 8, 3))
    out = jax.eval_shape(lambda x: model.init_with_output(RNGS, x, train=False)[0], image)
    self.assertEqual(out["predictions"].shape, (1, 3, 19))


@absltest.skipIf(importlib.util.find_spec("slot_ot_jax.modules.attention") is None,
                 "slot_ot_jax.modules.attention is not available")
class RealSlotAttentionTest(absltest.TestCase):

  def test_forward_with_softmax_slot_attention(self):
    from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
    attention = SlotAttention(num_slots=3, slot_size=16, mlp_size=32, attention="softmax")
    encoder = models.CNNEncoder(channels=(8, 8), strides=(1, 1), mlp_size=8, out_size=8)
    decoder = models.SpatialBroadcastDecoder(broadcast_resolution=(12, 12), channels=(8,),
                                             strides=(1,))
    model = models.ObjectDiscoveryAutoencoder(encoder, decoder, attention)
    image = jax.random.uniform(jax.random.PRNGKey(6), (2, 12, 12, 3))
    variables = _cheap_init(model, image, train=False)
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs=RNGS,
                                                  mutable=["intermediates"]))(variables, image)
    self.assertEqual(out["masks"].shape, (2, 3, 12, 12, 1))
    np.testing.assert_allclose(out["masks"].sum(axis=1), 1.0, atol=1e-5)
    attn = state["intermediates"]["slot_attention"]["attn"]
    self.assertLen(attn, 3)  # one entry per iteration
    self.assertEqual(attn[-1].shape, (2, 144, 3))


if __name__ == "__main__":
  absltest.main()

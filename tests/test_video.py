"""Tests of the two-frame video task: model, transitions, data stream, configs, training runs."""
import json
import math
import os
import sys
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import clevrer as clevrer_config  # pylint: disable=g-import-not-at-top
from configs import shapes_video as shapes_video_config
from slot_ot_jax.data import input_pipeline
from slot_ot_jax.modules import models
from slot_ot_jax.modules import video_model
from slot_ot_jax.modules.attention import SlotAttention
from slot_ot_jax.tasks import video
from slot_ot_jax.training import train

_TMP = tempfile.mkdtemp()  # One TFDS data dir for the module (tiny datasets built once).
_CLEVRER = sys.modules[input_pipeline.builder_class("clevrer").__module__]
_FAKE_DIR = os.path.join(REPO, "datasets", "clevrer", "dummy_data")


def _tiny(config, **slot_attention):
  """Shrinks a video config to a seconds-long run: 2 steps, batch 4, a small model."""
  config.unlock()
  config.data.data_dir = _TMP
  config.model.width, config.model.encoder_stride, config.model.decoder_broadcast = 8, 4, 8
  sa = config.model.slot_attention
  sa.slot_size, sa.mlp_size, sa.num_iters = 16, 16, 1
  for key, value in slot_attention.items():
    sa[key] = value
  config.batch_size = config.eval_batch_size = 4  # The tests run on 4 CPU devices.
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  config.optimizer.warmup_steps = 1
  config.images.num_examples = 1
  config.lock()
  return config


class TransitionTest(absltest.TestCase):

  def test_kinds(self):
    slots = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 64))
    rngs = {"params": jax.random.PRNGKey(1), "transition": jax.random.PRNGKey(2)}
    none = video_model.SlotTransition("none")
    out, kl = none.apply(none.init(rngs, slots), slots)
    np.testing.assert_array_equal(out, slots)
    self.assertEqual(float(kl), 0.0)
    fixed = video_model.SlotTransition("fixed", noise_sigma=0.5)
    out, kl = fixed.apply({}, slots, rngs={"transition": jax.random.PRNGKey(3)})
    self.assertAlmostEqual(float(jnp.std(out - slots)), 0.5, delta=0.03)
    self.assertEqual(float(kl), 0.0)
    learned = video_model.SlotTransition("learned", prior_variance=0.1)
    variables = learned.init(rngs, slots)
    out, kl = learned.apply(variables, slots, rngs={"transition": jax.random.PRNGKey(3)})
    self.assertEqual(out.shape, slots.shape)
    # The KL term from the predicted log-variance, by hand.
    p = variables["params"]
    h = jax.nn.relu(nn_layer_norm(slots, p["norm"]) @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    log_var = (h @ p["out"]["kernel"] + p["out"]["bias"])[..., 64:]
    expected = np.mean(0.5 * math.log(0.1) - 0.5 * log_var + 0.5 * np.exp(log_var) / 0.1 - 0.5)
    self.assertAlmostEqual(float(kl), float(expected), places=5)
    with self.assertRaisesRegex(ValueError, "valid values"):
      video_model.SlotTransition("other").init(rngs, slots)


def nn_layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


class VideoAutoencoderTest(absltest.TestCase):

  def test_slots_are_carried_from_frame_to_frame(self):
    model = video_model.VideoAutoencoder(
        encoder=models.CNNEncoder(channels=(8, 8), strides=(2, 1), mlp_size=8, out_size=8),
        decoder=models.SpatialBroadcastDecoder(broadcast_resolution=(4, 4), channels=(8, 8),
                                               strides=(2, 1)),
        slot_attention=SlotAttention(num_slots=3, slot_size=8, mlp_size=8, num_iters=1),
        transition=video_model.SlotTransition("none"))
    key = jax.random.PRNGKey(0)
    video_in = jax.random.uniform(key, (2, 2, 8, 8, 3), minval=-1, maxval=1)
    rngs = {"params": key, "slots": jax.random.PRNGKey(1)}
    variables = model.init(rngs, video_in, train=False)
    out = model.apply(variables, video_in, train=False, rngs=rngs)
    self.assertEqual(out["reconstruction"].shape, (2, 2, 8, 8, 3))
    self.assertEqual(out["masks"].shape, (2, 2, 3, 8, 8, 1))
    self.assertEqual(out["slots"].shape, (2, 2, 3, 8))
    np.testing.assert_allclose(out["masks"].sum(2), 1.0, atol=1e-5)
    # Changing only frame 0 changes the slots of frame 1 (they start from frame 0's slots).
    changed = video_in.at[:, 0].multiply(-1.0)
    out2 = model.apply(variables, changed, train=False, rngs=rngs)
    self.assertGreater(float(jnp.abs(out2["slots"][:, 1] - out["slots"][:, 1]).max()), 1e-4)
    # Frame 1 equals one slot-attention call started from frame 0's slots.
    features = model.apply(variables, video_in[:, 1], method=lambda m, x: m.encoder(x))
    frame1 = model.apply(variables, features, out["slots"][:, 0],
                         method=lambda m, x, s: m.slot_attention(x, initial_slots=s))
    np.testing.assert_allclose(frame1, out["slots"][:, 1], atol=1e-5)


class DataTest(absltest.TestCase):

  def test_attribute_identity_codes_of_fake_clevrer(self):
    config = clevrer_config.get_config("dataset=s_fake")
    self.assertEqual((config.evaluation.tc_identity, config.evaluation.miou_average),
                     ("attributes", "frames"))
    offline = shapes_video_config.get_config("runlocal=1").evaluation
    self.assertEqual((offline.tc_identity, offline.miou_average), ("ids", "videos"))
    data = config.data
    data.unlock()
    data.manual_dir, data.data_dir = _FAKE_DIR, _TMP
    batch = next(video.eval_batches(data, "train", batch_size=5, identity=True))
    identity, seg = batch["identity"], batch["segmentation"]
    self.assertEqual(identity.shape, (5, 11))
    np.testing.assert_array_equal(identity[:, 0], -1)  # Background.
    for codes, labels in zip(identity, seg):
      ids = set(np.unique(labels)) - {0}
      self.assertTrue(all(codes[i] >= 0 for i in ids))  # Every present object has a code.
    # The fake files hold a video with a repeated (colour, material, shape): equal codes.
    self.assertTrue(any(len(set(c[c >= 0])) < int(np.sum(c >= 0)) for c in identity))
    with self.assertRaisesRegex(ValueError, "tc_identity='ids'"):
      offline_data = shapes_video_config.get_config("runlocal=1").data
      offline_data.unlock()
      offline_data.data_dir = _TMP
      next(video.eval_batches(offline_data, "validation", batch_size=2, identity=True))

  def test_resumed_stream_and_padded_eval(self):
    data = shapes_video_config.get_config("runlocal=1").data
    data.unlock()
    data.data_dir = _TMP
    first = list(zip(range(6), video.train_batches(data, "train", batch_size=8, seed=3)))
    resumed = list(zip(range(2), video.train_batches(data, "train", batch_size=8, seed=3,
                                                     start_step=4)))
    for (_, a), (_, b) in zip(first[4:], resumed):  # 32 videos: epoch 1 starts at step 4.
      np.testing.assert_array_equal(a["video"], b["video"])
    self.assertFalse(np.array_equal(first[0][1]["video"], first[4][1]["video"]))
    self.assertEqual(first[0][1]["video"].shape, (8, 2, 32, 32, 3))
    self.assertLessEqual(float(first[0][1]["video"].max()), 1.0)
    batches = list(video.eval_batches(data, "validation", batch_size=3))
    self.assertLen(batches, 3)  # 8 videos: 3 + 3 + 2 and one padding row.
    np.testing.assert_array_equal(batches[-1]["mask"], [True, True, False])
    self.assertEqual(batches[0]["segmentation"].shape, (3, 2, 32, 32))
    self.assertEqual(batches[0]["segmentation"].dtype, np.int32)

  def test_shapes_video_scenes(self):
    builder = input_pipeline.builder_class("shapes_video")
    module = sys.modules[builder.__module__]
    config = builder.builder_configs["32x32"]
    new_counts = []
    for i in range(200):
      ex = module.render_video(np.random.default_rng([0, 0, i]), config)
      n0, n1 = ex["frame_num_objects"]
      new_counts.append(n1 - n0)
      self.assertEqual(int(ex["num_objects"]), n1)
      ids = [set(np.unique(ex["segmentation"][t])) - {0} for t in range(2)]
      self.assertEqual(ids[0], set(range(1, n0 + 1)))    # First-frame objects keep their ids
      self.assertEqual(ids[1], set(range(1, n1 + 1)))    # and the new ones follow.
      np.testing.assert_array_equal(ex["objects"]["first_frame"], [0] * n0 + [1] * (n1 - n0))
    share = np.mean(np.asarray(new_counts) == 2)
    self.assertBetween(share, 0.6, 0.78)  # CLEVRER-L: 68.8% of the videos gain 2+ objects.

  def test_shapes_video_16x16_keeps_every_sprite_visible(self):
    builder = input_pipeline.builder_class("shapes_video")
    module = sys.modules[builder.__module__]
    config = builder.builder_configs["16x16"]
    for i in range(40):
      ex = module.render_video(np.random.default_rng([0, 0, i]), config)
      self.assertEqual(ex["video"].shape, (2, 16, 16, 3))
      n0, n1 = ex["frame_num_objects"]
      area = ex["objects"]["area"]  # [n, 2] visible pixels per frame
      self.assertTrue(np.all(area[:n0, 0] >= 4), area)
      self.assertTrue(np.all(area[:n1, 1] >= 4), area)


class ConfigTest(absltest.TestCase):

  def test_rows_of_table5(self):
    rows = {}
    for arg in ("attention=softmax", "attention=softmax,noise=fixed",
                "attention=softmax,noise=learned", "attention=sinkhorn", "attention=mesh"):
      for dataset in ("s", "l"):
        config = clevrer_config.get_config(f"dataset={dataset},{arg}")
        sa = config.model.slot_attention
        rows[dataset, video.PAPER_NAMES[sa.attention, config.model.transition.kind]] = config
        self.assertEqual(sa.num_slots, 8)
        self.assertEqual(sa.cost, None if sa.attention == "softmax" else "cosine")
        self.assertEqual(config.data.name, f"clevrer/{dataset}")
    self.assertEqual({name for _, name in rows}, set(video.PAPER_NAMES.values()))
    self.assertEqual({(f"clevrer/{d}", n) for d, n in rows}, set(video.PUBLISHED))
    self.assertEqual(rows["l", "SA fixed noise"].model.transition.noise_sigma, 0.1)
    with self.assertRaisesRegex(ValueError, "baseline of SA"):
      clevrer_config.get_config("attention=mesh,noise=fixed")
    with self.assertRaisesRegex(ValueError, "valid values: s, l"):
      clevrer_config.get_config("dataset=m")
    with self.assertRaisesRegex(ValueError, "valid names"):
      video.preset("clevrer/m")

  def test_offline_config_resolution_and_optimiser(self):
    config = shapes_video_config.get_config("attention=mesh,resolution=16,kernel_size=3,"
                                            "learning_rate=0.001,steps=300")
    self.assertEqual(config.data.name, "shapes_video/16x16")
    self.assertEqual(config.data.resolution, 16)
    self.assertEqual(config.model.kernel_size, 3)
    self.assertEqual(config.optimizer.learning_rate, 1e-3)
    self.assertEqual(config.optimizer.warmup_steps, 30)
    sa = config.model.slot_attention
    self.assertEqual((sa.mesh_lr_per_entry, sa.mesh_lr), (True, 0.05))  # Per cost entry.
    sa = clevrer_config.get_config("attention=mesh").model.slot_attention
    self.assertEqual((sa.mesh_lr_per_entry, sa.mesh_lr), (False, 8.0))  # The reference's step.
    video.preset(config.data.name)  # Known to the task.
    model = video.build_model(config)
    self.assertEqual(model.encoder.kernel_size, 3)
    with self.assertRaisesRegex(ValueError, "valid values: 16, 32"):
      shapes_video_config.get_config("resolution=64")


class TrainTest(absltest.TestCase):
  """One short real run per dataset through the trainer (as main.py runs it)."""

  def _run(self, config, name):
    workdir = os.path.join(_TMP, name)
    result = train.train_and_evaluate(config, workdir)
    self.assertEqual(result["step"], 2)
    final = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
    for key in ("fg_ari", "fg_miou", "temporal_consistency", "loss"):
      self.assertTrue(np.isfinite(final["eval"][key]), key)
    self.assertTrue(os.path.exists(os.path.join(workdir, "images", "frames_2.png")))
    return final

  def test_offline_shapes_video_with_mesh(self):
    config = _tiny(shapes_video_config.get_config("attention=mesh,runlocal=1"))
    final = self._run(config, "shapes_mesh")
    self.assertIn("SA-MESH, shapes_video/tiny", final["report"])

  def test_fake_clevrer_with_learned_noise(self):
    config = clevrer_config.get_config("dataset=s_fake,noise=learned")
    config.unlock()
    config.data.manual_dir = _FAKE_DIR
    config.lock()
    final = self._run(_tiny(config), "clevrer_learned")
    self.assertIn("SA learned noise, clevrer/s_fake", final["report"])


if __name__ == "__main__":
  absltest.main()

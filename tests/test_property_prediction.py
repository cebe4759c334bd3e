"""Tests of the property-prediction task: configs, targets on fake CLEVR and shapes, training."""
import json
import os
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import clevr_properties  # pylint: disable=g-import-not-at-top
from configs import shapes_properties
from slot_ot_jax import tasks
from slot_ot_jax.data import input_pipeline
from slot_ot_jax.tasks import property_prediction as pp
from slot_ot_jax.training import train

clevr = sys.modules[input_pipeline.builder_class("clevr_v1").__module__]
fake = __import__("clevr_v1.make_dummy_data", fromlist=["DUMMY_DIR"])
DATA_DIR = tempfile.mkdtemp(prefix="pp_tfds_")


def clevr_config(**slot_attention):
  """The CLEVR config on the fake release, with a tiny model and batch."""
  config = clevr_properties.get_config(f"attention={slot_attention.pop('attention', 'softmax')}")
  config.data.data_dir = DATA_DIR
  config.data.manual_dir = str(fake.DUMMY_DIR)
  config.model.width = 8
  sa = config.model.slot_attention
  sa.slot_size, sa.mlp_size = 16, 32
  config.batch_size = config.eval_batch_size = 4  # The tests run on 4 CPU devices.
  config.data.train_split = "train[1:]"  # 5 scenes; the first plays the monitoring set.
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  return config


class ConfigTest(parameterized.TestCase):

  @parameterized.product(attention=("softmax", "sinkhorn", "emd", "mesh"), detach=(1, 0))
  def test_every_table_row_loads_and_builds(self, attention, detach):
    config = clevr_properties.get_config(f"attention={attention},detach_slots={detach}")
    sa = config.model.slot_attention
    self.assertEqual((sa.attention, sa.detach_slots, sa.num_slots, sa.num_iters),
                     (attention, bool(detach), 10, 3))
    self.assertEqual((config.batch_size, config.num_train_steps, config.optimizer.learning_rate,
                      config.optimizer.warmup_steps, config.optimizer.decay_steps,
                      config.optimizer.decay_rate), (512, 150_000, 4e-4, 1_000, 50_000, 0.5))
    self.assertEqual((config.data.name, config.data.train_split, config.data.eval_split),
                     ("clevr_v1/full", "train[512:]", "validation"))
    self.assertEqual((sa.mesh_lr_per_entry, sa.mesh_lr), (False, 8.0))  # The reference's step.
    task = tasks.get_task(config)
    model = task.build_model()
    rngs = {name: jax.random.PRNGKey(0) for name in ("params", *task.rng_streams)}
    image = np.zeros((1, 128, 128, 3), np.float32)
    variables = jax.eval_shape(lambda: model.init(rngs, image, train=False))
    conv = variables["params"]["encoder"]["conv_3"]["kernel"]
    self.assertEqual(conv.shape, (5, 5, 64, 64))
    if attention == "softmax" and detach:  # The head's output shape, once.
      out = jax.eval_shape(lambda v: model.apply(v, image, train=False, rngs=rngs), variables)
      self.assertEqual(out["predictions"].shape, (1, 10, 19))
    paper = pp.PUBLISHED[attention, bool(detach)]
    table = "Table 2" if detach else "Table 6"
    report = task.report({name: 0.5 for name in
                          ("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125", "ap_0.0625")})
    self.assertIn(f"published MESH {table}: {paper[0]:.1f}", report)
    self.assertIn(f"{paper[0]:.1f}", clevr_properties.__doc__)

  def test_offline_setting_is_the_cpu_model(self):
    config = shapes_properties.get_config("attention=mesh,learning_rate=0.002")
    self.assertEqual((config.model.kernel_size, config.model.encoder_strides),
                     (3, "2,1,1,1"))
    self.assertEqual((config.optimizer.learning_rate, config.num_train_steps), (2e-3, 3000))
    sa = config.model.slot_attention  # MESH steps of 0.05 per cost entry on this small problem.
    self.assertEqual((sa.mesh_lr_per_entry, sa.mesh_lr), (True, 0.05))
    model = tasks.get_task(config).build_model()
    image = np.zeros((1, 32, 32, 3), np.float32)
    rngs = {name: jax.random.PRNGKey(0) for name in ("params", "slots", "mesh")}
    variables = jax.eval_shape(lambda: model.init(rngs, image, train=False))
    self.assertEqual(variables["params"]["encoder"]["conv_0"]["kernel"].shape, (3, 3, 3, 32))

  def test_bad_arguments_list_the_valid_ones(self):
    with self.assertRaisesRegex(ValueError, "softmax, sinkhorn, emd, mesh"):
      clevr_properties.get_config("attention=dot")
    with self.assertRaisesRegex(ValueError, "valid: clevr_v1/full"):
      pp.dataset_spec("clevr6")


class FakeClevrTest(absltest.TestCase):

  def test_targets_images_and_padding_match_the_scene_files(self):
    config = clevr_config()
    batches = list(input_pipeline.as_numpy(pp.create_dataset(
        config.data, "validation", batch_size=2, train=False, seed=0)))
    self.assertLen(batches, 2)  # 3 scenes -> 2 batches, the last padded.
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]),
                                  [True, True, True, False])
    image = batches[0]["image"]
    self.assertEqual(image.shape, (2, 128, 128, 3))
    self.assertTrue(-1.0 <= image.min() < image.max() <= 1.0)
    targets = np.concatenate([b["targets"] for b in batches])  # [4, 10, 19]
    scenes = json.loads((fake.DUMMY_DIR / "CLEVR_v1.0" / "scenes" /
                         "CLEVR_val_scenes.json").read_text())["scenes"]
    for target, scene in zip(targets, scenes):
      objects = scene["objects"]
      n = len(objects)
      np.testing.assert_allclose(target[:n, :3],
                                 (np.array([o["3d_coords"] for o in objects]) + 3) / 6,
                                 atol=1e-6)
      for s, key, names in zip(pp.set_prediction.CLEVR_LAYOUT.group_slices(),
                               ("size", "material", "shape", "color"),
                               (clevr.SIZES, clevr.MATERIALS, clevr.SHAPES, clevr.COLORS)):
        np.testing.assert_array_equal(target[:n, s].sum(-1), 1.0)
        self.assertEqual([names[i] for i in target[:n, s].argmax(-1)], [o[key] for o in objects])
      np.testing.assert_array_equal(target[:n, -1], 1.0)
      np.testing.assert_array_equal(target[n:], 0.0)  # Zero padding up to 10 objects.

  def test_training_stream_resumes_at_a_step(self):
    config = clevr_config()
    make = lambda step: input_pipeline.as_numpy(pp.create_dataset(
        config.data, "train[1:]", batch_size=2, train=True, seed=3, start_step=step))
    stream = make(0)
    first = [next(stream)["targets"] for _ in range(4)]  # 8 examples: crosses an epoch.
    np.testing.assert_array_equal(next(make(3))["targets"], first[3])

  def test_one_training_run_through_the_trainer(self):
    config = clevr_config()
    config.data.resolution = 32  # Resized to 32x32 to keep the compilation small.
    with tempfile.TemporaryDirectory() as workdir:
      result = train.train_and_evaluate(config, workdir)
    self.assertEqual(result["step"], 2)
    names = {"ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125", "ap_0.0625"}
    # Official rule (ap_*) and lenient rule (ap_lenient_*), evaluation/set_prediction.py.
    self.assertEqual(set(result["eval"]),
                     {"loss"} | names | {n.replace("ap_", "ap_lenient_") for n in names})
    self.assertTrue(np.isfinite(result["eval"]["loss"]))
    self.assertIn("AP % at inf, 1, 0.5", result["report"])


class ShapesTest(absltest.TestCase):

  def test_targets_match_the_sprites(self):
    config = shapes_properties.get_config("runlocal=1")
    config.data.data_dir = DATA_DIR
    builder = input_pipeline.get_builder(config.data)
    examples = list(tfds_numpy(builder.as_dataset(split="validation[:4]")))
    batch = next(input_pipeline.as_numpy(pp.create_dataset(
        config.data, "validation[:4]", batch_size=4, train=False, seed=0)))
    self.assertEqual(batch["targets"].shape, (4, 4, 14))
    for target, ex in zip(batch["targets"], examples):
      o, n = ex["objects"], int(ex["num_objects"])
      np.testing.assert_allclose(target[:n, :2], np.stack([o["x"], o["y"]], -1), atol=1e-6)
      np.testing.assert_array_equal(target[:n, 2:4].argmax(-1), o["size"])
      np.testing.assert_array_equal(target[:n, 4:7].argmax(-1), o["shape"])
      np.testing.assert_array_equal(target[:n, 7:13].argmax(-1), o["color_index"])
      np.testing.assert_array_equal(target[:n, 13], 1.0)
      np.testing.assert_array_equal(target[n:], 0.0)
      # Discrete attributes: palette colours and the two scales.
      np.testing.assert_allclose(o["scale"], np.array([0.12, 0.2])[o["size"]], rtol=1e-6)


def tfds_numpy(ds):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.as_numpy(ds)


if __name__ == "__main__":
  absltest.main()

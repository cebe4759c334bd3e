"""Tests of the tf.data input pipeline and the preprocessing ops."""
import concurrent.futures
import dataclasses
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline as ip
from slot_ot_jax.data import preprocessing as pp

SHAPES = ip.builder_class("shapes")
MOD = ip.builder_class("multi_object_datasets")
CLEVRTEX = ip.builder_class("clevrtex")
mod_fake = __import__("multi_object_datasets.make_dummy_data", fromlist=["FAKE_CONFIGS"])
clevrtex_fake = __import__("clevrtex.make_dummy_data", fromlist=["DUMMY_DIR"])

# Output image side per dataset in the papers: SA 002 §5.8 (CLEVR 128, Multi-dSprites 64,
# Tetrominoes 35), Objects Room 64, ClevrTex 128 after the official crop.
PAPER_SIZES = {"multi_dsprites_colored_on_grayscale": 64, "multi_dsprites_colored_on_colored": 64,
               "multi_dsprites_binarized": 64, "tetrominoes": 35, "clevr6": 128, "clevr10": 128,
               "objects_room": 64}


def _config(data_dir, **overrides):
  config = ip.get_data_config()
  config.name, config.data_dir = "shapes/tiny", data_dir
  for key, value in overrides.items():
    config[key] = value
  return config


def _take(ds, n):
  return [b for _, b in zip(range(n), ip.as_numpy(ds))]


class PipelineTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()
    # Not prepared yet: the procedural dataset is built on first use.
    cls.builder = ip.get_builder(_config(cls.data_dir))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def _train(self, batches, start_step=0, seed=0, index=0, count=1, **overrides):
    ds = ip.create_dataset(_config(self.data_dir, **overrides), "train", batch_size=8,
                           train=True, seed=seed, start_step=start_step, process_index=index,
                           process_count=count)
    return _take(ds, batches)

  def test_tensorflow_sees_no_accelerator(self):
    self.assertEmpty(tf.config.get_visible_devices("GPU"))

  def test_auto_built_and_batch_format(self):
    self.assertTrue(self.builder.is_prepared())
    batch = self._train(1)[0]
    self.assertEqual(set(batch), {"image", "segmentation", "num_objects"})
    self.assertEqual(batch["image"].shape, (8, 32, 32, 3))
    self.assertEqual(batch["image"].dtype, np.float32)
    self.assertGreaterEqual(batch["image"].min(), -1.0)
    self.assertLessEqual(batch["image"].max(), 1.0)
    self.assertEqual(batch["segmentation"].shape, (8, 32, 32))
    self.assertEqual(batch["segmentation"].dtype, np.int32)
    self.assertEqual(batch["num_objects"].dtype, np.int32)
    for seg, n in zip(batch["segmentation"], batch["num_objects"]):
      self.assertEqual(set(np.unique(seg)), set(range(n + 1)))

  @parameterized.parameters(dict(flip=False, max_objects=-1), dict(flip=True, max_objects=2))
  def test_resume_gives_the_same_batches(self, flip, max_objects):
    # 64 examples (fewer after filtering), batch 8: 20 steps span several epochs.
    full = self._train(20, flip=flip, max_objects=max_objects)
    resumed = self._train(9, start_step=11, flip=flip, max_objects=max_objects)
    for a, b in zip(full[11:], resumed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])

  def test_epochs_are_permutations_reshuffled_by_seed(self):
    def epochs(seed):
      images = np.concatenate([b["image"] for b in self._train(16, seed=seed)])
      return [[im.tobytes() for im in images[i * 64:(i + 1) * 64]] for i in range(2)]
    first, second = epochs(0)
    self.assertLen(set(first), 64)
    self.assertEqual(set(first), set(second))
    self.assertNotEqual(first, second)
    self.assertNotEqual(epochs(1)[0], first)

  def test_hosts_read_disjoint_shards(self):
    shards = [{im.tobytes() for b in self._train(4, index=i, count=2) for im in b["image"]}
              for i in range(2)]
    self.assertLen(shards[0], 32)
    self.assertLen(shards[1], 32)
    self.assertEmpty(shards[0] & shards[1])

  def test_flip_mirrors_image_and_segmentation_together(self):
    plain = self._train(2, flip=False)
    flipped = self._train(2, flip=True)
    mirrored = 0
    for a, b in zip(plain, flipped):
      for i in range(8):
        same = np.array_equal(a["image"][i], b["image"][i])
        mirror = np.array_equal(a["image"][i][:, ::-1], b["image"][i])
        self.assertTrue(same or mirror)
        seg = b["segmentation"][i] if same else b["segmentation"][i][:, ::-1]
        np.testing.assert_array_equal(a["segmentation"][i], seg)
        mirrored += int(mirror and not same)
    self.assertBetween(mirrored, 1, 15)

  def test_eval_is_ordered_padded_and_sharded(self):
    config = _config(self.data_dir)
    hosts = [list(ip.as_numpy(ip.create_dataset(config, "validation", batch_size=6, train=False,
                                                seed=0, process_index=i, process_count=2)))
             for i in range(2)]
    reference = [ex["image"] for ex in tfds.as_numpy(self.builder.as_dataset(split="validation"))]
    valid = []
    for batches in hosts:
      self.assertLen(batches, 2)  # ceil(ceil(16 / 2) / 6) on every host.
      mask = np.concatenate([b["mask"] for b in batches])
      np.testing.assert_array_equal(mask, [True] * 8 + [False] * 4)
      padded = np.concatenate([b["image"] for b in batches])[~mask]
      np.testing.assert_array_equal(padded, 0.0)
      valid += list(np.concatenate([b["image"] for b in batches])[mask])
    expected = [im.astype(np.float32) / 127.5 - 1.0 for im in reference]
    np.testing.assert_allclose(np.stack(valid), np.stack(expected), atol=1e-6)

  def test_eval_object_filter_masks_instead_of_dropping(self):
    config = _config(self.data_dir, max_objects=1)
    batch = next(ip.as_numpy(ip.create_dataset(config, "test", batch_size=16, train=False,
                                               seed=0, process_index=0, process_count=1)))
    np.testing.assert_array_equal(batch["mask"], batch["num_objects"] <= 1)
    self.assertTrue(batch["mask"].any() and not batch["mask"].all())

  def test_concurrent_preparation_builds_once(self):
    # The runs of a sweep start together on one data dir: one prepares, the others wait for
    # it and read its files (before the lock, the later rename failed with FileExistsError).
    with tempfile.TemporaryDirectory() as data_dir:
      config = _config(data_dir)
      with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                             autospec=True,
                             side_effect=tfds.core.DatasetBuilder.download_and_prepare) as prep:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
          builders = list(pool.map(lambda _: ip.get_builder(config), range(2)))
      self.assertEqual(prep.call_count, 1)
      for builder in builders:
        self.assertTrue(builder.is_prepared())
      self.assertEqual(builders[0].info.splits["train"].num_examples,
                       builders[1].info.splits["train"].num_examples)

  def test_unknown_name_lists_valid_ones(self):
    config = _config(self.data_dir, name="clevr7")
    with self.assertRaisesRegex(ValueError, "shapes/32x32.*"):
      ip.get_builder(config)
    with self.assertRaisesRegex(ValueError, "multi_object_datasets/clevr6"):
      ip.max_num_objects(config)

  def test_missing_dataset_is_one_clear_error(self):
    with tempfile.TemporaryDirectory() as empty:
      config = _config(empty, name="multi_object_datasets/clevr6")
      with self.assertRaises(ip.DatasetNotFoundError) as cm:
        ip.create_dataset(config, "train", batch_size=2, train=True, seed=0, process_index=0,
                          process_count=1)
    error = cm.exception
    self.assertIsNone(error.__cause__)
    self.assertTrue(error.__suppress_context__)
    message = str(error)
    self.assertIn("https://storage.googleapis.com/multi-object-datasets/clevr_with_masks/"
                  "clevr_with_masks_train.tfrecords", message)
    self.assertIn("python datasets/prepare.py multi_object_datasets/clevr6", message)

  def test_prepares_from_manual_files(self):
    with tempfile.TemporaryDirectory() as data_dir:
      config = _config(data_dir, name="clevrtex/outd",
                       manual_dir=str(clevrtex_fake.DUMMY_DIR))
      batch = next(ip.as_numpy(ip.create_dataset(config, "test", batch_size=4, train=False,
                                                 seed=0, process_index=0, process_count=1)))
      self.assertEqual(batch["image"].shape, (4, 128, 128, 3))
      np.testing.assert_array_equal(batch["mask"], [True, True, True, False])
      # A real split range that the (short) fake file cannot fill names the file.
      config = _config(data_dir, name="multi_object_datasets/tetrominoes",
                       manual_dir=str(mod_fake.DUMMY_DIR))
      with self.assertRaisesRegex(Exception, "tetrominoes_train.tfrecords ends after"):
        ip.get_builder(config)

  def test_properties(self):
    config = _config(self.data_dir, name="multi_object_datasets/clevr10")
    self.assertEqual(ip.max_num_objects(config), 10)
    self.assertEqual(ip.output_resolution(config), 128)
    self.assertEqual(ip.eval_split(config), "test")
    self.assertEqual(ip.crop_box(config), (29, 221, 64, 256))
    config.max_objects, config.resolution, config.crop = 6, 64, "none"
    self.assertEqual((ip.max_num_objects(config), ip.output_resolution(config)), (6, 64))
    self.assertIsNone(ip.crop_box(config))
    config.crop = "0,10,5,15"
    self.assertEqual(ip.crop_box(config), (0, 10, 5, 15))


class EveryConfigTest(parameterized.TestCase):
  """Each builder config, read from its fake files, yields the papers' shapes and ranges."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def _check(self, name, builder, split, size, max_objects, **overrides):
    config = _config(self.data_dir, name=name, **overrides)
    for train in (True, False):
      batch = next(ip.as_numpy(ip.create_dataset(
          config, split if not train else "train", batch_size=2, train=train, seed=0,
          process_index=0, process_count=1, builder=builder)))
      self.assertEqual(batch["image"].shape, (2, size, size, 3), name)
      self.assertEqual(batch["segmentation"].shape, (2, size, size), name)
      self.assertBetween(float(batch["image"].min()), -1.0, 1.0)
      self.assertBetween(float(batch["image"].max()), -1.0, 1.0)
      self.assertGreater(float(batch["image"].max() - batch["image"].min()), 0.1)
      self.assertLessEqual(int(batch["num_objects"].max()), max_objects)
      self.assertLessEqual(int(batch["segmentation"].max()), max_objects)
      self.assertLessEqual(ip.max_num_objects(config), max_objects)

  @parameterized.parameters(("32x32", 32), ("64x64", 64), ("tiny", 32))
  def test_shapes(self, name, size):
    # The config with fewer examples: same renderer settings, same preset.
    config = SHAPES.builder_configs[name]
    small = dataclasses.replace(config, name=f"{name}_small",
                                num_examples=(("train", 4), ("validation", 2)))
    builder = SHAPES(config=small, data_dir=self.data_dir)
    builder.download_and_prepare()
    self._check(f"shapes/{name}", builder, "validation", size, config.max_objects)

  @parameterized.parameters(*PAPER_SIZES)
  def test_multi_object_datasets(self, name):
    builder = MOD(config=mod_fake.FAKE_CONFIGS[name], data_dir=self.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(mod_fake.DUMMY_DIR), compute_stats=tfds.download.ComputeStatsMode.SKIP))
    full = f"multi_object_datasets/{name}"
    preset = ip.PRESETS[full]
    split = preset.eval_split if name != "objects_room" else "six_objects"
    most = 6 if name == "objects_room" else preset.max_num_objects
    self._check(full, builder, split, PAPER_SIZES[name], most)

  @parameterized.parameters(("full", 128), ("full", 64), ("camo", 128), ("outd", 128))
  def test_clevrtex(self, variant, size):
    builder = CLEVRTEX(config=variant, data_dir=self.data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=str(clevrtex_fake.DUMMY_DIR)))
    overrides = {"resolution": size} if size != 128 else {}
    if variant == "outd":  # Test only: check the eval path alone.
      config = _config(self.data_dir, name="clevrtex/outd", **overrides)
      batch = next(ip.as_numpy(ip.create_dataset(config, "test", batch_size=2, train=False,
                                                 seed=0, process_index=0, process_count=1)))
      self.assertEqual(batch["image"].shape, (2, size, size, 3))
      return
    self._check(f"clevrtex/{variant}", builder, "validation", size, 10, **overrides)


class PreprocessingTest(absltest.TestCase):

  def _example(self):
    image = np.arange(240 * 320 * 3, dtype=np.int64).reshape(240, 320, 3) % 256
    seg = (np.arange(240 * 320).reshape(240, 320, 1) // 4000 % 7).astype(np.uint8)
    return {"image": tf.constant(image.astype(np.uint8)), "segmentation": tf.constant(seg),
            "num_objects": tf.constant(6, tf.int32)}

  def test_crop(self):
    ex = self._example()
    out = pp.crop(ex, (29, 221, 64, 256))
    np.testing.assert_array_equal(out["image"], ex["image"].numpy()[29:221, 64:256])
    np.testing.assert_array_equal(out["segmentation"],
                                  ex["segmentation"].numpy()[29:221, 64:256])
    with self.assertRaises(ValueError):
      pp.crop(ex, (0, 300, 0, 10))

  def test_resize_keeps_labels_and_range(self):
    out = pp.resize(pp.crop(self._example(), (29, 221, 64, 256)), (128, 128))
    self.assertEqual(out["image"].shape, (128, 128, 3))
    self.assertEqual(out["image"].dtype, tf.uint8)
    self.assertEqual(out["segmentation"].dtype, tf.uint8)
    self.assertTrue(set(np.unique(out["segmentation"])) <= set(range(7)))

  def test_scale_and_model_inputs(self):
    ex = {"image": tf.constant([[[0, 255, 128]]], tf.uint8),
          "segmentation": tf.constant([[[3]]], tf.uint8), "num_objects": tf.constant(3)}
    out = pp.model_inputs(pp.scale_image(ex))
    np.testing.assert_allclose(out["image"], [[[-1.0, 1.0, 128 / 127.5 - 1.0]]], atol=1e-6)
    self.assertEqual(out["segmentation"].shape, (1, 1))
    self.assertEqual(out["segmentation"].dtype, tf.int32)

  def test_max_objects_predicate_counts_objects_not_entities(self):
    keep = pp.max_objects_predicate(6)
    self.assertTrue(bool(keep({"num_objects": tf.constant(6)})))
    self.assertFalse(bool(keep({"num_objects": tf.constant(7)})))

  def test_random_flip_is_a_function_of_the_seed(self):
    ex = self._example()
    outs = [pp.random_flip(ex, tf.constant([3, s], tf.int64)) for s in range(20)]
    again = [pp.random_flip(ex, tf.constant([3, s], tf.int64)) for s in range(20)]
    flipped = [not np.array_equal(o["image"], ex["image"]) for o in outs]
    self.assertTrue(any(flipped) and not all(flipped))
    for a, b, f in zip(outs, again, flipped):
      np.testing.assert_array_equal(a["image"], b["image"])
      if f:
        np.testing.assert_array_equal(a["segmentation"], ex["segmentation"].numpy()[:, ::-1])


if __name__ == "__main__":
  absltest.main()

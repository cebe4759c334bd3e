"""DINOSAUR on MOVi: ViT and its checkpoint conversion, the kubric MOVi reader, feature
extraction, the feature pipeline, and the "dinosaur" task through `train_and_evaluate`.

One fake MOVi-C and one fake MOVi-D (scripts/make_fake_movi.py: the kubric TFDS layout,
written by TFDS, read with `tfds.builder_from_directory`) and their features from a
randomly initialised tiny ViT (scripts/extract_vit_features.py) are made once per module.
"""
import importlib.util
import os
import sys
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import movi_dinosaur  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.data import (
  input_pipeline,  # pylint: disable=g-import-not-at-top,wrong-import-position
)
from slot_ot_jax.data import movi  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.modules import vit  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.tasks import dinosaur  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top,wrong-import-position


def _script(name):
  path = os.path.join(REPO, "scripts", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


make_fake_movi = _script("make_fake_movi")
extract_vit_features = _script("extract_vit_features")
TINY = vit.get_vit_config("tiny")
EXTRACT_BATCH = 16


def _vit_features(params, images):
  """The extraction script's jitted ViT (compiled once, for its batch size) on a few images."""
  n = len(images)
  padded = np.pad(images, [(0, EXTRACT_BATCH - n)] + [(0, 0)] * 3)
  return np.asarray(extract_vit_features._apply_fn(TINY)(params, padded))[:n]  # pylint: disable=protected-access
_TMP = None
DATA = {}


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory()
  root = _TMP.name
  DATA["movi_dir"] = os.path.join(root, "movi")
  DATA["features_dir"] = os.path.join(root, "features")
  DATA["weights"] = os.path.join(root, "tiny_vit.npz")
  params = vit.ViT(TINY).init(jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 3)))["params"]
  DATA["params"] = params
  np.savez(DATA["weights"], **vit.state_dict_from_params(params, TINY))
  DATA["movi_c"] = make_fake_movi.write_fake_movi(DATA["movi_dir"], "movi_c",
                                                  clips=(("train", 8), ("test", 3)))
  make_fake_movi.write_fake_movi(DATA["movi_dir"], "movi_d", objects=(10, 23),
                                 clips=(("test", 2),), seed=1)
  for name, splits in (("movi_c", ("train", "test")), ("movi_d", ("test",))):
    DATA[f"{name}_features"] = extract_vit_features.extract(
        DATA["movi_dir"], name, DATA["weights"], DATA["features_dir"], vit="tiny",
        resolution="32x32", splits=splits, batch_size=EXTRACT_BATCH)


def tearDownModule():
  _TMP.cleanup()


class ViTTest(absltest.TestCase):

  def test_state_dict_round_trip_and_output_shape(self):
    sd = vit.state_dict_from_params(DATA["params"], TINY)
    self.assertEqual(sd["patch_embed.proj.weight"].shape, (16, 3, 8, 8))  # torch layout
    self.assertEqual(sd["blocks.1.attn.qkv.weight"].shape, (48, 16))
    back = vit.load_params(DATA["weights"], TINY)
    jax.tree.map(np.testing.assert_array_equal, back, jax.device_get(DATA["params"]))
    out = _vit_features(back, np.full((2, 32, 32, 3), 255.0))
    self.assertEqual(out.shape, (2, 16, 16))  # 4 x 4 patches, class token dropped
    self.assertTrue(np.all(np.isfinite(out)))

  def test_checkpoint_errors_name_the_arrays(self):
    sd = vit.state_dict_from_params(DATA["params"], TINY)
    missing = {k: v for k, v in sd.items() if k != "blocks.0.mlp.fc1.bias"}
    with self.assertRaisesRegex(ValueError, "missing.*blocks.0.mlp.fc1.bias"):
      vit.params_from_state_dict(missing, TINY)
    with self.assertRaisesRegex(ValueError, "unexpected.*blocks.2"):
      vit.params_from_state_dict({**sd, "blocks.2.norm1.weight": np.ones(16)}, TINY)
    bad = {**sd, "pos_embed": np.zeros((1, 5, 16), np.float32)}
    with self.assertRaisesRegex(ValueError, "pos_embed.*needs"):
      vit.params_from_state_dict(bad, TINY)
    # The released checkpoints' final norm and head are accepted and not used.
    extra = {**sd, "norm.weight": np.ones(16), "head.weight": np.ones((2, 16))}
    vit.params_from_state_dict(extra, TINY)


class MoviReaderTest(absltest.TestCase):

  def test_frames_counts_and_filter(self):
    builder = DATA["movi_c"]
    all_frames = list(tfds.as_numpy(movi.frames(builder, "train")))
    self.assertLen(all_frames, 8 * 3)
    counts = sorted({int(f["num_objects"]) for f in all_frames})
    self.assertEqual(counts, list(range(3, 11)))
    for f in all_frames:
      self.assertEqual(f["image"].shape, (32, 32, 3))
      self.assertLessEqual(int(f["segmentation"].max()), int(f["num_objects"]))
    c6 = list(tfds.as_numpy(movi.frames(builder, "train", max_objects=6, frame_stride=2)))
    self.assertLen(c6, 4 * 2)  # clips with 3..6 objects, frames 0 and 2
    self.assertTrue(all(f["num_objects"] <= 6 for f in c6))
    self.assertEqual(sorted({int(f["frame"]) for f in c6}), [0, 2])

  def test_missing_data_names_source_and_layout(self):
    with self.assertRaisesRegex(input_pipeline.DatasetNotFoundError,
                                r"gs://kubric-public/tfds/movi_d/256x256/1\.0\.0(.|\n)*"
                                r"dataset_info\.json"):
      movi.movi_builder(os.path.join(_TMP.name, "nowhere"), "movi_d")
    with self.assertRaisesRegex(input_pipeline.DatasetNotFoundError,
                                "extract_vit_features.py"):
      movi.features_builder(os.path.join(_TMP.name, "nowhere"), "movi_c", "vit_b8")
    with self.assertRaisesRegex(ValueError, "valid: movi_c, movi_d"):
      movi.movi_path(_TMP.name, "movi_e")


class ExtractionTest(absltest.TestCase):

  def test_features_are_the_vit_of_the_frames(self):
    builder = DATA["movi_c_features"]
    self.assertEqual(builder.info.splits["train"].num_examples, 24)
    ex = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
    self.assertEqual(ex["features"].dtype, np.float16)
    self.assertEqual(ex["features"].shape, (16, 16))
    frame = int(ex["frame"])
    raw = [f for f in tfds.as_numpy(movi.frames(DATA["movi_c"], "test"))
           if f["video_name"].decode() == ex["video_name"].decode() and f["frame"] == frame]
    self.assertLen(raw, 1)
    np.testing.assert_array_equal(ex["segmentation"][..., 0], raw[0]["segmentation"])
    self.assertEqual(int(ex["num_objects"]), int(raw[0]["num_objects"]))
    expected = _vit_features(DATA["params"], raw[0]["image"][None].astype(np.float32))[0]
    np.testing.assert_allclose(ex["features"].astype(np.float32), expected, rtol=1e-2,
                               atol=1e-2)


class FeaturePipelineTest(absltest.TestCase):

  def test_train_stream_resumes_and_eval_pads(self):
    builder = DATA["movi_c_features"]
    kw = dict(batch_size=4, train=True, seed=0)
    stream = input_pipeline.as_numpy(movi.feature_batches(builder, "train", **kw))
    first = [next(stream)["features"] for _ in range(7)]  # crosses the epoch boundary (6)
    resumed = next(input_pipeline.as_numpy(
        movi.feature_batches(builder, "train", start_step=6, **kw)))
    np.testing.assert_array_equal(resumed["features"], first[6])
    self.assertEqual(first[0].shape, (4, 4, 4, 16))
    c6 = input_pipeline.as_numpy(
        movi.feature_batches(builder, "train", max_objects=6, **kw))
    self.assertEqual(next(c6)["features"].shape, (4, 4, 4, 16))
    batches = list(input_pipeline.as_numpy(movi.feature_batches(
        builder, "test", batch_size=4, train=False, seed=0, max_objects=4)))
    self.assertLen(batches, 3)  # 9 frames -> 3 batches of 4, the last padded
    mask = np.concatenate([b["mask"] for b in batches])
    objects = np.concatenate([b["num_objects"] for b in batches])
    np.testing.assert_array_equal(mask[:9], objects[:9] <= 4)
    self.assertFalse(mask[9:].any())
    self.assertEqual(batches[0]["segmentation"].shape, (4, 32, 32))


class DinosaurModelTest(absltest.TestCase):

  def test_upsampled_ids_follow_the_masks(self):
    # Slot 0 owns the left half of a 2x2 grid, slot 1 the right half.
    masks = jnp.asarray([[[0.9, 0.1], [0.9, 0.1]], [[0.1, 0.9], [0.1, 0.9]]])[None, ..., None]
    ids = np.asarray(dinosaur.upsampled_ids(masks, (8, 8)))[0]
    np.testing.assert_array_equal(ids[:, :4], 0)
    np.testing.assert_array_equal(ids[:, 4:], 1)

  def test_paper_architecture_shapes(self):
    config = movi_dinosaur.get_config("dataset=c6")
    model = dinosaur.build_model(config)
    x = jax.ShapeDtypeStruct((2, 28, 28, 768), jnp.float32)
    rngs = {k: jax.random.PRNGKey(0) for k in ("params", "slots", "mesh")}
    variables = jax.eval_shape(lambda: model.init(rngs, jnp.zeros(x.shape), train=False))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape), train=False,
                                               rngs=rngs), variables)
    self.assertEqual(out["masks"].shape, (2, 7, 28, 28, 1))
    self.assertEqual(out["reconstruction"].shape, (2, 28, 28, 768))
    p = variables["params"]
    self.assertEqual(p["decoder"]["position_embedding"].shape, (28, 28, 128))
    self.assertEqual(p["decoder"]["out"]["kernel"].shape, (1024, 769))
    self.assertEqual(p["encoder"]["dense0"]["kernel"].shape, (768, 768))


class ConfigTest(absltest.TestCase):

  def test_variants_and_errors(self):
    c = movi_dinosaur.get_config("dataset=c6,update_norm=batch_norm,eval=movi_d")
    self.assertEqual((c.data.max_objects, c.model.slot_attention.num_slots), (6, 7))
    self.assertEqual((c.evaluation.dataset, c.evaluation.num_slots), ("movi_d", 24))
    c = movi_dinosaur.get_config("dataset=c10")
    self.assertEqual((c.data.max_objects, c.model.slot_attention.num_slots), (-1, 11))
    with self.assertRaisesRegex(ValueError, "valid values: weighted_mean, layer_norm"):
      movi_dinosaur.get_config("update_norm=sum")
    with self.assertRaisesRegex(ValueError, "valid values: c6, c10"):
      movi_dinosaur.get_config("dataset=c8")

  def test_report_quotes_table1_for_the_paper_setting(self):
    c = movi_dinosaur.get_config("dataset=c6,update_norm=batch_norm,eval=movi_d")
    line = dinosaur.DinosaurTask(c).report({"fg_ari": 0.5, "ari": 0.1, "fg_miou": 0.2,
                                            "loss": 2.0})
    self.assertIn("Krimmel Table 1: F-ARI 0.809", line)


class CheckReadyTest(absltest.TestCase):

  def test_missing_features_and_shape_mismatch_fail_before_building(self):
    c = movi_dinosaur.get_config("runlocal=1")
    with c.unlocked():
      c.data.features_dir = os.path.join(_TMP.name, "nowhere")
    with self.assertRaisesRegex(input_pipeline.DatasetNotFoundError,
                                "extract_vit_features.py --movi_dir=<movi_dir> --name=movi_c"):
      train.train_and_evaluate(c, os.path.join(_TMP.name, "never"))
    c = movi_dinosaur.get_config("runlocal=1")
    with c.unlocked():
      c.data.features_dir = DATA["features_dir"]
      c.model.grid = 28
    with self.assertRaisesRegex(ValueError, r"holds features \(16, 16\) per frame"):
      dinosaur.DinosaurTask(c).check_ready()


class TrainTest(absltest.TestCase):

  def test_trains_on_fake_features_then_evaluates_on_movi_d(self):
    workdir = os.path.join(_TMP.name, "run")
    overrides = dict(num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4,
                     log_every_steps=2)

    def config(arg):
      c = movi_dinosaur.get_config(arg)
      with c.unlocked():
        c.update(overrides)
        c.data.features_dir = DATA["features_dir"]
        c.data.eval_split = "test"
      return c

    result = train.train_and_evaluate(config("runlocal=1,dataset=c6"), workdir)
    self.assertEqual(result["step"], 4)
    for key in ("fg_ari", "ari", "fg_miou", "loss"):
      self.assertTrue(np.isfinite(result["eval"][key]), key)
    self.assertGreater(result["eval"]["loss"], 0.0)
    # Zero-shot evaluation of the checkpoint on MOVi-D (12 slots at runlocal, 24 in the
    # paper), plus 3 slots.
    c = config("runlocal=1,dataset=c6,eval=movi_d")
    with c.unlocked():
      c.mode = "eval"
      c.evaluation.slot_counts = "3"
    evaluated = train.train_and_evaluate(c, workdir)
    self.assertEqual(evaluated["step"], 4)
    self.assertIn("evaluated on movi_d, 12 slots", evaluated["report"])
    for key in ("fg_ari", "ari", "fg_miou", "fg_ari_slots3", "ari_slots3", "fg_miou_slots3"):
      self.assertTrue(0.0 <= evaluated["eval"][key] <= 1.0 or key.startswith("ari"), key)
      self.assertTrue(np.isfinite(evaluated["eval"][key]), key)


if __name__ == "__main__":
  absltest.main()

"""Tests of the CLEVRER builder on fake files in the release's formats (real mp4, real RLE)."""
import json
import pathlib
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline

Builder = input_pipeline.builder_class("clevrer")
clevrer = sys.modules[Builder.__module__]
fake = __import__("clevrer.make_dummy_data", fromlist=["DUMMY_DIR"])
DUMMY = fake.DUMMY_DIR


class ClevrerFakeTest(tfds.testing.DatasetBuilderTestCase):
  """Fake CLEVRER-L: train videos 0-5 less 2 (short proposals), validation 10000, test 15000."""
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["l_fake"]
  SPLITS = {"train": 5, "validation": 1, "test": 1}

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.EXAMPLE_DIR = str(DUMMY)


class RleTest(absltest.TestCase):

  def test_matches_pycocotools(self):
    from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) < 0.5, np.zeros((20, 30), bool), np.ones((20, 30), bool)]
    big = np.zeros((320, 480), bool)
    big[100:250, 7:400] = True  # Long runs: multi-group counts and negative differences.
    big[0, :] = True
    masks.append(big)
    for mask in masks:
      rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
      text = rle["counts"].decode("ascii")
      decoded = clevrer.decode_rle({"size": rle["size"], "counts": text})
      np.testing.assert_array_equal(decoded, mask)
      np.testing.assert_array_equal(decoded, mask_utils.decode(rle).astype(bool))
      # Uncompressed counts (a list of ints) give the same mask.
      runs = clevrer.rle_counts(text)
      np.testing.assert_array_equal(clevrer.decode_rle({"size": rle["size"], "counts": runs}),
                                    mask)

  def test_known_string(self):
    # pycocotools encodes this 2x3 mask (column-major 0,1,1,0,1,0, runs [1, 2, 1, 1, 1]) as
    # "121O0": the 4th and 5th counts are stored as differences -1 ("O") and 0.
    mask = np.array([[0, 1, 1], [1, 0, 0]], bool)
    self.assertEqual(clevrer.rle_counts("121O0"), [1, 2, 1, 1, 1])
    np.testing.assert_array_equal(clevrer.decode_rle({"size": [2, 3], "counts": "121O0"}),
                                  mask)

  def test_bad_strings_raise(self):
    with self.assertRaisesRegex(ValueError, "do not cover"):
      clevrer.decode_rle({"size": [2, 3], "counts": "1211"})
    with self.assertRaisesRegex(ValueError, "not an RLE character"):
      clevrer.rle_counts("12 1")
    with self.assertRaisesRegex(ValueError, "truncated"):
      clevrer.rle_counts("1o")  # 'o' = 63: a continuation bit with nothing after it.


class ReaderTest(absltest.TestCase):

  def _files(self, index):
    return clevrer.locate_files(DUMMY, Builder.builder_configs["l_fake"])[index]

  def test_example_matches_files(self):
    config = Builder.builder_configs["l_fake"]
    video_path, json_path = self._files(0)
    ex = clevrer.read_example(0, video_path, json_path, config)
    frames = json.loads(json_path.read_text())["frames"]
    self.assertEqual(ex["video"].shape, (2, 64, 64, 3))
    self.assertEqual(ex["segmentation"].shape, (2, 64, 64, 1))
    np.testing.assert_array_equal(ex["frame_num_objects"],
                                  [len(frames[0]["objects"]), len(frames[127]["objects"])])
    # Identity by (colour, material, shape): the same id in both frames for the same triple.
    triples = [[(o["color"], o["material"], o["shape"]) for o in frames[f]["objects"]]
               for f in (0, 127)]
    keys = list(zip(ex["objects"]["color"], ex["objects"]["material"], ex["objects"]["shape"]))
    for t, frame_triples in enumerate(triples):
      ids = set(np.unique(ex["segmentation"][t])) - {0}
      self.assertEqual({keys[i - 1] for i in ids}, set(frame_triples))
    self.assertEqual(int(ex["num_objects"]), len(set(triples[0]) | set(triples[1])))
    # The decoded frames are coloured like the fake masks: each object's pixels are close
    # to its colour after H.264 and the resize (away from edges).
    for t in range(2):
      for i in set(np.unique(ex["segmentation"][t])) - {0}:
        inside = ex["segmentation"][t, ..., 0] == i
        colour = np.asarray(fake._RGB[keys[i - 1][0]])  # pylint: disable=protected-access
        error = np.abs(np.median(ex["video"][t][inside], axis=0) - colour)
        self.assertLess(error.max(), 25, (t, i))

  def test_repeated_triple_gets_two_ids(self):
    config = Builder.builder_configs["s_fake"]
    ex = clevrer.read_example(fake.REPEATED_TRIPLE, *self._files(fake.REPEATED_TRIPLE), config)
    keys = list(zip(ex["objects"]["color"], ex["objects"]["material"], ex["objects"]["shape"]))
    self.assertEqual(keys[0], keys[1])
    self.assertEqual(set(np.unique(ex["segmentation"][0])) - {0}, {1, 2, 3})

  def test_short_proposals_are_skipped(self):
    config = Builder.builder_configs["s_fake"]
    self.assertIsNone(clevrer.read_example(fake.SHORT_PROPOSALS,
                                           *self._files(fake.SHORT_PROPOSALS), config))

  def test_short_proposals_outside_the_skip_list_are_an_error(self):
    config = Builder.builder_configs["s_fake"]
    files = {fake.SHORT_PROPOSALS: self._files(fake.SHORT_PROPOSALS)}
    builder = Builder.__new__(Builder)  # Only builder_config is read.
    object.__setattr__(builder, "_builder_config", config)
    lo = hi = fake.SHORT_PROPOSALS
    self.assertEqual(list(builder._generate_examples(files, "train", lo, hi + 1)), [])
    with self.assertRaisesRegex(ValueError, "video 2 have fewer than 128 frames.*validation"):
      list(builder._generate_examples(files, "validation", lo, hi + 1))

  def test_mesh_splits(self):
    self.assertEqual(clevrer.MESH_SPLITS, (("train", 0, 10_000), ("validation", 10_000, 10_320),
                                           ("test", 15_000, 20_000)))
    # MESH configs: `ignore: [7648, 9777]` for train, [] for validation and test.
    config = Builder.builder_configs["l"]
    self.assertEqual(config.skipped("train"), {7648, 9777})
    self.assertEqual(config.skipped("validation"), set())
    self.assertEqual(config.skipped("test"), set())
    self.assertEqual(Builder.builder_configs["s"].frames, (0, 16))
    self.assertEqual(Builder.builder_configs["l"].frames, (0, 127))

  def test_missing_files_error_names_url_files_and_command(self):
    with tempfile.TemporaryDirectory() as empty:
      with self.assertRaises(FileNotFoundError) as cm:
        clevrer.locate_files(empty, Builder.builder_configs["s"])
    message = str(cm.exception)
    self.assertIn("http://data.csail.mit.edu/clevrer/derender_proposals.zip", message)
    self.assertIn("video_train.zip", message)
    self.assertIn("video_<index:05d>.mp4", message)
    self.assertIn("python datasets/prepare.py clevrer/s", message)
    # The fake folder lacks most of the real splits' videos.
    with self.assertRaisesRegex(FileNotFoundError, "missing for"):
      clevrer.locate_files(DUMMY, Builder.builder_configs["s"])

  def test_bad_mask_and_bad_video_name_the_file(self):
    with tempfile.TemporaryDirectory() as tmp:
      tmp = pathlib.Path(tmp)
      video_path, json_path = self._files(0)
      data = json.loads(json_path.read_text())
      data["frames"][16]["objects"][0]["mask"]["counts"] = "1211"
      bad_json = tmp / "sim_00000.json"
      bad_json.write_text(json.dumps(data))
      config = Builder.builder_configs["s_fake"]
      with self.assertRaisesRegex(ValueError, r"sim_00000\.json: frame 16, object 0: bad mask"):
        clevrer.read_example(0, video_path, bad_json, config)
      bad_video = tmp / "video_00000.mp4"
      bad_video.write_bytes(b"not a video")
      with self.assertRaisesRegex(ValueError, "video_00000.mp4: cannot decode"):
        clevrer.read_example(0, bad_video, json_path, config)
      short = tmp / "short.mp4"
      fake.write_video(short, [np.zeros((320, 480, 3), np.uint8)] * 3)
      with self.assertRaisesRegex(ValueError, r"short.mp4: the video has no frame \[16\]"):
        clevrer.read_frames(short, (0, 16))


if __name__ == "__main__":
  absltest.main()

r"""Writes a tiny fake kubric MOVi dataset (TFDS, the release's layout) for tests and demos.

  python scripts/make_fake_movi.py --data_dir=/tmp/fake_movi [--name=movi_c]

writes <data_dir>/<name>/<H>x<W>/1.0.0 with splits train / validation / test, readable with
`tfds.builder_from_directory` exactly as the real release. The features are the subset of
the kubric spec that slot_ot_jax reads, with the release's names, dtypes and layouts:
video [T, H, W, 3] uint8 (tfds Video), segmentations [T, H, W, 1] uint8 (a sequence of
tfds Images; 0 = background, instance i has id i + 1), metadata/{video_name, width, height,
num_frames, num_instances (uint16)} and instances/visibility [T] uint16 per instance.
Each clip shows num_instances axis-aligned coloured boxes on a grey background that move by
one pixel per frame; later boxes occlude earlier ones.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from slot_ot_jax.data import movi  # pylint: disable=g-import-not-at-top,wrong-import-position


def movi_features(num_frames: int, size: int) -> tfds.features.FeaturesDict:
  """The read subset of the kubric MOVi feature spec (challenges/movi/movi_c.py)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tfds.features.FeaturesDict({
      "metadata": {
          "video_name": tfds.features.Text(),
          "width": tf.int32,
          "height": tf.int32,
          "num_frames": tf.int32,
          "num_instances": tf.uint16,
      },
      "instances": tfds.features.Sequence(
          {"visibility": tfds.features.Tensor(shape=(num_frames,), dtype=tf.uint16)}),
      "video": tfds.features.Video(shape=(num_frames, size, size, 3)),
      "segmentations": tfds.features.Sequence(
          tfds.features.Image(shape=(size, size, 1), dtype=tf.uint8), length=num_frames),
  })


def fake_clip(rng: np.random.Generator, index: int, num_instances: int, num_frames: int,
              size: int) -> dict:
  video = np.full((num_frames, size, size, 3), 128, np.uint8)
  seg = np.zeros((num_frames, size, size, 1), np.uint8)
  lo, hi = max(2, size // 8), max(3, size // 3)
  for i in range(num_instances):
    h, w = rng.integers(lo, hi, size=2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    dy, dx = rng.integers(-1, 2, size=2)
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    for t in range(num_frames):
      yt = int(np.clip(y + dy * t, 0, size - h))
      xt = int(np.clip(x + dx * t, 0, size - w))
      video[t, yt:yt + h, xt:xt + w] = colour
      seg[t, yt:yt + h, xt:xt + w] = i + 1
  visibility = [(seg[..., 0] == i + 1).sum(axis=(1, 2)).astype(np.uint16)
                for i in range(num_instances)]
  return {
      "metadata": {"video_name": str(index), "width": size, "height": size,
                   "num_frames": num_frames, "num_instances": num_instances},
      "instances": {"visibility": np.stack(visibility)},
      "video": video,
      "segmentations": seg,
  }


def write_fake_movi(data_dir: str, name: str = "movi_c", *, size: int = 32,
                    num_frames: int = 3, clips=(("train", 8), ("validation", 3), ("test", 3)),
                    objects: tuple[int, int] = (3, 10), seed: int = 0):
  """Writes the fake dataset; returns its `tfds.builder_from_directory` builder.

  Clip j of a split has objects[0] + j % (objects[1] - objects[0] + 1) instances, so every
  count from objects[0] up appears when there are enough clips.
  """
  rng = np.random.default_rng(seed)
  span = objects[1] - objects[0] + 1
  splits, index = {}, 0
  for split, n in clips:
    examples = []
    for j in range(n):
      examples.append((str(index), fake_clip(rng, index, objects[0] + j % span, num_frames,
                                              size)))
      index += 1
    splits[split] = examples
  resolution = f"{size}x{size}"
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version=movi.VERSION, config=resolution,
      features=movi_features(num_frames, size), split_datasets=splits, data_dir=data_dir,
      description="Fake kubric MOVi clips (slot_ot_jax tests).", disable_shuffling=True)
  return movi.movi_builder(data_dir, name, resolution)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--name", default="movi_c", choices=movi.MOVI_NAMES)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--num_frames", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  objects = (3, 10) if args.name == "movi_c" else (10, 23)
  builder = write_fake_movi(args.data_dir, args.name, size=args.size,
                            num_frames=args.num_frames, objects=objects, seed=args.seed)
  print(f"wrote {builder.data_dir}")


if __name__ == "__main__":
  main()

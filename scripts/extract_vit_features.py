r"""Runs a frozen ViT over the frames of a kubric MOVi dataset once; stores a TFDS dataset.

  python scripts/extract_vit_features.py --movi_dir=DATA --name=movi_c \
      --weights=dino_vitb8.npz --out_dir=FEATURES [--splits=train,validation,test]

DATA holds the kubric release in TFDS layout (DATA/movi_c/256x256/1.0.0, see
slot_ot_jax/data/movi.py for the source bucket); the weights are an .npz of the DINO ViT-B/8
state_dict (slot_ot_jax/modules/vit.py says how to convert the official checkpoint); nothing is
downloaded. Krimmel et al. App. F (after Seitzer et al.): each frame is resized
bicubically to 224x224, normalised with the ImageNet mean and deviation, and the ViT's
28 x 28 x 768 patch features (class token dropped) are stored at half precision, with the
frame and its segmentation resized (nearest neighbour) to 224x224. The output,
FEATURES/<name>_features/<vit>/1.0.0, is read by the "dinosaur" task
(configs/movi_dinosaur.py). Every frame of every clip is kept unless --frame_stride > 1.

Size: the full MOVi-C (about 264k frames) takes about 1.2 MB of features per frame, some
300 GB; --frame_stride=4 keeps a quarter. ViT-B/8 at 224x224 costs about 67 G
multiply-adds per frame, some 35 PFLOP for MOVi-C: a GPU job (not measured here); by the
flop count, days on a CPU.
"""
from __future__ import annotations

import argparse
import functools
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import tensorflow as tf
import tensorflow_datasets as tfds

from slot_ot_jax.data import movi
from slot_ot_jax.modules import vit as vit_lib


def feature_spec(num_patches: int, width: int, size: int, store_images: bool):
  spec = {
      "features": tfds.features.Tensor(shape=(num_patches, width), dtype=np.float16),
      "segmentation": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
      "num_objects": np.int32,
      "video_name": tfds.features.Text(),
      "frame": np.int32,
  }
  if store_images:
    spec["image"] = tfds.features.Image(shape=(size, size, 3), dtype=np.uint8)
  return tfds.features.FeaturesDict(spec)


def resized_frames(builder, split: str, *, image_size: int, frame_stride: int,
                   batch_size: int, max_clips: int | None) -> tf.data.Dataset:
  """Batches of {image float [b, S, S, 3] in [0, 255], segmentation uint8 [b, S, S, 1], ...}."""
  split = f"{split}[:{max_clips}]" if max_clips else split

  def resize(ex):
    image = tf.image.resize(tf.cast(ex["image"], tf.float32), (image_size, image_size),
                            method="bicubic")
    seg = tf.image.resize(ex["segmentation"][..., None], (image_size, image_size),
                          method="nearest")
    return {**ex, "image": tf.clip_by_value(image, 0.0, 255.0), "segmentation": seg}

  ds = movi.frames(builder, split, frame_stride=frame_stride).map(resize)
  return ds.batch(batch_size).prefetch(2)


def examples(batches, apply_fn, params, *, batch_size: int, store_images: bool):
  """(key, example) pairs of the feature dataset, running the ViT batch by batch (the last
  batch padded to `batch_size`, so that the ViT is compiled once)."""
  for batch in tfds.as_numpy(batches):
    n = len(batch["image"])
    images = np.pad(batch["image"], [(0, batch_size - n)] + [(0, 0)] * 3)
    feats = np.asarray(apply_fn(params, images), np.float16)[:n]
    for i in range(n):
      name = batch["video_name"][i].decode()
      ex = {"features": feats[i], "segmentation": batch["segmentation"][i],
            "num_objects": batch["num_objects"][i], "video_name": name,
            "frame": batch["frame"][i]}
      if store_images:
        ex["image"] = np.round(batch["image"][i]).astype(np.uint8)
      yield f"{name}_{int(batch['frame'][i]):03d}", ex


@functools.cache
def _apply_fn(config: vit_lib.ViTConfig):
  """Jitted (params, images [b, S, S, 3] in [0, 255]) -> features [b, N, D]."""
  model = vit_lib.ViT(config)
  return jax.jit(lambda p, images: model.apply({"params": p},
                                               vit_lib.normalize_images(images)))


def extract(movi_dir: str, name: str, weights: str, out_dir: str, *, vit: str = "vit_b8",
            resolution: str = "256x256", splits=("train", "validation", "test"),
            frame_stride: int = 1, batch_size: int = 32, max_clips: int | None = None,
            store_images: bool = True, output: str = "block"):
  """Writes the feature dataset; returns its `tfds.builder_from_directory` builder."""
  builder = movi.movi_builder(movi_dir, name, resolution)
  config = vit_lib.get_vit_config(vit, output=output)
  model = vit_lib.ViT(config)
  apply_fn = _apply_fn(config)
  if weights == "random":  # Smoke tests only: a randomly initialised ViT.
    images = jax.numpy.zeros((1, config.image_size, config.image_size, 3))
    params = model.init(jax.random.PRNGKey(0), images)["params"]
  else:
    params = vit_lib.load_params(weights, config)
  unknown = sorted(set(splits) - set(builder.info.splits))
  if unknown:
    raise ValueError(f"{name} has no split {unknown}; valid: {', '.join(builder.info.splits)}.")
  split_data = {
      split: examples(resized_frames(builder, split, image_size=config.image_size,
                                     frame_stride=frame_stride, batch_size=batch_size,
                                     max_clips=max_clips),
                      apply_fn, params, batch_size=batch_size, store_images=store_images)
      for split in splits}
  tfds.dataset_builders.store_as_tfds_dataset(
      name=movi.features_name(name), version=movi.VERSION, config=vit,
      features=feature_spec(config.num_patches, config.width, config.image_size,
                            store_images),
      split_datasets=split_data, data_dir=out_dir,
      description=(f"{vit} patch features ({output}) of kubric {name} {resolution} frames "
                   f"resized to {config.image_size}, frame stride {frame_stride}."))
  return movi.features_builder(out_dir, name, vit)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--movi_dir", required=True, help="root of the kubric TFDS data")
  parser.add_argument("--name", default="movi_c", choices=movi.MOVI_NAMES)
  parser.add_argument("--resolution", default="256x256")
  parser.add_argument("--weights", required=True, help=".npz of PyTorch-named ViT arrays, or "
                      "'random' (a randomly initialised ViT, for smoke tests only)")
  parser.add_argument("--vit", default="vit_b8", choices=sorted(vit_lib.VIT_CONFIGS))
  parser.add_argument("--output", default="block", choices=("block", "norm"),
                      help="last block's output (DINOSAUR) or after the final LayerNorm")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--splits", default="train,validation,test")
  parser.add_argument("--frame_stride", type=int, default=1)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_clips", type=int, default=0, help="first clips per split; 0 = all")
  parser.add_argument("--no_images", action="store_true", help="do not store the frames")
  args = parser.parse_args(argv)
  start = time.time()
  builder = extract(args.movi_dir, args.name, args.weights, args.out_dir, vit=args.vit,
                    resolution=args.resolution, splits=tuple(args.splits.split(",")),
                    frame_stride=args.frame_stride, batch_size=args.batch_size,
                    max_clips=args.max_clips or None, store_images=not args.no_images,
                    output=args.output)
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f"wrote {builder.data_dir}: {counts} frames in {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()

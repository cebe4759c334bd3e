"""Kubric MOVi-C / MOVi-D frames and the ViT feature datasets made from them.

Raw data: the kubric TFDS releases (Greff et al., 2022), prepared on disk in TFDS layout

  <data_dir>/<name>/<resolution>/1.0.0/{dataset_info.json, features.json, *.tfrecord-*}

with name movi_c or movi_d and resolution 256x256 (Seitzer et al. and Krimmel et al. resize
these frames to 224x224) or 128x128. Source: gs://kubric-public/tfds/<name>/<resolution>/1.0.0
(public bucket), e.g.

  gsutil -m cp -r gs://kubric-public/tfds/movi_c/256x256 <data_dir>/movi_c/

Splits: train (MOVi-C 9,737 clips), validation (250) and test (999); 24 frames per clip.
Features read (the release's spec): video [T, H, W, 3] uint8, segmentations [T, H, W, 1]
uint8 (0 = background, instance i has id i + 1), metadata/num_instances uint16, metadata/
video_name. `frames(...)` turns clips into single frames (Krimmel et al. discard the time
axis) with the clip's object count; `max_objects` keeps the clips with at most that many
objects (MOVi-C6 = 6; MOVi-C10 is the whole of MOVi-C, 3-10 objects; MOVi-D has up to 23).

Feature datasets (written by scripts/extract_vit_features.py) live in

  <features_dir>/<name>_features/<vit>/1.0.0/

with, per frame: features [N, D] float16 (patch features, class token dropped, N = g * g),
segmentation [S, S, 1] uint8 (nearest-neighbour resize), image [S, S, 3] uint8 (the resized
frame; optional), num_objects int32 (the clip's num_instances), video_name, frame.
`feature_batches(...)` reads them as batches of
  features      float32 [B, g, g, D]
  segmentation  int32   [B, S, S]    (evaluation)
  num_objects   int32   [B]          (evaluation)
  mask          bool    [B]          (evaluation: False on padding and filtered frames)
with the same resumable, per-process sharded training stream as `input_pipeline`.
"""
from __future__ import annotations

import math
import pathlib

import tensorflow as tf
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline

MOVI_NAMES = ("movi_c", "movi_d")
RESOLUTIONS = ("256x256", "128x128")  # Configs of the kubric releases.
VERSION = "1.0.0"
SOURCE = "gs://kubric-public/tfds/{name}/{resolution}/" + VERSION
_EXTRACT = ("python scripts/extract_vit_features.py --movi_dir={movi_dir} --name={name} "
            "--weights=<ViT .npz> --vit={vit} --out_dir={features_dir}")


def movi_path(data_dir: str, name: str, resolution: str = "256x256") -> pathlib.Path:
  """Directory of a prepared kubric MOVi dataset."""
  if name not in MOVI_NAMES:
    raise ValueError(f"Unknown MOVi dataset {name!r}; valid: {', '.join(MOVI_NAMES)}.")
  size = resolution.split("x")
  if len(size) != 2 or not all(v.isdigit() for v in size):
    raise ValueError(f"MOVi resolution {resolution!r} is not HxW; the kubric releases have "
                     f"{', '.join(RESOLUTIONS)}.")
  return pathlib.Path(data_dir) / name / resolution / VERSION


def movi_builder(data_dir: str, name: str, resolution: str = "256x256"):
  """`tfds.builder_from_directory` of a kubric MOVi release; a clear error when missing."""
  path = movi_path(data_dir, name, resolution)
  if not (path / "dataset_info.json").exists():
    source = SOURCE.format(name=name, resolution=resolution)
    raise input_pipeline.DatasetNotFoundError(
        f"Kubric {name} ({resolution}) is not prepared in {path}.\n"
        f"Source (public bucket): {source}\n"
        f"Expected layout: {path}/dataset_info.json, features.json and the "
        f"{name}-<split>.tfrecord-* shards (splits train, validation, test).\n"
        f"Copy it with: gsutil -m cp -r {source.rsplit('/', 1)[0]} "
        f"{pathlib.Path(data_dir) / name}/")
  return tfds.builder_from_directory(str(path))


def frames(builder, split: str, *, max_objects: int = -1, frame_stride: int = 1
           ) -> tf.data.Dataset:
  """Single frames of the clips of `split`, in file order.

  Args:
    builder: a MOVi builder (`movi_builder`).
    split: TFDS split ("train", "validation", "test", "test[:10]", ...).
    max_objects: keep clips with at most this many objects (-1: all); tested before the
      frames are decoded.
    frame_stride: keep frames 0, stride, 2 * stride, ... of every clip.

  Returns:
    tf.data.Dataset of {image uint8 [H, W, 3], segmentation uint8 [H, W], num_objects
    int32, video_name string, frame int32}.
  """
  features = builder.info.features
  skip = {"video": tfds.decode.SkipDecoding(), "segmentations": tfds.decode.SkipDecoding()}
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=skip,
                          read_config=tfds.ReadConfig(add_tfds_id=False))
  ds = ds.map(lambda ex: {"video": ex["video"], "segmentations": ex["segmentations"],
                          "num_objects": tf.cast(ex["metadata"]["num_instances"], tf.int32),
                          "video_name": ex["metadata"]["video_name"]})
  if max_objects >= 0:
    ds = ds.filter(lambda ex: ex["num_objects"] <= max_objects)

  def per_frame(ex):
    video = features["video"].decode_example(ex["video"][::frame_stride])
    seg = features["segmentations"].decode_example(ex["segmentations"][::frame_stride])
    t = tf.shape(video)[0]
    return tf.data.Dataset.from_tensor_slices({
        "image": video, "segmentation": seg[..., 0],
        "num_objects": tf.fill([t], ex["num_objects"]),
        "video_name": tf.fill([t], ex["video_name"]),
        "frame": tf.range(t, dtype=tf.int32) * frame_stride})

  return ds.flat_map(per_frame)


# ------------------------------------------------------------------------------------------
# Feature datasets
# ------------------------------------------------------------------------------------------
def features_name(name: str) -> str:
  return f"{name}_features"


def features_path(features_dir: str, name: str, vit: str) -> pathlib.Path:
  return pathlib.Path(features_dir) / features_name(name) / vit / VERSION


def features_builder(features_dir: str, name: str, vit: str, movi_dir: str | None = None):
  """The feature dataset of MOVi `name` extracted with ViT `vit`; a clear error when missing."""
  path = features_path(features_dir, name, vit)
  if not (path / "dataset_info.json").exists():
    command = _EXTRACT.format(movi_dir=movi_dir or "<movi_dir>", name=name, vit=vit,
                              features_dir=features_dir)
    raise input_pipeline.DatasetNotFoundError(
        f"ViT features of {name} ({vit}) are not in {path} (expected dataset_info.json, "
        f"features.json and the {features_name(name)}-<split>.tfrecord-* shards).\n"
        f"Extract them once from the kubric release "
        f"({SOURCE.format(name=name, resolution='256x256')}, copied to <movi_dir>/{name}/"
        f"256x256/{VERSION}) with:\n  {command}")
  return tfds.builder_from_directory(str(path))


_KEYS = ("features", "segmentation", "num_objects")


def _decode(builder, train: bool):
  info = builder.info.features
  n, d = info["features"].shape
  g = math.isqrt(n)
  if g * g != n:
    raise ValueError(f"{builder.info.full_name}: {n} patches is not a square grid.")

  def fn(ex):
    out = {"features": tf.reshape(tf.cast(ex["features"], tf.float32), [g, g, d])}
    if not train:
      out["segmentation"] = tf.cast(ex["segmentation"][..., 0], tf.int32)
      out["num_objects"] = ex["num_objects"]
      out["mask"] = ex["mask"]
    return out
  return fn


def _keep(max_objects: int):
  return lambda ex: (tf.constant(True) if max_objects < 0
                     else ex["num_objects"] <= max_objects)


def feature_batches(builder, split: str, *, batch_size: int, train: bool, seed: int,
                    max_objects: int = -1, start_step: int = 0, process_index: int = 0,
                    process_count: int = 1, shuffle_buffer: int = 10_000
                    ) -> tf.data.Dataset:
  """Batches of a feature dataset (module docstring); see `input_pipeline.create_dataset`
  for the training stream (resumable from `start_step`) and the padded evaluation pass."""
  fn = _decode(builder, train)
  host_split = tfds.even_splits(split, n=process_count, drop_remainder=train)[process_index]
  skip = [k for k in ("image",) + (("segmentation",) if train else ())
          if k in builder.info.features]
  ds = builder.as_dataset(split=host_split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k in skip},
                          read_config=tfds.ReadConfig(add_tfds_id=False))
  ds = ds.map(lambda ex: {k: ex[k] for k in _KEYS})
  if train:
    if max_objects >= 0:
      ds = ds.filter(_keep(max_objects))
      n = input_pipeline.count(ds)
    else:
      n = builder.info.splits[host_split].num_examples
    stream = input_pipeline.epoch_stream(ds, n, batch_size=batch_size, seed=seed,
                                         process_index=process_index, start_step=start_step,
                                         shuffle_buffer=shuffle_buffer,
                                         name=f"{builder.info.full_name} {split}")
    stream = stream.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(2)
  total = builder.info.splits[split].num_examples
  num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  ds = ds.map(lambda ex: {**ex, "mask": _keep(max_objects)(ex)}).map(
      fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return input_pipeline.pad_batches(ds, num_batches, batch_size).prefetch(2)



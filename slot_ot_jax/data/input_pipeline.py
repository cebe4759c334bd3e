"""tf.data input pipeline for object discovery, read from the TFDS builders in datasets/.

Every builder emits one schema (datasets/README.md): image uint8 [H, W, 3], segmentation uint8
[H, W, 1] (0 = background, 1..n the objects), num_objects int32 (background excluded), and
dataset-specific per-object attributes under `objects`. `create_dataset` turns a split into
batches of
  image         float32 [B, h, w, 3] in [-1, 1]
  segmentation  int32   [B, h, w]    0 = background
  num_objects   int32   [B]
  mask          bool    [B]          eval only: False for padding and for scenes above
                                     `max_objects` (weight every eval metric by it)
with the paper's crop and resize of each dataset (PRESETS; override with `crop`/`resolution`).

Training data are sharded per process, shuffled, repeated and resumable: epoch e is the host's
shard shuffled with a seed made of (seed, process, e) (a buffer of `shuffle_buffer` examples;
a full permutation when the shard fits), the epochs are concatenated and cut into batches, and
start_step=s skips s * batch_size examples before decoding, so the batches equal batches s,
s+1, ... of a run started at 0. Random flips are stateless in (seed, process, position).
With `max_objects` set, training first counts the filtered shard (one pass over the encoded
records, images not decoded).
Shuffles use op-level seeds; calling `tf.random.set_seed` changes them for that process.

Importing this module hides accelerators from TensorFlow, so it never takes their memory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import importlib
import math
import pathlib
import sys
from typing import Any, Iterator

import ml_collections
from ml_collections import config_dict
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from slot_ot_jax.data import preprocessing

try:  # TensorFlow only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Devices already initialised or none to hide.
  pass

DATASETS_DIR = pathlib.Path(__file__).resolve().parents[2] / "datasets"
_PREPARE = "python datasets/prepare.py {name} --data_dir={data_dir}"


@dataclasses.dataclass(frozen=True)
class Preset:
  """The papers' preprocessing and defaults of one dataset (tfds name `module/config`)."""
  crop: tuple[int, int, int, int] | None  # (top, bottom, left, right) or None.
  resolution: int | None                  # Square output side; None keeps the stored size.
  eval_split: str
  max_num_objects: int                    # Most objects in a scene (background excluded).


_CLEVR_CROP = (29, 221, 64, 256)     # 002 §5.8: rows 29:221, cols 64:256 of 240x320.
_CLEVRTEX_CROP = (24, 216, 64, 256)  # Official centre crop, 0.8 * 240 = 192 pixels.
PRESETS: dict[str, Preset] = {
    "shapes/32x32": Preset(None, None, "validation", 3),
    "shapes/64x64": Preset(None, None, "validation", 4),
    "shapes/tiny": Preset(None, None, "validation", 3),
    "shapes/16x16": Preset(None, None, "validation", 3),
    "shapes/16x16_6": Preset(None, None, "validation", 6),
    "shapes/properties32": Preset(None, None, "validation", 4),
    "shapes/properties_tiny": Preset(None, None, "validation", 4),
    "multi_object_datasets/multi_dsprites_colored_on_grayscale": Preset(
        None, None, "validation", 5),
    "multi_object_datasets/multi_dsprites_colored_on_colored": Preset(
        None, None, "validation", 4),
    "multi_object_datasets/multi_dsprites_binarized": Preset(None, None, "validation", 3),
    "multi_object_datasets/tetrominoes": Preset(None, None, "test", 3),
    "multi_object_datasets/clevr6": Preset(_CLEVR_CROP, 128, "test", 6),
    "multi_object_datasets/clevr10": Preset(_CLEVR_CROP, 128, "test", 10),
    "multi_object_datasets/clevr6_krimmel": Preset(_CLEVR_CROP, 128, "test", 6),
    "multi_object_datasets/clevr10_krimmel": Preset(_CLEVR_CROP, 128, "test", 10),
    "multi_object_datasets/objects_room": Preset(None, None, "validation", 6),
    "clevr_v1/full": Preset(None, 128, "validation", 10),  # Property prediction, no crop.
    "clevrtex/full": Preset(_CLEVRTEX_CROP, 128, "validation", 10),
    "clevrtex/camo": Preset(_CLEVRTEX_CROP, 128, "validation", 10),
    "clevrtex/outd": Preset(_CLEVRTEX_CROP, 128, "test", 10),
    "clevrtex/pbg": Preset(_CLEVRTEX_CROP, 128, "validation", 10),
    "clevrtex/vbg": Preset(_CLEVRTEX_CROP, 128, "validation", 10),
    "clevrtex/grassbg": Preset(_CLEVRTEX_CROP, 128, "validation", 10),
}


class DatasetNotFoundError(FileNotFoundError):
  """Neither prepared TFDS data nor the manual source files were found."""


class DatasetDamagedError(DatasetNotFoundError):
  """A prepared dataset's record file is truncated, garbled or missing."""


def get_data_config() -> ml_collections.ConfigDict:
  """Fields the pipeline reads, with defaults (the offline procedural dataset)."""
  c = ml_collections.ConfigDict()
  c.name = "shapes/32x32"      # A key of PRESETS: "<builder>/<config>".
  c.data_dir = config_dict.placeholder(str)    # TFDS data dir; None = TFDS default.
  c.manual_dir = config_dict.placeholder(str)  # Source files; None = <data_dir>/downloads/manual.
  c.prepare = True             # Build a missing dataset (shapes, or from present source files).
  c.train_split = "train"
  c.eval_split = ""            # "" = the preset's evaluation split.
  c.resolution = 0             # Output side; 0 = the preset's (the paper's) resolution.
  c.crop = "default"           # "default" (the paper's), "none", or "top,bottom,left,right".
  c.max_objects = -1           # Keep scenes with <= this many objects; -1 = all.
  c.flip = False               # Random horizontal flip for training (003 §5.1).
  c.shuffle_buffer = 10_000
  c.antialias = False          # Antialiased image downsampling (the papers' code uses none).
  return c


def preset(name: str) -> Preset:
  if name not in PRESETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(PRESETS))}.")
  return PRESETS[name]


def crop_box(data_config) -> tuple[int, int, int, int] | None:
  """The crop the pipeline applies: the preset's, none, or "top,bottom,left,right"."""
  spec = str(data_config.crop).strip().lower()
  if spec == "default":
    return preset(data_config.name).crop
  if spec in ("none", ""):
    return None
  values = [int(v) for v in spec.replace(":", ",").split(",")]
  if len(values) != 4:
    raise ValueError(f"crop={data_config.crop!r}: expected 'default', 'none' or 4 integers "
                     "top,bottom,left,right.")
  return tuple(values)


def output_resolution(data_config) -> int | None:
  if data_config.resolution > 0:
    return int(data_config.resolution)
  return preset(data_config.name).resolution


def eval_split(data_config) -> str:
  return data_config.eval_split or preset(data_config.name).eval_split


def max_num_objects(data_config) -> int:
  """Most objects a batch can hold (background excluded): slots = this + 1 in the papers."""
  most = preset(data_config.name).max_num_objects
  return min(most, data_config.max_objects) if data_config.max_objects >= 0 else most


# ------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------
@functools.cache
def builder_class(module: str) -> type[tfds.core.DatasetBuilder]:
  """Imports datasets/<module>/<module>_dataset_builder.py once, as `tfds build` names it."""
  if not (DATASETS_DIR / module / f"{module}_dataset_builder.py").exists():
    raise ValueError(f"No builder datasets/{module}; valid: "
                     f"{', '.join(sorted({n.split('/')[0] for n in PRESETS}))}.")
  path = str(DATASETS_DIR)
  added = path not in sys.path
  if added:
    sys.path.insert(0, path)
  try:
    return importlib.import_module(f"{module}.{module}_dataset_builder").Builder
  finally:
    if added:
      sys.path.remove(path)


def _data_root(builder) -> pathlib.Path:
  """The TFDS data dir of a builder (its data lives in <root>/<name>/<config>/<version>)."""
  return pathlib.Path(builder.data_path).parents[2]


def _not_found(builder, name: str, manual_dir: str | None, reason: str) -> DatasetNotFoundError:
  root = _data_root(builder)
  command = _PREPARE.format(name=name, data_dir=root) + (
      f" --manual_dir={manual_dir}" if manual_dir else "")
  reason = reason.replace("[--data_dir=DATA_DIR]", f"--data_dir={root}")
  if "prepare with" not in reason.lower():
    reason += f"\nPrepare it with: {command}"
  return DatasetNotFoundError(f"Dataset {name} is not prepared in {builder.data_path}.\n{reason}")


def get_builder(data_config, *, prepare: bool | None = None,
                check_name: bool = True) -> tfds.core.DatasetBuilder:
  """The prepared builder of `data_config.name`, built first when possible.

  The procedural dataset is built on first use; a manual-download dataset is built when its
  source files are found in the manual dir. Otherwise DatasetNotFoundError names the official
  URL, the expected files and the command that prepares the dataset. `check_name=False` skips
  the PRESETS check (datasets of other tasks, e.g. the two-frame video builders).
  """
  if check_name:
    preset(data_config.name)
  module, config = data_config.name.split("/", 1)
  cls = builder_class(module)
  builder = cls(config=config, data_dir=data_config.data_dir)
  if builder.is_prepared():
    check_records(builder, data_config.name)
    return builder
  prepare = data_config.prepare if prepare is None else prepare
  manual_dir = None
  if cls.MANUAL_DOWNLOAD_INSTRUCTIONS:
    manual_dir = data_config.manual_dir or str(_data_root(builder) / "downloads" / "manual")
    try:
      sys.modules[cls.__module__].locate_files(manual_dir, builder.builder_config)
    except FileNotFoundError as e:
      raise _not_found(builder, data_config.name, manual_dir, str(e)) from None
  if not prepare:
    raise _not_found(builder, data_config.name, manual_dir, "prepare=False was given.")
  with _prepare_lock(builder):
    # Another process (e.g. the other runs of a sweep) may have prepared it meanwhile.
    builder = cls(config=config, data_dir=data_config.data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


@contextlib.contextmanager
def _prepare_lock(builder):
  """Holds an exclusive lock on <data_dir>/<name>/<config>.prepare.lock while preparing.

  Processes that start together on one data dir (the runs of a sweep) would otherwise each
  build the dataset and fail when renaming their copy onto the one finished first. Remote
  data dirs (gs://...) are not locked: prepare those once, before the runs.
  """
  config_dir = pathlib.Path(builder.data_path).parent
  if "://" in str(builder.data_path):
    yield
    return
  config_dir.parent.mkdir(parents=True, exist_ok=True)
  with open(config_dir.parent / f"{config_dir.name}.prepare.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _check_shard(path: str) -> None:
  """Raises ValueError (with the reason) unless `path` is a well-framed TFRecord file.

  Walks the record headers to the end of the file (a truncated or garbled file does not end
  exactly on a record boundary), then reads the first and the last record with their
  checksums verified.
  """
  size = tf.io.gfile.stat(path).length
  if size == 0:
    raise ValueError("the file is empty")
  offsets, offset = [], 0
  with tf.io.gfile.GFile(path, "rb") as f:
    while offset < size:
      f.seek(offset)
      header = f.read(12)
      if len(header) < 12:
        raise ValueError(f"the file ends inside the header of record {len(offsets)} "
                         f"(byte {offset} of {size})")
      length = int.from_bytes(header[:8], "little")
      end = offset + 12 + length + 4
      if end > size:
        raise ValueError(f"record {len(offsets)} at byte {offset} claims {length} bytes, past "
                         f"the end of the file ({size} bytes): truncated or garbled")
      offsets.append(offset)
      offset = end
  try:
    from tensorflow.python.lib.io import _pywrap_record_io  # pylint: disable=g-import-not-at-top
    reader = _pywrap_record_io.RandomRecordReader(path)
  except (ImportError, AttributeError):  # No random access: the first record only.
    for _ in tf.data.TFRecordDataset(path).take(1):
      pass
    return
  try:
    for at in sorted({offsets[0], offsets[-1]}):
      reader.read(at)  # Verifies the length and data checksums.
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{type(e).__name__}: {str(e).strip()[:300]}") from None
  finally:
    reader.close()


def check_records(builder, name: str) -> None:
  """Reads one record at each end of the first and the last shard of every split.

  Called by `get_builder` on a prepared dataset (the trainer's start-up check), so that a
  truncated, garbled or missing record file fails at once, naming the file and the command
  that prepares the dataset again, instead of at the first batch. The cost is a walk over
  the record headers of those shards (no decoding).

  Raises:
    DatasetDamagedError: naming the file, what is wrong and how to re-prepare.
  """
  for split, info in builder.info.splits.items():
    try:
      paths = [str(p) for p in info.filepaths]
    except Exception:  # pylint: disable=broad-except
      continue  # A split layout without files (nothing to check).
    for path in dict.fromkeys([paths[0], paths[-1]] if paths else []):
      try:
        _check_shard(path)
      except (ValueError, tf.errors.OpError) as e:
        reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
        root = _data_root(builder)
        raise DatasetDamagedError(
            f"Dataset {name} is prepared in {builder.data_path} but its {split} split cannot "
            f"be read: {path}: {reason.strip().splitlines()[0] if reason.strip() else ''}.\n"
            f"Prepare it again: delete {builder.data_path} and run "
            f"{_PREPARE.format(name=name, data_dir=root)}") from None


# ------------------------------------------------------------------------------------------
# Pipeline
# ------------------------------------------------------------------------------------------
_SKIP = {"image": tfds.decode.SkipDecoding(), "segmentation": tfds.decode.SkipDecoding()}
_KEYS = ("image", "segmentation", "num_objects")


def _raw(builder, split: str) -> tf.data.Dataset:
  """Encoded examples in file order: {image, segmentation: png bytes, num_objects}."""
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=_SKIP,
                          read_config=tfds.ReadConfig(add_tfds_id=False))
  return ds.map(lambda ex: {k: ex[k] for k in _KEYS})


def _preprocess(builder, data_config, train: bool):
  """Decode -> crop -> resize -> (flip) -> [-1, 1] -> model inputs, for one example."""
  features = builder.info.features
  box, res = crop_box(data_config), output_resolution(data_config)
  flip = train and data_config.flip

  def fn(example, flip_seed=None):
    ex = dict(example)
    ex["image"] = features["image"].decode_example(ex["image"])
    ex["segmentation"] = features["segmentation"].decode_example(ex["segmentation"])
    if box is not None:
      ex = preprocessing.crop(ex, box)
    if res is not None:
      ex = preprocessing.resize(ex, (res, res), antialias=data_config.antialias)
    if flip:
      ex = preprocessing.random_flip(ex, flip_seed)
    out = preprocessing.model_inputs(preprocessing.scale_image(ex))
    if "mask" in ex:  # Eval: valid-example flag.
      out["mask"] = ex["mask"]
    return out

  return fn


def _count(ds: tf.data.Dataset) -> int:
  return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def create_dataset(data_config, split: str, *, batch_size: int, train: bool, seed: int,
                   start_step: int = 0, process_index: int | None = None,
                   process_count: int | None = None,
                   builder: tfds.core.DatasetBuilder | None = None) -> tf.data.Dataset:
  """Batches of one split for this process (see the module docstring for the fields).

  Args:
    data_config: see `get_data_config`.
    split: a TFDS split ("train", "test[:320]", ...).
    batch_size: examples per batch on this process (the global batch / process_count).
    train: shuffled, repeated, flipped if configured, remainder dropped; else one pass in file
      order, the last batch padded (mask False) so every process yields ceil(ceil(N / P) / B)
      batches.
    seed: data seed (shuffling and flips).
    start_step: training batches to skip (resume); the stream is a function of the step.
    process_index, process_count: this host's shard; default from JAX.
    builder: a prepared builder to read instead of the one `data_config.name` names (custom
      configs, tests); the preset of `data_config.name` still gives the preprocessing.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index, process_count = jax.process_index(), jax.process_count()
  builder = builder or get_builder(data_config)
  fn = _preprocess(builder, data_config, train)
  if train:
    host_split = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
    ds = _raw(builder, host_split)
    if data_config.max_objects >= 0:
      ds = ds.filter(preprocessing.max_objects_predicate(data_config.max_objects))
      n = _count(ds)
    else:
      n = builder.info.splits[host_split].num_examples
    host_seed = _host_seed(seed, process_index)
    skip = int(start_step) * batch_size
    stream = epoch_stream(ds, n, batch_size=batch_size, seed=seed, process_index=process_index,
                          start_step=start_step, shuffle_buffer=data_config.shuffle_buffer,
                          name=f"{data_config.name} {host_split}")
    positions = tf.data.Dataset.range(skip, np.iinfo(np.int64).max)
    stream = tf.data.Dataset.zip(stream, positions).map(
        lambda ex, pos: fn(ex, tf.stack([tf.constant(host_seed, tf.int64), pos])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _options(stream.batch(batch_size, drop_remainder=True).prefetch(2))

  host_split = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
  total = builder.info.splits[split].num_examples
  num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  ds = _raw(builder, host_split)
  max_objects = data_config.max_objects

  def add_mask(ex):
    keep = tf.constant(True) if max_objects < 0 else (
        preprocessing.max_objects_predicate(max_objects)(ex))
    return {**ex, "mask": keep}

  ds = ds.map(add_mask).map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return _options(pad_batches(ds, num_batches, batch_size).prefetch(2))


def _host_seed(seed: int, process_index: int) -> int:
  return (int(seed) * 1_000_003 + int(process_index)) % (2**31 - 1)


def epoch_stream(ds: tf.data.Dataset, n: int, *, batch_size: int, seed: int,
                 process_index: int, start_step: int, shuffle_buffer: int,
                 name: str = "The training split") -> tf.data.Dataset:
  """The endless training stream of a host's `n` examples `ds`, from batch `start_step` on.

  Epoch e is `ds` shuffled with a seed of (seed, process, e); the epochs are concatenated
  and the first start_step * batch_size examples skipped (before any decoding).
  """
  if n < batch_size:
    raise ValueError(f"{name} has {n} examples (after filtering), fewer than the batch size "
                     f"{batch_size}.")
  host_seed = _host_seed(seed, process_index)
  first_epoch, offset = divmod(int(start_step) * batch_size, n)
  buffer = max(1, min(int(shuffle_buffer), n))

  def epoch(e):
    shuffle_seed = tf.cast(e, tf.int64) * 1_000_033 + host_seed
    return ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

  stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  return stream.skip(offset)


def pad_batches(ds: tf.data.Dataset, num_batches: int, batch_size: int) -> tf.data.Dataset:
  """`num_batches` batches of `ds`, the missing examples all zeros (so "mask" is False)."""
  padding = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)).repeat()
  return ds.concatenate(padding).take(num_batches * batch_size).batch(batch_size)


def count(ds: tf.data.Dataset) -> int:
  """Number of examples of a finite dataset (one pass)."""
  return _count(ds)


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a dataset as dicts of numpy arrays (ready for `jax.device_put`)."""
  return iter(tfds.as_numpy(ds))


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> Any:
  """Builds dataset `name` (see datasets/prepare.py); returns the prepared builder."""
  config = get_data_config()
  config.name, config.data_dir, config.manual_dir = name, data_dir, manual_dir
  return get_builder(config, prepare=True)


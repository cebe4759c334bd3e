"""DeepMind Multi-Object Datasets read from the original GZIP TFRecord files (manual download).

Configs follow the papers' subsets and splits. Split ranges index records of the source file in
file order; `max_objects` then drops scenes with more objects (background excluded), and a
`limit` keeps the first qualifying records of a range:
  multi_dsprites_*   MESH (001 App. F.3): train 0-60000, validation 60000-60320,
                     test 60320-63200, at most 5 objects (all three variants hold at most 5).
  tetrominoes        SA (004 §4): train 0-60000, test the 320 records after them.
  clevr6, clevr10    SA (004 §4, 002 §5.8): train among records 0-70000, test the first 320
                     qualifying records from 70000 on; clevr6 keeps <= 6 objects, i.e. <= 7
                     visible entities counting the background entity 0.
  clevr6_krimmel,    003 (Krimmel et al.): test only, the first 1,280 qualifying records from
  clevr10_krimmel    70000 on (configs/clevr_cardinality.py).
  objects_room       validation 0-1000 and train 1000-end of the training file, plus the three
                     official test files (six_objects, empty_room, identical_color).
Images keep their original size; the crops and resizes of the papers are pipeline ops
(slot_ot_jax/data/preprocessing.py).

Features:
  image         uint8 [H, W, 3]  (binarized Multi-dSprites tiled from grayscale)
  segmentation  uint8 [H, W, 1]  0 = background (Objects Room: sky, floor, walls),
                                 k = the k-th visible object in the file's entity order
  num_objects   int32 []         visible objects, background excluded
  source_index  int64 []         the record's position in its source file
  objects       Sequence         the file's per-entity attributes for the visible objects, in
                                 label order (objects[k - 1] is label k); absent for Objects Room
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from . import formats

PREPARE_COMMAND = ("python datasets/prepare.py multi_object_datasets/{config} "
                   "--manual_dir={manual_dir} [--data_dir=DATA_DIR]")


@dataclasses.dataclass(frozen=True)
class SplitRange:
  """Records [start, stop) of the file FORMATS[source]; at most `limit` after filtering."""
  name: str
  source: str
  start: int = 0
  stop: int | None = None
  limit: int | None = None


@dataclasses.dataclass
class MultiObjectConfig(tfds.core.BuilderConfig):
  splits: tuple[SplitRange, ...] = ()
  max_objects: int | None = None

  @property
  def sources(self) -> list[formats.RecordFormat]:
    keys = dict.fromkeys(s.source for s in self.splits)
    return [formats.FORMATS[k] for k in keys]


def _dsprites(variant: str) -> MultiObjectConfig:
  src = f"multi_dsprites_{variant}"
  return MultiObjectConfig(
      name=src, description=f"Multi-dSprites {variant}, MESH split, at most 5 objects.",
      max_objects=5, splits=(SplitRange("train", src, 0, 60_000),
                             SplitRange("validation", src, 60_000, 60_320),
                             SplitRange("test", src, 60_320, 63_200)))


def _clevr(max_objects: int) -> MultiObjectConfig:
  src = "clevr_with_masks"
  return MultiObjectConfig(
      name=f"clevr{max_objects}",
      description=f"CLEVR with masks, at most {max_objects} objects, SA split (70k / 320).",
      max_objects=max_objects if max_objects < 10 else None,
      splits=(SplitRange("train", src, 0, 70_000), SplitRange("test", src, 70_000, None, 320)))


def _clevr_krimmel(max_objects: int) -> MultiObjectConfig:
  # 003 (Krimmel et al.) §4: "all models are evaluated on 1,280 scenes from the respective
  # test sets"; a test split only (train on clevr6).
  return MultiObjectConfig(
      name=f"clevr{max_objects}_krimmel",
      description=f"CLEVR with masks, at most {max_objects} objects, test only: the first "
                  "1,280 qualifying records from 70000 on (003's evaluation size).",
      max_objects=max_objects if max_objects < 10 else None,
      splits=(SplitRange("test", "clevr_with_masks", 70_000, None, 1_280),))


BUILDER_CONFIGS = [
    _dsprites("colored_on_grayscale"),
    _dsprites("colored_on_colored"),
    _dsprites("binarized"),
    MultiObjectConfig(
        name="tetrominoes", description="Tetrominoes, SA split (60k / 320).",
        splits=(SplitRange("train", "tetrominoes", 0, 60_000),
                SplitRange("test", "tetrominoes", 60_000, 60_320))),
    _clevr(6),
    _clevr(10),
    _clevr_krimmel(6),
    _clevr_krimmel(10),
    MultiObjectConfig(
        name="objects_room", description="Objects Room with the three official test sets.",
        splits=(SplitRange("validation", "objects_room_train", 0, 1_000),
                SplitRange("train", "objects_room_train", 1_000, None),
                SplitRange("six_objects", "objects_room_six_objects"),
                SplitRange("empty_room", "objects_room_empty_room"),
                SplitRange("identical_color", "objects_room_identical_color"))),
]


def _instructions() -> str:
  lines = [f"Download the GZIP TFRecord files of DeepMind's Multi-Object Datasets ({formats.URL},"
           f" browse at {formats.BROWSER_URL}, described at {formats.REPO_URL}) into the manual"
           " folder, flat or in their bucket sub-folders. Files per config:"]
  for config in BUILDER_CONFIGS:
    files = ", ".join(f.relative_path for f in config.sources)
    lines.append(f"  {config.name}: {files}")
  lines.append("For example: wget -P MANUAL_DIR " + formats.FORMATS["tetrominoes"].url)
  lines.append("Then: " + PREPARE_COMMAND.format(config="CONFIG", manual_dir="MANUAL_DIR"))
  return "\n".join(lines)


def locate_files(manual_dir, config: MultiObjectConfig) -> dict[str, epath.Path]:
  """Finds the config's source files under `manual_dir`.

  Accepts `manual_dir/<file>`, `manual_dir/<folder>/<file>` and the layout of a bucket copy,
  `manual_dir/multi-object-datasets/<folder>/<file>`.

  Returns:
    {format key: path}. Raises FileNotFoundError naming the URL, the files and the command.
  """
  root = epath.Path(manual_dir) if manual_dir else None
  found, missing = {}, []
  for key in dict.fromkeys(s.source for s in config.splits):
    fmt = formats.FORMATS[key]
    candidates = [] if root is None else [
        root / fmt.filename, root / fmt.folder / fmt.filename,
        root / "multi-object-datasets" / fmt.folder / fmt.filename]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
      missing.append(fmt)
    else:
      found[key] = path
  if missing:
    where = root if root is not None else "(no manual folder given)"
    lines = [f"multi_object_datasets/{config.name}: missing source file(s) in {where}:"]
    lines += [f"  {f.relative_path}  <- {f.url}" for f in missing]
    lines.append(f"Official source: {formats.URL} (see {formats.REPO_URL}). Download with:")
    lines += [f"  wget -P {where} {f.url}" for f in missing]
    lines.append("and prepare with: " + PREPARE_COMMAND.format(config=config.name,
                                                               manual_dir=where))
    raise FileNotFoundError("\n".join(lines))
  return found


class Builder(tfds.core.GeneratorBasedBuilder):
  """Multi-dSprites, Tetrominoes, CLEVR (with masks) and Objects Room, object-discovery schema."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = "multi_dsprites_colored_on_grayscale"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions()

  def _info(self) -> tfds.core.DatasetInfo:
    fmt = self.builder_config.sources[0]
    features = {
        "image": tfds.features.Image(shape=(fmt.height, fmt.width, 3)),
        "segmentation": tfds.features.Image(shape=(fmt.height, fmt.width, 1)),
        "num_objects": tfds.features.Scalar(np.int32),
        "source_index": tfds.features.Scalar(np.int64),
    }
    attributes = {}
    for name, shape in fmt.float_attributes:
      shape = (3,) if name == "color" else shape
      attributes[name] = tfds.features.Tensor(shape=shape, dtype=np.float32)
    for name in fmt.byte_attributes:
      attributes[name] = tfds.features.Scalar(np.int32)
    if attributes:
      features["objects"] = tfds.features.Sequence(attributes)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), homepage=formats.REPO_URL,
        disable_shuffling=True)  # Keep file order: source_index increases in a split.

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    paths = locate_files(dl_manager.manual_dir, self.builder_config)
    return {s.name: self._generate_examples(paths[s.source], s)
            for s in self.builder_config.splits}

  def _generate_examples(self, path: epath.Path, split: SplitRange) -> Iterator:
    config = self.builder_config
    fmt = formats.FORMATS[split.source]
    kept = 0
    for index, example in _read_records(path, fmt, split.start, split.stop):
      if config.max_objects is not None and example["num_objects"] > config.max_objects:
        continue
      yield index, _to_features(example, fmt, index)
      kept += 1
      if split.limit is not None and kept == split.limit:
        return
    if split.limit is not None:
      raise ValueError(f"{path}: only {kept} records qualify for split '{split.name}' from "
                       f"record {split.start} on; {split.limit} expected. Is the file complete?")


def _read_records(path: epath.Path, fmt: formats.RecordFormat, start: int,
                  stop: int | None) -> Iterator[tuple[int, dict]]:
  """Yields (record index, parsed numpy example) for records [start, stop) of `path`.

  A record that cannot be decompressed or parsed raises ValueError naming the file and the
  record; a file with fewer than `stop` records raises too.
  """
  ds = tf.data.TFRecordDataset(str(path), compression_type="GZIP").skip(start)
  if stop is not None:
    ds = ds.take(stop - start)
  ds = ds.map(lambda r: formats.parse_record(r, fmt), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True).prefetch(tf.data.AUTOTUNE)
  iterator = ds.as_numpy_iterator()
  index = start
  while True:
    try:
      example = next(iterator)
    except StopIteration:
      break
    except tf.errors.OpError as e:
      raise ValueError(f"Corrupt record in {path} (record {index}, {fmt.relative_path} "
                       f"layout): {type(e).__name__}: {e.message}") from None
    yield index, example
    index += 1
  if stop is not None and index < stop:
    raise ValueError(f"{path} ends after {index} records; records up to {stop} are needed. "
                     f"Re-download it from {fmt.url}.")


def _to_features(example: dict, fmt: formats.RecordFormat, index: int) -> dict:
  """Numpy parse output -> the builder's feature dict."""
  features = {
      "image": example["image"],
      "segmentation": example["segmentation"],
      "num_objects": np.int32(example["num_objects"]),
      "source_index": np.int64(index),
  }
  names = [n for n, _ in fmt.float_attributes] + list(fmt.byte_attributes)
  if names:
    present = example["present"]
    features["objects"] = {n: example[n][present] for n in names}
  return features

"""Writes tiny fake Multi-Object Datasets files, in the original on-disk format, to dummy_data/.

    python datasets/multi_object_datasets/make_dummy_data.py

The files reproduce the layout documented in formats.py (GZIP TFRecords of tf.train.Example;
image, mask and CLEVR's integer codes as string features with one byte per element; masks
0/255 with entity 0 the background, [H, W, E, 1] for Multi-dSprites and [E, H, W, 1] otherwise;
`visibility` counting the background). Scenes are flat-coloured rectangles so the files gzip to
a few kilobytes; every record differs. `FAKE_CONFIGS` are the builder configs with split ranges
scaled down to these files (same sources and object filters as the real configs).
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

import numpy as np

if not __package__:  # Run as a script: make the builder folders importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from multi_object_datasets import multi_object_datasets_dataset_builder as mod
from multi_object_datasets.multi_object_datasets_dataset_builder import SplitRange

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"

# Objects per record of the fake CLEVR file: record 1 has 7 objects (8 visible entities with
# the background) and must leave CLEVR6; records 2 and 6 have exactly 6 (7 entities) and stay.
CLEVR_OBJECTS = (3, 7, 6, 10, 4, 8, 6, 7, 5, 9)
# Records per fake file.
NUM_RECORDS = {"multi_dsprites_binarized": 10, "multi_dsprites_colored_on_grayscale": 10,
               "multi_dsprites_colored_on_colored": 10, "tetrominoes": 8,
               "clevr_with_masks": len(CLEVR_OBJECTS), "objects_room_train": 8,
               "objects_room_six_objects": 3, "objects_room_empty_room": 3,
               "objects_room_identical_color": 3}
# (min, max) objects per file, background excluded.
OBJECT_RANGE = {"multi_dsprites_binarized": (2, 3), "multi_dsprites_colored_on_grayscale": (2, 5),
                "multi_dsprites_colored_on_colored": (1, 4), "tetrominoes": (3, 3),
                "objects_room_train": (1, 3), "objects_room_six_objects": (6, 6),
                "objects_room_empty_room": (0, 0), "objects_room_identical_color": (4, 6)}


def _scaled(config, splits) -> mod.MultiObjectConfig:
  return dataclasses.replace(config, name=config.name + "_fake", splits=tuple(splits))


_BY_NAME = {c.name: c for c in mod.BUILDER_CONFIGS}
FAKE_CONFIGS = {
    **{name: _scaled(_BY_NAME[name], [SplitRange("train", name, 0, 6),
                                      SplitRange("validation", name, 6, 8),
                                      SplitRange("test", name, 8, 10)])
       for name in ("multi_dsprites_colored_on_grayscale", "multi_dsprites_colored_on_colored",
                    "multi_dsprites_binarized")},
    "tetrominoes": _scaled(_BY_NAME["tetrominoes"], [SplitRange("train", "tetrominoes", 0, 5),
                                                     SplitRange("test", "tetrominoes", 5, 7)]),
    **{name: _scaled(_BY_NAME[name], [SplitRange("train", "clevr_with_masks", 0, 6),
                                      SplitRange("test", "clevr_with_masks", 6, None, 2)])
       for name in ("clevr6", "clevr10")},
    "objects_room": _scaled(_BY_NAME["objects_room"], [
        SplitRange("validation", "objects_room_train", 0, 2),
        SplitRange("train", "objects_room_train", 2, None),
        SplitRange("six_objects", "objects_room_six_objects"),
        SplitRange("empty_room", "objects_room_empty_room"),
        SplitRange("identical_color", "objects_room_identical_color")]),
}
# Expected examples per split of each fake config (CLEVR6 drops records 1 and 3, then 7).
FAKE_SPLIT_SIZES = {
    "multi_dsprites_colored_on_grayscale": {"train": 6, "validation": 2, "test": 2},
    "multi_dsprites_colored_on_colored": {"train": 6, "validation": 2, "test": 2},
    "multi_dsprites_binarized": {"train": 6, "validation": 2, "test": 2},
    "tetrominoes": {"train": 5, "test": 2},
    "clevr6": {"train": 3, "test": 2},
    "clevr10": {"train": 6, "test": 2},
    "objects_room": {"validation": 2, "train": 6, "six_objects": 3, "empty_room": 3,
                     "identical_color": 3},
}


def _scene(rng, fmt, n: int, shared_color=None):
  """Background plus n non-overlapping rectangles (objects_room: 4 layout masks first).

  Returns:
    image uint8 [H, W, C], entity index map int [H, W] (0..E-1).
  """
  h, w, c = fmt.height, fmt.width, fmt.channels
  image = np.empty((h, w, c), np.uint8)
  image[:] = rng.integers(0, 256, size=c, dtype=np.uint8)
  entity = np.zeros((h, w), np.int64)
  if fmt.num_background == 4:  # Sky, floor, left wall, right wall.
    entity[: h // 4] = 0
    entity[h // 4: 3 * h // 4, : w // 2] = 2
    entity[h // 4: 3 * h // 4, w // 2:] = 3
    entity[3 * h // 4:] = 1
    for e in range(4):
      image[entity == e] = rng.integers(0, 256, size=c, dtype=np.uint8)
  cols = max(n, 1)
  for k in range(n):  # One rectangle per column band, random size and height.
    x0 = k * w // cols + int(rng.integers(0, 2))
    x1 = min((k + 1) * w // cols - 1, x0 + int(rng.integers(2, max(3, w // cols))))
    y0 = int(rng.integers(0, h // 2))
    y1 = y0 + int(rng.integers(2, h // 2))
    entity[y0:y1, x0:x1] = fmt.num_background + k
    color = shared_color if shared_color is not None else rng.integers(0, 256, size=c)
    image[y0:y1, x0:x1] = color
  return image, entity


def _bytes_feature(array: np.ndarray):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[bytes([int(v)]) for v in array.astype(np.uint8).ravel()]))


def _float_feature(array: np.ndarray):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Feature(float_list=tf.train.FloatList(value=array.astype(np.float32).ravel()))


def serialize(fmt, image: np.ndarray, entity: np.ndarray, n: int, rng) -> bytes:
  """One tf.train.Example in the layout of `fmt`, as the original files store it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  e = fmt.entities
  masks = (np.arange(e)[:, None, None] == entity[None]).astype(np.uint8) * 255  # [E, H, W]
  masks = masks[..., None]  # [E, H, W, 1]
  if fmt.mask_entity_last:
    masks = masks.transpose(1, 2, 0, 3)  # [H, W, E, 1]
  feature = {"image": _bytes_feature(image), "mask": _bytes_feature(masks)}
  used = fmt.num_background + n
  for name, shape in fmt.float_attributes:
    value = rng.uniform(0.0, 1.0, size=(e, *shape))
    value[0], value[used:] = 0.0, 0.0
    feature[name] = _float_feature(value)
  for name in fmt.byte_attributes:
    value = rng.integers(1, 4, size=e)
    value[0], value[used:] = 0, 0
    feature[name] = _bytes_feature(value)
  if fmt.has_visibility:
    feature["visibility"] = _float_feature((np.arange(e) < used).astype(np.float32))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_file(key: str, out_dir: pathlib.Path) -> pathlib.Path:
  """Writes the fake file of FORMATS[key] under out_dir/<bucket folder>/."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fmt = mod.formats.FORMATS[key]
  path = out_dir / fmt.folder / fmt.filename
  path.parent.mkdir(parents=True, exist_ok=True)
  seed = list(key.encode())
  with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
    for index in range(NUM_RECORDS[key]):
      rng = np.random.default_rng([*seed, index])
      if key == "clevr_with_masks":
        n = CLEVR_OBJECTS[index]
      else:
        n = int(rng.integers(OBJECT_RANGE[key][0], OBJECT_RANGE[key][1] + 1))
      shared = rng.integers(0, 256, size=3) if key == "objects_room_identical_color" else None
      image, entity = _scene(rng, fmt, n, shared)
      writer.write(serialize(fmt, image, entity, n, rng))
  return path


def main() -> None:
  for key in NUM_RECORDS:
    path = write_file(key, DUMMY_DIR)
    print(f"{path.relative_to(DUMMY_DIR)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
  main()

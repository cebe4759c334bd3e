"""CLEVR v1.0 (Johnson et al., 2017) read from its official release (manual download).

Release layout (CLEVR_v1.0.zip from https://cs.stanford.edu/people/jcjohns/clevr/, extracted):
  CLEVR_v1.0/images/{train,val,test}/CLEVR_{split}_{index:06d}.png   RGBA, 480x320
  CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json   {"info": ..., "scenes": [{"split",
      "image_index", "image_filename", "objects": [{"3d_coords": [x, y, z] in about [-3, 3],
      "pixel_coords": [col, row, depth], "rotation", "size", "material", "shape", "color"}],
      "relationships", "directions"}]}
  CLEVR_v1.0/questions/CLEVR_{train,val,test}_questions.json   (not read here)
The test split has no scenes, so this builder has train (70,000) and validation (15,000).

Tolerances (for copies laid out as TFDS's own fake CLEVR, which has only the validation scenes
file and scenes without `image_index` / `image_filename`): a split whose scenes file is
missing yields its images with no objects (empty annotations, as TFDS's `clevr` builder does)
and logs a warning; scenes without those keys are paired with the split's image files in
sorted file-name order (as TFDS's builder pairs them), the index then taken from the file
name's trailing digits (else its position).
The module is called clevr_v1 because TFDS ships a catalogue dataset named "clevr" and two
builders of one name cannot be registered in the same process.

Features:
  image         uint8 [320, 480, 3]  (alpha dropped)
  num_objects   int32 []
  source_index  int64 []             the image index of the scene json
  objects       Sequence: 3d_coords float32 [3], pixel_coords float32 [3], rotation float32,
                size (SIZES), material (MATERIALS), shape (SHAPES), color (COLORS) as class ids
"""
from __future__ import annotations

import io
import json
import logging
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

HOMEPAGE = "https://cs.stanford.edu/people/jcjohns/clevr/"
DOWNLOAD_URL = "https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip"
HEIGHT, WIDTH = 320, 480
# Class orders of the targets (slot_ot_jax/tasks/property_prediction.py one-hot encodes the ids).
# They follow the CLEVR generator's order (`data/properties.json` of facebookresearch/clevr-
# dataset-gen: shapes cube, sphere, cylinder; colours gray, red, blue, green, brown, purple,
# cyan, yellow; materials rubber, metal; sizes large, small). TFDS's catalogue `clevr` uses
# other orders for colour (gray, blue, brown, yellow, red, green, purple, cyan) and size
# (small, large): its class ids are not interchangeable with these.
SIZES = ("large", "small")
MATERIALS = ("rubber", "metal")
SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
SPLITS = (("train", "train"), ("validation", "val"))  # (TFDS split, release split).
PREPARE_COMMAND = ("python datasets/prepare.py clevr_v1/full --manual_dir={manual_dir} "
                   "[--data_dir=DATA_DIR]")


def _instructions() -> str:
  return (f"Download {DOWNLOAD_URL} (18 GB; project page {HOMEPAGE}) and extract it into the "
          "manual folder, which then holds CLEVR_v1.0/images/{train,val}/CLEVR_{split}_"
          "NNNNNN.png and CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json. For example: "
          f"wget {DOWNLOAD_URL} && unzip CLEVR_v1.0.zip -d MANUAL_DIR\nThen: "
          + PREPARE_COMMAND.format(manual_dir="MANUAL_DIR"))


def locate_files(manual_dir, config=None) -> epath.Path:
  """The CLEVR_v1.0 folder under manual_dir (or manual_dir itself).

  Raises FileNotFoundError naming the URL, the expected files and the command when the scene
  files or the image folders are absent.
  """
  del config  # One config.
  root = epath.Path(manual_dir) if manual_dir else None
  folder = None
  if root is not None:
    folder = root if root.name == "CLEVR_v1.0" else root / "CLEVR_v1.0"
  missing, no_scenes = [], []
  for _, split in SPLITS:
    if folder is None or not (folder / f"images/{split}").exists():
      missing.append(f"CLEVR_v1.0/images/{split}")
    if folder is None or not (folder / f"scenes/CLEVR_{split}_scenes.json").exists():
      no_scenes.append(f"CLEVR_v1.0/scenes/CLEVR_{split}_scenes.json")
  if len(no_scenes) == len(SPLITS):  # Not one scenes file: not a CLEVR release.
    missing += no_scenes
  if missing:
    raise FileNotFoundError(
        f"clevr_v1/full: {', '.join(missing)} not found in {root}.\nOfficial source: "
        f"{HOMEPAGE}; download {DOWNLOAD_URL}\nextract it with `unzip CLEVR_v1.0.zip -d {root}`"
        " (expected files: CLEVR_v1.0/images/{train,val}/CLEVR_{split}_NNNNNN.png, "
        "CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json)\nand prepare with: "
        + PREPARE_COMMAND.format(manual_dir=root))
  return folder


def _class_id(names: tuple[str, ...], value: str, what: str) -> int:
  if value not in names:
    raise ValueError(f"unknown {what} {value!r}; CLEVR has {', '.join(names)}")
  return names.index(value)


def _index_of(filename: str, position: int) -> int:
  match = re.search(r"(\d+)\.png$", filename)
  return int(match.group(1)) if match else position


def scenes_of_split(folder: epath.Path, split: str) -> list[tuple[int, str, dict]]:
  """(image index, image file name, scene) of every example of a release split.

  Scenes with `image_index` and `image_filename` are used as they are; otherwise they are
  paired with the split's png files in sorted name order. Without a scenes file every image
  gets an empty scene (a warning is logged).
  """
  scenes_path = folder / "scenes" / f"CLEVR_{split}_scenes.json"
  if not scenes_path.exists():
    names = sorted(p.name for p in (folder / "images" / split).iterdir()
                   if p.name.endswith(".png"))
    logging.warning("clevr_v1: %s not found; the %d images of %s get empty annotations.",
                    scenes_path, len(names), split)
    return [(_index_of(n, i), n, {"objects": []}) for i, n in enumerate(names)]
  scenes = json.loads(scenes_path.read_text())["scenes"]
  if all("image_index" in sc and "image_filename" in sc for sc in scenes):
    return sorted(((int(sc["image_index"]), sc["image_filename"], sc) for sc in scenes),
                  key=lambda item: item[0])
  names = sorted(p.name for p in (folder / "images" / split).iterdir()
                 if p.name.endswith(".png"))
  if len(names) != len(scenes):
    logging.warning("clevr_v1: %d scenes in %s but %d images in images/%s; pairing the "
                    "first %d in sorted file-name order.", len(scenes), scenes_path,
                    len(names), split, min(len(names), len(scenes)))
  return [(_index_of(n, i), n, sc) for i, (n, sc) in enumerate(zip(names, scenes))]


def read_example(folder: epath.Path, split: str, scene: dict, filename: str | None = None,
                 index: int | None = None) -> dict:
  """One scene of the json and its image, in the builder's feature dict (the file name and
  index default to the scene's `image_filename` and `image_index`)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  filename = scene["image_filename"] if filename is None else filename
  index = scene["image_index"] if index is None else index
  path = folder / "images" / split / filename
  try:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
      image = np.asarray(image.convert("RGB"))
    if image.shape != (HEIGHT, WIDTH, 3):
      raise ValueError(f"expected a {WIDTH}x{HEIGHT} image, got {image.shape}")
    objects = scene["objects"]
    classes = {key: [_class_id(names, o[key], key) for o in objects]
               for key, names in (("size", SIZES), ("material", MATERIALS), ("shape", SHAPES),
                                  ("color", COLORS))}
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Corrupt CLEVR scene {path}: {type(e).__name__}: {e}") from None
  return {
      "image": image,
      "num_objects": np.int32(len(objects)),
      "source_index": np.int64(index),
      "objects": {
          "3d_coords": np.asarray([o["3d_coords"] for o in objects], np.float32).reshape(-1, 3),
          "pixel_coords": np.asarray([o["pixel_coords"] for o in objects],
                                     np.float32).reshape(-1, 3),
          "rotation": np.asarray([o.get("rotation", 0.0) for o in objects], np.float32),
          **classes,
      },
  }


class Builder(tfds.core.GeneratorBasedBuilder):
  """CLEVR v1.0 train and validation scenes with per-object properties."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(
      name="full", description="CLEVR v1.0 train (70k) and validation (15k) scenes.")]
  DEFAULT_BUILDER_CONFIG_NAME = "full"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(HEIGHT, WIDTH, 3)),
            "num_objects": tfds.features.Scalar(np.int32),
            "source_index": tfds.features.Scalar(np.int64),
            "objects": tfds.features.Sequence({
                "3d_coords": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "pixel_coords": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "rotation": tfds.features.Scalar(np.float32),
                "size": tfds.features.ClassLabel(names=SIZES),
                "material": tfds.features.ClassLabel(names=MATERIALS),
                "shape": tfds.features.ClassLabel(names=SHAPES),
                "color": tfds.features.ClassLabel(names=COLORS),
            }),
        }),
        homepage=HOMEPAGE,
        disable_shuffling=True)  # Keep the image index order (train[:512] is a fixed set).

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = locate_files(dl_manager.manual_dir)
    return {name: self._generate_examples(folder, split) for name, split in SPLITS}

  def _generate_examples(self, folder: epath.Path, split: str):
    for index, filename, scene in scenes_of_split(folder, split):
      yield index, read_example(folder, split, scene, filename, index)

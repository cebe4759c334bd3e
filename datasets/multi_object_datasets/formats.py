"""On-disk layout of DeepMind's Multi-Object Datasets (GZIP TFRecord files of tf.train.Example).

Layout facts, all from the reader modules of the public repository
google-deepmind/multi_object_datasets (multi_dsprites.py, tetrominoes.py, clevr_with_masks.py,
objects_room.py) and its README:
  * Every file is one GZIP-compressed TFRecord file.
  * `image` and `mask` (and CLEVR's integer-coded `color`, `material`, `shape`, `size`) are
    string features holding ONE BYTE PER ELEMENT: a FixedLen string feature whose shape is the
    array shape, each element decoded as a single uint8.
  * Masks take the values 0 or 255, one mask per entity; entity 0 is the background.
  * Multi-dSprites stores masks as [H, W, E, 1]; Tetrominoes, CLEVR and Objects Room as
    [E, H, W, 1].
  * `visibility` (float32 [E]) flags the non-null entities and counts the background entity.
  * Objects Room has no attributes and no `visibility`; its first four masks are the sky, the
    floor and the two halves of the wall.
  * Multi-dSprites `binarized` images are grayscale ([H, W, 1], colour [E, 1]).
Sizes (H x W, entities E): Multi-dSprites 64x64 (binarized 4, colored_on_grayscale 6,
colored_on_colored 5), Tetrominoes 35x35 (4), CLEVR with masks 240x320 (11), Objects Room 64x64
(train 7, six_objects 10, empty_room 4, identical_color 10).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

URL = "https://storage.googleapis.com/multi-object-datasets"
BROWSER_URL = "https://console.cloud.google.com/storage/browser/multi-object-datasets"
REPO_URL = "https://github.com/google-deepmind/multi_object_datasets"


@dataclasses.dataclass(frozen=True)
class RecordFormat:
  """Feature layout of one TFRecord file.

  Attributes:
    folder: the file's folder in the bucket (also accepted under the manual dir).
    filename: the file's name.
    height, width, channels: image shape.
    entities: E, number of masks per example (background included).
    mask_entity_last: masks stored [H, W, E, 1] (Multi-dSprites) instead of [E, H, W, 1].
    num_background: leading entities that are background (1; 4 for Objects Room).
    float_attributes: per-entity float32 attributes, name -> trailing shape.
    byte_attributes: per-entity integer codes stored one byte per element.
    has_visibility: whether the file has a `visibility` feature.
  """
  folder: str
  filename: str
  height: int
  width: int
  channels: int
  entities: int
  mask_entity_last: bool = False
  num_background: int = 1
  float_attributes: tuple[tuple[str, tuple[int, ...]], ...] = ()
  byte_attributes: tuple[str, ...] = ()
  has_visibility: bool = True

  @property
  def url(self) -> str:
    return f"{URL}/{self.folder}/{self.filename}"

  @property
  def relative_path(self) -> str:
    return f"{self.folder}/{self.filename}"

  def feature_spec(self) -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io.parse_single_example` spec of one record."""
    h, w, c, e = self.height, self.width, self.channels, self.entities
    mask_shape = [h, w, e, 1] if self.mask_entity_last else [e, h, w, 1]
    spec = {"image": tf.io.FixedLenFeature([h, w, c], tf.string),
            "mask": tf.io.FixedLenFeature(mask_shape, tf.string)}
    for name, shape in self.float_attributes:
      spec[name] = tf.io.FixedLenFeature([e, *shape], tf.float32)
    for name in self.byte_attributes:
      spec[name] = tf.io.FixedLenFeature([e], tf.string)
    if self.has_visibility:
      spec["visibility"] = tf.io.FixedLenFeature([e], tf.float32)
    return spec


def _dsprites(variant: str, entities: int, channels: int) -> RecordFormat:
  return RecordFormat(
      folder="multi_dsprites", filename=f"multi_dsprites_{variant}.tfrecords", height=64,
      width=64, channels=channels, entities=entities, mask_entity_last=True,
      float_attributes=(("x", ()), ("y", ()), ("shape", ()), ("color", (channels,)),
                        ("orientation", ()), ("scale", ())))


def _objects_room(filename: str, entities: int) -> RecordFormat:
  return RecordFormat(folder="objects_room", filename=filename, height=64, width=64,
                      channels=3, entities=entities, num_background=4, has_visibility=False)


FORMATS = {
    "multi_dsprites_binarized": _dsprites("binarized", 4, 1),
    "multi_dsprites_colored_on_grayscale": _dsprites("colored_on_grayscale", 6, 3),
    "multi_dsprites_colored_on_colored": _dsprites("colored_on_colored", 5, 3),
    "tetrominoes": RecordFormat(
        folder="tetrominoes", filename="tetrominoes_train.tfrecords", height=35, width=35,
        channels=3, entities=4,
        float_attributes=(("x", ()), ("y", ()), ("shape", ()), ("color", (3,)))),
    "clevr_with_masks": RecordFormat(
        folder="clevr_with_masks", filename="clevr_with_masks_train.tfrecords", height=240,
        width=320, channels=3, entities=11,
        float_attributes=(("x", ()), ("y", ()), ("z", ()), ("pixel_coords", (3,)),
                          ("rotation", ())),
        byte_attributes=("size", "material", "shape", "color")),
    "objects_room_train": _objects_room("objects_room_train.tfrecords", 7),
    "objects_room_six_objects": _objects_room("objects_room_test_six_objects.tfrecords", 10),
    "objects_room_empty_room": _objects_room("objects_room_test_empty_room.tfrecords", 4),
    "objects_room_identical_color": _objects_room(
        "objects_room_test_identical_color.tfrecords", 10),
}


def parse_record(serialized: tf.Tensor, fmt: RecordFormat) -> dict[str, tf.Tensor]:
  """Parses one serialized record into the object-discovery schema (graph-friendly).

  Returns:
    image uint8 [H, W, 3] (grayscale tiled to RGB), segmentation uint8 [H, W, 1] (0 =
    background, k = the k-th visible object in entity order), num_objects int32 [],
    present bool [E] (visible non-background entities) and every attribute of the file with
    its entity axis first (float32, or int32 for the byte-coded ones; colour tiled to 3).
  """
  raw = tf.io.parse_single_example(serialized, fmt.feature_spec())
  image = tf.squeeze(tf.io.decode_raw(raw["image"], tf.uint8), -1)  # [H, W, C]
  if fmt.channels == 1:
    image = tf.tile(image, [1, 1, 3])
  masks = tf.squeeze(tf.io.decode_raw(raw["mask"], tf.uint8), [-2, -1])
  if fmt.mask_entity_last:
    masks = tf.transpose(masks, [2, 0, 1])  # [H, W, E] -> [E, H, W]
  entity = tf.argmax(masks, axis=0, output_type=tf.int32)  # [H, W]; all-zero pixels -> 0.
  is_object = tf.range(fmt.entities) >= fmt.num_background
  if fmt.has_visibility:
    visible = raw["visibility"] > 0.5
  else:
    visible = tf.reduce_any(masks > 0, axis=[1, 2])
  present = tf.logical_and(visible, is_object)  # [E]
  rank = tf.cumsum(tf.cast(present, tf.int32))
  label_of_entity = tf.where(present, rank, tf.zeros_like(rank))  # [E]
  segmentation = tf.cast(tf.gather(label_of_entity, entity), tf.uint8)[..., None]
  out = {"image": image, "segmentation": segmentation,
         "num_objects": tf.reduce_sum(tf.cast(present, tf.int32)), "present": present}
  for name, shape in fmt.float_attributes:
    value = raw[name]
    if name == "color" and shape == (1,):
      value = tf.tile(value, [1, 3])
    out[name] = value
  for name in fmt.byte_attributes:
    out[name] = tf.cast(tf.squeeze(tf.io.decode_raw(raw[name], tf.uint8), -1), tf.int32)
  return out

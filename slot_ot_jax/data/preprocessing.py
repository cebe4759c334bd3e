"""Small composable preprocessing ops for object-discovery examples (TensorFlow, per example).

Every op takes an example dict and returns a new dict; fields it does not know pass through.
Fields, for one example (no batch axis):
  image         uint8 [H, W, 3] (float32 [H, W, 3] in [-1, 1] after `scale_image`)
  segmentation  uint8 [H, W, 1] index map, 0 = background, 1..n the objects
  num_objects   int32 []        objects in the scene, background excluded

The papers' recipes are compositions of these ops (see `slot_ot_jax.data.input_pipeline`):
  CLEVR (SA, 002 §5.8):   crop rows 29:221, cols 64:256 -> resize 128x128 -> scale to [-1, 1]
  ClevrTex (official):    crop rows 24:216, cols 64:256 -> resize 128 (or 64, MESH App. F.3)
  CLEVR (003 §5.1, E):    as SA plus a random horizontal flip during training
Images are resized bilinearly, segmentations with nearest neighbour, so labels stay labels.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

Example = Mapping[str, tf.Tensor]

# Where a centre crop is given as (top, bottom, left, right): rows top:bottom, cols left:right.
Crop = Sequence[int]


def crop(example: Example, box: Crop) -> dict[str, tf.Tensor]:
  """Crops `image` and `segmentation` to rows box[0]:box[1] and cols box[2]:box[3].

  Args:
    example: image [H, W, C], segmentation [H, W, 1] (either may be absent).
    box: (top, bottom, left, right) in pixels, bottom/right exclusive.

  Returns:
    The example with image [bottom - top, right - left, C] and segmentation likewise.
  """
  top, bottom, left, right = (int(v) for v in box)
  if not (0 <= top < bottom and 0 <= left < right):
    raise ValueError(f"Invalid crop box {tuple(box)}; expected (top, bottom, left, right).")
  out = dict(example)
  for key in ("image", "segmentation"):
    if key in out:
      shape = out[key].shape
      if shape.rank is not None and shape[0] is not None and (
          bottom > shape[0] or right > shape[1]):
        raise ValueError(f"Crop box {tuple(box)} exceeds the {key} size {shape[:2]}.")
      out[key] = out[key][top:bottom, left:right]
  return out


def resize(example: Example, size: Sequence[int], antialias: bool = False) -> dict[str, tf.Tensor]:
  """Resizes `image` bilinearly and `segmentation` with nearest neighbour to `size`.

  Args:
    example: image uint8 [H, W, 3], segmentation uint8 [H, W, 1].
    size: (height, width) of the output.
    antialias: low-pass the image when downsampling (SA's reference code does not).

  Returns:
    The example with image uint8 [h, w, 3] (rounded, clipped) and segmentation uint8 [h, w, 1].
  """
  size = (int(size[0]), int(size[1]))
  out = dict(example)
  if "image" in out:
    image = out["image"]
    if tuple(image.shape[:2]) != size:
      resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear",
                                antialias=antialias)
      out["image"] = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), image.dtype)
  if "segmentation" in out:
    seg = out["segmentation"]
    if tuple(seg.shape[:2]) != size:
      out["segmentation"] = tf.image.resize(seg, size, method="nearest")
  return out


def scale_image(example: Example) -> dict[str, tf.Tensor]:
  """Maps the uint8 image [H, W, 3] to float32 in [-1, 1] (x / 255 * 2 - 1, 002 §5.8)."""
  out = dict(example)
  out["image"] = tf.cast(example["image"], tf.float32) / 127.5 - 1.0
  return out


def max_objects_predicate(max_objects: int):
  """Returns a `tf.data` predicate keeping examples with num_objects <= max_objects.

  The count excludes the background: CLEVR6 is `max_objects_predicate(6)`, i.e. at most seven
  visible entities in the multi_object_datasets files, whose entity 0 is the background.
  """
  max_objects = int(max_objects)

  def keep(example: Example) -> tf.Tensor:
    return tf.cast(example["num_objects"], tf.int32) <= max_objects

  return keep


def random_flip(example: Example, seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Flips image and segmentation left-right together with probability 1/2.

  Args:
    example: image [H, W, C], segmentation [H, W, 1].
    seed: int32/int64 [2], a stateless seed: the same seed gives the same decision, so a
      resumed pipeline flips exactly the examples the original run flipped.
  """
  seed = tf.cast(seed, tf.int64)
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  out = dict(example)
  for key in ("image", "segmentation"):
    if key in out:
      value = out[key]
      out[key] = tf.cond(flip, lambda v=value: tf.reverse(v, axis=[1]), lambda v=value: v)
  return out


def model_inputs(example: Example) -> dict[str, tf.Tensor]:
  """Keeps what models and metrics read, in their dtypes.

  Returns:
    {"image": float32 [H, W, 3] (as given), "segmentation": int32 [H, W], "num_objects": int32 []}.
  """
  return {
      "image": tf.cast(example["image"], tf.float32),
      "segmentation": tf.cast(tf.squeeze(example["segmentation"], axis=-1), tf.int32),
      "num_objects": tf.cast(example["num_objects"], tf.int32),
  }

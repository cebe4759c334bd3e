"""Image grids of slot decompositions for TensorBoard (clu metric writers) and PNG files.

numpy and PIL only; accepts numpy or JAX arrays and returns `uint8 [H, W, 3]` arrays. A clu
writer takes a batch of images, so pass `grid[None]`:

  grid = visualize.grid_from_outputs(batch["image"], outputs, state["intermediates"])
  writer.write_images(step, {"slots": grid[None]})
  visualize.save_png(path, grid)

Each grid row shows one example: the input, the reconstruction, the hard segmentation (each
pixel coloured by its winning slot, supplement Sec. 5.3), one tile per slot (its alpha mask
applied to its colours, or to the input, or the mask alone) and, when given, one tile per
slot of the last iteration's attention reshaped to the encoder's feature grid (each map
scaled to its own maximum, upsampled to the image size).
"""
import colorsys
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

MASK_MODES = ("rgb", "image", "mask")


def to_uint8(images: Any, value_range: Tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Maps values from `value_range` to [0, 255] (clipped), any shape -> uint8."""
  low, high = value_range
  x = (np.asarray(images, np.float32) - low) / (high - low)
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def slot_colors(num_slots: int) -> np.ndarray:
  """`[num_slots, 3]` uint8 distinct colours (hues spread evenly, fixed order)."""
  hues = (np.arange(num_slots) * 0.618033988749895) % 1.0  # golden-ratio hue steps
  rgb = [colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]
  return np.round(np.asarray(rgb).reshape(num_slots, 3) * 255).astype(np.uint8)


def segmentation_image(masks: Any) -> np.ndarray:
  """`masks [K, H, W, 1]` (or `[K, H, W]`) -> `[H, W, 3]` uint8, argmax slot's colour."""
  m = np.asarray(masks, np.float32)
  if m.ndim == 4:
    m = m[..., 0]
  return slot_colors(m.shape[0])[np.argmax(m, axis=0)]


def infer_feature_shape(num_inputs: int, height: int, width: int) -> Tuple[int, int]:
  """The (h, w) grid with h * w = num_inputs and the image's aspect ratio h / w = H / W."""
  for h in range(1, num_inputs + 1):
    if num_inputs % h == 0 and h * width == (num_inputs // h) * height:
      return h, num_inputs // h
  raise ValueError(f"cannot lay {num_inputs} inputs on a grid shaped like a {height}x{width} "
                   "image; pass feature_shape")


def _resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of `[M, h, w]` float maps to `[M, height, width]`."""
  if maps.shape[1:] == (height, width):
    return maps
  return np.stack([np.asarray(Image.fromarray(m.astype(np.float32))  # float32 -> mode "F"
                              .resize((width, height), Image.NEAREST)) for m in maps])


def attention_maps(attn: Any, height: int, width: int,
                   feature_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """`attn [N, K]` -> `[K, height, width]` in [0, 1], each map divided by its maximum.

  The N inputs are the encoder's feature grid flattened row-major (`feature_shape`,
  inferred from N and the image's aspect ratio when not given).
  """
  a = np.asarray(attn, np.float32)
  h, w = feature_shape or infer_feature_shape(a.shape[0], height, width)
  maps = a.T.reshape(a.shape[1], h, w)  # [N, K] -> [K, h, w]
  maps = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)
  return _resize(maps, height, width)


def _slot_tiles(image01, masks, rgb01, mode):
  """Per-slot tiles `[K, H, W, 3]` in [0, 1] for one example."""
  m = np.asarray(masks, np.float32)
  if m.ndim == 3:
    m = m[..., None]  # [K, H, W] -> [K, H, W, 1]
  if mode == "mask":
    return np.repeat(m, 3, axis=-1)
  if mode == "rgb":
    if rgb01 is None:
      raise ValueError("mode='rgb' needs the per-slot colours `rgb`")
    content = rgb01
  else:
    content = np.broadcast_to(image01[None], m.shape[:3] + (image01.shape[-1],))
  return m * content + (1.0 - m)  # white where the slot is absent


def _tile_grid(rows: Sequence[Sequence[np.ndarray]], padding: int, pad_value: int):
  """Lays equally sized `[H, W, 3]` uint8 tiles on a grid with `padding` pixels between."""
  height, width = rows[0][0].shape[:2]
  cols = max(len(r) for r in rows)
  out = np.full((padding + len(rows) * (height + padding),
                 padding + cols * (width + padding), 3), pad_value, np.uint8)
  for i, row in enumerate(rows):
    for j, tile in enumerate(row):
      y, x = padding + i * (height + padding), padding + j * (width + padding)
      out[y:y + height, x:x + width] = tile
  return out


def slot_grid(image: Any, reconstruction: Any, masks: Any, rgb: Optional[Any] = None,
              attn: Optional[Any] = None, *, max_examples: int = 4, mode: str = "rgb",
              feature_shape: Optional[Tuple[int, int]] = None,
              value_range: Tuple[float, float] = (-1.0, 1.0), padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
  """A grid with one row per example.

  Args:
    image: [B, H, W, 3] inputs, values in `value_range`.
    reconstruction: [B, H, W, 3], values in `value_range`.
    masks: [B, K, H, W, 1] alpha masks (softmax over slots).
    rgb: optional [B, K, H, W, 3] per-slot colours (needed for mode "rgb").
    attn: optional [B, N, K] attention of the last iteration.
    max_examples: rows drawn (the first examples of the batch).
    mode: slot tiles show "rgb" (mask * slot colours on white), "image" (mask * input on
      white) or "mask" (the mask in grey levels).
    feature_shape: (h, w) of the attention grid; inferred when None.
    value_range: range of image values.
    padding, pad_value: gap between tiles in pixels and its grey level.

  Returns:
    uint8 [rows * (H + padding) + padding, cols * (W + padding) + padding, 3] with
    cols = 3 + K (+ K with attn).
  """
  if mode not in MASK_MODES:
    raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")
  image = np.asarray(image, np.float32)
  height, width = image.shape[1:3]
  low, high = value_range
  to01 = lambda x: np.clip((np.asarray(x, np.float32) - low) / (high - low), 0.0, 1.0)
  rows = []
  for b in range(min(max_examples, image.shape[0])):
    row = [to_uint8(image[b], value_range), to_uint8(reconstruction[b], value_range),
           segmentation_image(masks[b])]
    tiles = _slot_tiles(to01(image[b]), masks[b], None if rgb is None else to01(rgb[b]), mode)
    row += [to_uint8(t, (0.0, 1.0)) for t in tiles]
    if attn is not None:
      maps = attention_maps(attn[b], height, width, feature_shape)
      row += [to_uint8(np.repeat(m[..., None], 3, axis=-1), (0.0, 1.0)) for m in maps]
    rows.append(row)
  return _tile_grid(rows, padding, pad_value)


def last_attention(intermediates: Optional[Mapping[str, Any]],
                   path: Sequence[str] = ("slot_attention", "attn")) -> Optional[np.ndarray]:
  """The last sown attention `[B, N, K]` under `intermediates[path...]`, or None."""
  node = intermediates
  if node is not None and "intermediates" in node:  # a whole mutable-state dict
    node = node["intermediates"]
  for key in path:
    if node is None or key not in node:
      return None
    node = node[key]
  return None if node is None or len(node) == 0 else np.asarray(node[-1])


def grid_from_outputs(image: Any, outputs: Mapping[str, Any],
                      intermediates: Optional[Mapping[str, Any]] = None,
                      **kwargs) -> np.ndarray:
  """`slot_grid` from `ObjectDiscoveryAutoencoder` outputs and its sown intermediates.

  `intermediates` is the "intermediates" collection of the apply call (the attention of
  the last iteration is drawn); other keyword arguments go to `slot_grid`.
  """
  return slot_grid(image, outputs["reconstruction"], outputs["masks"], outputs.get("rgb"),
                   last_attention(intermediates), **kwargs)


def save_png(path: str, array: Any) -> None:
  """Writes a uint8 `[H, W, 3]` (or `[H, W]`) array as a PNG, creating the directory."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ValueError(f"expected uint8, got {array.dtype}; use to_uint8 first")
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  Image.fromarray(array).save(path, format="PNG")


def save_figure(fig, path: str) -> None:
  """Writes a matplotlib figure as a PNG (creating its folder) and closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)

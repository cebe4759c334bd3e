"""Tests of the image grids (slot_ot_jax/evaluation/visualize.py)."""
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from slot_ot_jax.evaluation import visualize as V


def _example(batch=3, k=4, height=12, width=16, n_side=(3, 4), seed=0):
  rng = np.random.default_rng(seed)
  image = rng.uniform(-1, 1, (batch, height, width, 3)).astype(np.float32)
  logits = rng.normal(size=(batch, k, height, width, 1))
  masks = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  rgb = rng.uniform(-1, 1, (batch, k, height, width, 3)).astype(np.float32)
  reconstruction = (masks * rgb).sum(axis=1)
  attn = rng.uniform(size=(batch, n_side[0] * n_side[1], k)).astype(np.float32)
  return image, reconstruction, masks, rgb, attn


class GridTest(parameterized.TestCase):

  @parameterized.parameters("rgb", "image", "mask")
  def test_grid_shape(self, mode):
    image, recon, masks, rgb, attn = _example()
    grid = V.slot_grid(image, recon, masks, rgb, attn, max_examples=2, mode=mode, padding=2)
    cols = 3 + 4 + 4
    self.assertEqual(grid.dtype, np.uint8)
    self.assertEqual(grid.shape, (2 + 2 * (12 + 2), 2 + cols * (16 + 2), 3))
    np.testing.assert_array_equal(grid[2:14, 2:18], V.to_uint8(image[0]))  # first tile
    no_attn = V.slot_grid(image, recon, masks, rgb, max_examples=5, mode=mode, padding=0)
    self.assertEqual(no_attn.shape, (3 * 12, 7 * 16, 3))

  def test_attention_maps(self):
    attn = np.zeros((12, 2), np.float32)
    attn[5, 0] = 0.5    # row 1, column 1 of a 3 x 4 grid
    attn[:, 1] = 0.25
    maps = V.attention_maps(attn, 12, 16)  # grid inferred: 3 x 4, upsampled x4
    self.assertEqual(maps.shape, (2, 12, 16))
    np.testing.assert_allclose(maps[0, 4:8, 4:8], 1.0)
    self.assertEqual(float(maps[0].sum()), 16.0)
    np.testing.assert_allclose(maps[1], 1.0)
    self.assertEqual(V.infer_feature_shape(35 * 35, 35, 35), (35, 35))
    with self.assertRaises(ValueError):
      V.infer_feature_shape(10, 12, 16)
    self.assertEqual(V.attention_maps(attn, 7, 5, feature_shape=(4, 3)).shape, (2, 7, 5))

  def test_segmentation_colours(self):
    masks = np.zeros((3, 2, 2, 1))
    masks[0, 0, 0] = masks[1, 0, 1] = masks[2, 1, :] = 1
    seg = V.segmentation_image(masks)
    colors = V.slot_colors(3)
    self.assertLen({tuple(c) for c in colors}, 3)
    np.testing.assert_array_equal(seg[0, 0], colors[0])
    np.testing.assert_array_equal(seg[0, 1], colors[1])
    np.testing.assert_array_equal(seg[1, 1], colors[2])

  def test_grid_from_outputs_and_png_round_trip(self):
    image, recon, masks, rgb, attn = _example(batch=2)
    outputs = dict(reconstruction=recon, masks=masks, rgb=rgb)
    state = {"intermediates": {"slot_attention": {"attn": (attn * 0, attn)}}}
    grid = V.grid_from_outputs(image, outputs, state)
    expected = V.slot_grid(image, recon, masks, rgb, attn)
    np.testing.assert_array_equal(grid, expected)
    self.assertEqual(V.last_attention(None), None)
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "sub", "grid.png")
      V.save_png(path, grid)
      with Image.open(path) as loaded:
        self.assertEqual(loaded.format, "PNG")
        np.testing.assert_array_equal(np.asarray(loaded), grid)
      with self.assertRaises(ValueError):
        V.save_png(path, grid.astype(np.float32))

  def test_to_uint8(self):
    np.testing.assert_array_equal(V.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])),
                                  [0, 0, 128, 255, 255])


if __name__ == "__main__":
  absltest.main()

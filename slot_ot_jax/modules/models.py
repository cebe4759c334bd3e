"""Image encoders, position embedding, spatial-broadcast decoders and whole models (Linen).

Architectures follow the Slot Attention supplement (Locatello et al., 2020, App. 5.1-5.4,
Tables 3-7) and, for ClevrTex, App. F.3 of the MESH paper (Zhang et al., 2023):

  dataset          image     encoder convs       features  decoder                      slots
  CLEVR6           128x128   4 x 5x5, 64 ch      64        broadcast 8x8, 4 x stride-2    64
                                                           + 1 stride-1 (64 ch), 3x3 -> 4
  Multi-dSprites   64x64     4 x 5x5, 32 ch      32        broadcast 64x64, 3 x 5x5 32 ch,  64
  Tetrominoes      35x35                                   3x3 -> 4 (full resolution)
  ClevrTex (MESH)  64x64     4 x 5x5, 64 ch      64        as Multi-dSprites with 64 ch    128
  CLEVR property   128x128   strides 1,2,2,1 (Table 3, "*") -> 32x32 features; MLP head

`object_discovery_modules(dataset)` builds these encoder/decoder pairs. Axes: images
`[B, H, W, C]`, features `[B, N, D]` with N = h*w flattened row-major, slots `[B, K, D]`.
All convolutions use SAME padding and biases (supplement, Sec. 5.1). The decoder's
"deconv" layers are transposed convolutions, as in the reference implementation.

Mixed precision: the `dtype` field of the encoder, the decoder and the position embedding is
their computation dtype (e.g. bfloat16 on GPU/TPU); parameters stay float32, and
`ObjectDiscoveryAutoencoder` composites the decoded slots and computes the loss in float32.

Initialisation: the `framework_defaults` field of every module with parameters ("flax",
"torch", "keras" or "ocl") selects whose initialisers and LayerNorm epsilon its layers use
(`slot_ot_jax/modules/defaults.py`).
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
from flax.linen.dtypes import promote_dtype
import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax.modules import defaults

Array = jax.Array


def build_grid(height: int, width: int) -> Array:
  """`[height, width, 4]` ramps: y and x from 0 to 1 (both ends included), then 1-y, 1-x.

  Each entry gives the normalised distance of a cell to the four borders (supplement,
  Sec. 5.2).
  """
  ys = jnp.linspace(0.0, 1.0, height)
  xs = jnp.linspace(0.0, 1.0, width)
  y, x = jnp.meshgrid(ys, xs, indexing="ij")
  grid = jnp.stack([y, x], axis=-1)
  return jnp.concatenate([grid, 1.0 - grid], axis=-1)


class SoftPositionEmbedding(nn.Module):
  """Adds a learned linear projection of the 4-ramp grid to a feature map.

  `inputs [B, H, W, C] -> [B, H, W, C]`; the Dense layer (with bias) maps 4 -> C and
  computes in `dtype`.
  """
  dtype: Any = jnp.float32
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    height, width, channels = inputs.shape[-3:]
    grid = build_grid(height, width).astype(inputs.dtype)
    return inputs + nn.Dense(channels, dtype=self.dtype, name="dense",
                             **defaults.dense(self.framework_defaults, 4))(grid)


class CNNEncoder(nn.Module):
  """Conv backbone, position embedding, flatten, LayerNorm and per-location MLP.

  `image [B, H, W, C] -> features [B, h*w, out_size]` with h, w = H, W divided by the
  product of `strides`.

  Attributes:
    channels: output channels of the 5x5 convolutions (each followed by ReLU).
    strides: stride of each convolution (1s for object discovery; (1, 2, 2, 1) for CLEVR
      property prediction).
    kernel_size: convolution kernel size.
    mlp_size: hidden width of the per-location MLP (ReLU).
    out_size: output width of the per-location MLP (linear).
    dtype: computation dtype (parameters stay float32).
    framework_defaults: initialisers and LayerNorm epsilon (`defaults`).
  """
  channels: Sequence[int] = (64, 64, 64, 64)
  strides: Sequence[int] = (1, 1, 1, 1)
  kernel_size: int = 5
  mlp_size: int = 64
  out_size: int = 64
  dtype: Any = jnp.float32
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, image: Array) -> Array:
    if len(self.channels) != len(self.strides):
      raise ValueError(f"channels {self.channels} and strides {self.strides} differ in length")
    style = self.framework_defaults
    kernel = (self.kernel_size, self.kernel_size)
    x = image
    for i, (features, stride) in enumerate(zip(self.channels, self.strides)):
      x = nn.Conv(features, kernel, strides=(stride, stride), padding="SAME", dtype=self.dtype,
                  name=f"conv_{i}", **defaults.conv(style, x.shape[-1], kernel))(x)
      x = nn.relu(x)
    x = SoftPositionEmbedding(dtype=self.dtype, framework_defaults=style, name="position")(x)
    batch, height, width, features = x.shape
    x = x.reshape(batch, height * width, features)  # [B, h, w, D] -> [B, N, D]
    x = nn.LayerNorm(dtype=self.dtype, name="norm", **defaults.layer_norm(style))(x)
    # The per-location MLP is a `build_mlp` MLP in OCL (zero biases under "ocl").
    x = nn.relu(nn.Dense(self.mlp_size, dtype=self.dtype, name="mlp_hidden",
                         **defaults.dense(style, features, mlp_block=True))(x))
    return nn.Dense(self.out_size, dtype=self.dtype, name="mlp_out",
                    **defaults.dense(style, self.mlp_size, mlp_block=True))(x)


def _same_taps(height: int, width: int, kernel_size: Tuple[int, int]) -> np.ndarray:
  """[H, W, kh, kw] 0/1: which taps of a stride-1 "SAME" transposed convolution (lax's
  padding: ceil((k - 1) / 2) before) read a pixel inside the image at each output pixel."""
  masks = []
  for size, k in zip((height, width), kernel_size):
    before = -(-(k - 1) // 2)
    pos = np.arange(size)[:, None] + np.arange(k)[None, :] - before     # [size, k]
    masks.append(((pos >= 0) & (pos < size)).astype(np.float32))
  return masks[0][:, None, :, None] * masks[1][None, :, None, :]


class _BroadcastFirstLayer(nn.Module):
  """The decoder's first layer (stride 1, "SAME") applied to broadcast slots, without the copies.

  `slots [M, D], position [1, h, w, D] -> [M, h, w, features]`, equal (up to float rounding)
  to `nn.ConvTranspose(features, kernel_size, padding="SAME")` applied to the broadcast
  input `slots[:, None, None, :] + position`, and with the same parameters (`kernel [kh, kw,
  D, features]`, `bias [features]`, same names, shapes and initialisers). The layer is
  linear, so it splits into the slot term, in which every pixel sees the sum of the kernel
  taps that fall inside the image (`taps [h, w, kh, kw]`), and the position term, one
  convolution shared by all M slots: M h w D F multiply-adds for the slots instead of
  M h w D F kh kw, and no [M, h, w, D] tensor. The reference codes broadcast and convolve.
  """
  features: int
  kernel_size: Tuple[int, int]
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()  # nn.ConvTranspose's defaults
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, slots: Array, position: Array) -> Array:
    d = slots.shape[-1]
    kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (d, self.features),
                        jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    slots, position, kernel, bias = promote_dtype(slots, position, kernel, bias, dtype=self.dtype)
    height, width = position.shape[1:3]
    taps = jnp.asarray(_same_taps(height, width, self.kernel_size), kernel.dtype)
    summed = jnp.einsum("hwij,ijdf->hwdf", taps, kernel)                  # [h, w, D, F]
    shared = jax.lax.conv_transpose(position, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.einsum("md,hwdf->mhwf", slots, summed) + shared + bias


class SpatialBroadcastDecoder(nn.Module):
  """Slot-wise spatial broadcast decoder (Watters et al., 2019), shared across slots.

  `slots [..., D] -> [..., H, W, out_channels]` with (H, W) = broadcast_resolution times
  the product of `strides`. Each slot is tiled on the broadcast grid, gets the position
  embedding, then goes through transposed convolutions with ReLU and a final linear
  `out_kernel_size` layer; the last channel is the alpha-mask logit, the others the colour.

  Attributes:
    broadcast_resolution: (height, width) of the initial grid: (8, 8) for CLEVR, the image
      size for Multi-dSprites, Tetrominoes and ClevrTex.
    channels: output channels of the hidden layers.
    strides: their strides: (2, 2, 2, 2, 1) for CLEVR, 1s at full resolution.
    kernel_size: hidden kernel size.
    out_kernel_size: kernel size of the output layer.
    out_channels: image channels + 1 (alpha logit).
    dtype: computation dtype (parameters stay float32).
    framework_defaults: initialisers (`defaults`; PyTorch's ConvTranspose2d fan-in counts
      the output channels).
    fold_broadcast: when the first layer has stride 1, compute it without materialising the
      broadcast slots (`_BroadcastFirstLayer`: same parameters, same outputs up to float
      rounding, about 1/(kh kw) of that layer's multiply-adds). False broadcasts and
      convolves as the reference codes do.
  """
  broadcast_resolution: Tuple[int, int] = (8, 8)
  channels: Sequence[int] = (64, 64, 64, 64, 64)
  strides: Sequence[int] = (2, 2, 2, 2, 1)
  kernel_size: int = 5
  out_kernel_size: int = 3
  out_channels: int = 4
  dtype: Any = jnp.float32
  framework_defaults: str = "flax"
  fold_broadcast: bool = True

  @property
  def output_resolution(self) -> Tuple[int, int]:
    scale = 1
    for stride in self.strides:
      scale *= stride
    return (self.broadcast_resolution[0] * scale, self.broadcast_resolution[1] * scale)

  @nn.compact
  def __call__(self, slots: Array) -> Array:
    if len(self.channels) != len(self.strides):
      raise ValueError(f"channels {self.channels} and strides {self.strides} differ in length")
    lead, dim = slots.shape[:-1], slots.shape[-1]
    height, width = self.broadcast_resolution
    style = self.framework_defaults
    kernel = (self.kernel_size, self.kernel_size)
    x = slots.reshape(-1, dim)                                             # [M, D]
    position = SoftPositionEmbedding(dtype=self.dtype, framework_defaults=style, name="position")
    first = 0
    if self.fold_broadcast and self.channels and self.strides[0] == 1:
      pos = position(jnp.zeros((1, height, width, dim), self.dtype))        # [1, h, w, D]
      x = _BroadcastFirstLayer(self.channels[0], kernel, dtype=self.dtype, name="deconv_0",
                               **defaults.conv_transpose(style, self.channels[0], kernel)
                               )(x.astype(self.dtype), pos)
      x = nn.relu(x)
      first = 1
    else:
      x = jnp.broadcast_to(x[:, None, None, :], (x.shape[0], height, width, dim))
      x = position(x.astype(self.dtype))                                    # [M, h, w, D]
    for i, (features, stride) in enumerate(zip(self.channels, self.strides)):
      if i < first:
        continue
      x = nn.ConvTranspose(features, kernel, strides=(stride, stride), padding="SAME",
                           dtype=self.dtype, name=f"deconv_{i}",
                           **defaults.conv_transpose(style, features, kernel))(x)
      x = nn.relu(x)
    out_kernel = (self.out_kernel_size, self.out_kernel_size)
    x = nn.ConvTranspose(self.out_channels, out_kernel, padding="SAME", dtype=self.dtype,
                         name="deconv_out",
                         **defaults.conv_transpose(style, self.out_channels, out_kernel))(x)
    return x.reshape(lead + x.shape[1:])


def object_discovery_modules(dataset: str, resolution: Optional[Tuple[int, int]] = None
                             ) -> Tuple[CNNEncoder, SpatialBroadcastDecoder]:
  """Encoder and decoder of the papers for `dataset`.

  Args:
    dataset: "clevr" (128x128, 8x8 broadcast), "multi_dsprites" (64x64), "tetrominoes"
      (35x35) or "clevrtex" (64x64, MESH App. F.3: 64 channels).
    resolution: image (height, width) for the full-resolution decoders; defaults to the
      dataset's. The CLEVR decoder always outputs 8 * 16 = 128.

  Returns:
    (CNNEncoder, SpatialBroadcastDecoder), unbound modules.
  """
  full_resolution = {"multi_dsprites": ((64, 64), 32), "tetrominoes": ((35, 35), 32),
                     "clevrtex": ((64, 64), 64)}
  if dataset == "clevr":
    if resolution not in (None, (128, 128)):
      raise ValueError(f"the CLEVR decoder outputs 128x128, not {resolution}")
    return CNNEncoder(), SpatialBroadcastDecoder()
  if dataset not in full_resolution:
    raise ValueError(f"unknown dataset {dataset!r}; known: clevr, "
                     f"{', '.join(sorted(full_resolution))}")
  default_resolution, width = full_resolution[dataset]
  encoder = CNNEncoder(channels=(width,) * 4, mlp_size=width, out_size=width)
  decoder = SpatialBroadcastDecoder(broadcast_resolution=tuple(resolution or default_resolution),
                                    channels=(width,) * 3, strides=(1, 1, 1))
  return encoder, decoder


def alpha_composite(decoded: Array, slot_axis: int) -> Dict[str, Array]:
  """Softmax over slots of the alpha logits, then the mask-weighted sum of the colours.

  `decoded [..., K, ..., H, W, C + 1]` (K at `slot_axis`, the last channel the alpha logit)
  -> dict(reconstruction [..., H, W, C] (K summed out), rgb [..., C], masks [..., 1],
  mask_logits [..., 1]). The logit channel is taken as `decoded[..., -1]` and the unit axis
  added after the softmax: XLA:CPU ran the same computation on the `[..., -1:]` slice about
  10x slower (forward + backward, shapes model, benchmarks/step_profile.py).
  """
  rgb, logits = decoded[..., :-1], decoded[..., -1]
  masks = jax.nn.softmax(logits, axis=slot_axis)[..., None]
  reconstruction = jnp.sum(masks * rgb, axis=slot_axis)
  return dict(reconstruction=reconstruction, rgb=rgb, masks=masks, mask_logits=logits[..., None])


class ObjectDiscoveryAutoencoder(nn.Module):
  """Encoder -> slot attention -> slot-wise decoder -> alpha compositing.

  Attributes:
    encoder: maps `image [B, H, W, C]` to `features [B, N, D]` (e.g. `CNNEncoder`).
    decoder: maps `slots [M, D_slot]` to `[M, H, W, C + 1]` (e.g. `SpatialBroadcastDecoder`).
    slot_attention: maps `features` to `slots [B, K, D_slot]`; called as
      `slot_attention(features, train=train, num_slots=num_slots)`. It may draw from the
      RNG streams "slots" and "mesh" and sow its attention under "intermediates".
  """
  encoder: nn.Module
  decoder: nn.Module
  slot_attention: nn.Module

  @nn.compact
  def __call__(self, image: Array, *, train: bool,
               num_slots: Optional[int] = None) -> Dict[str, Array]:
    """`image [B, H, W, C]` -> dict of arrays.

    Returns:
      reconstruction [B, H, W, C], rgb [B, K, H, W, C] (per-slot colours),
      masks [B, K, H, W, 1] (softmax over slots), mask_logits [B, K, H, W, 1],
      slots [B, K, D_slot].
    """
    features = self.encoder(image)                                          # [B, N, D]
    slots = self.slot_attention(features, train=train, num_slots=num_slots)  # [B, K, Ds]
    batch, k = slots.shape[:2]
    # All slots through the same decoder weights: fold K into the batch axis.
    decoded = self.decoder(slots.reshape(batch * k, slots.shape[-1]))  # [B*K, H, W, C+1]
    # Compositing and the loss in float32 whatever the decoder's computation dtype.
    decoded = decoded.reshape((batch, k) + decoded.shape[1:]).astype(jnp.float32)
    if decoded.shape[2:4] != image.shape[1:3] or decoded.shape[-1] != image.shape[-1] + 1:
      raise ValueError(f"decoder output {decoded.shape[2:]} does not fit image "
                       f"{image.shape[1:]} (expected H, W, C + 1)")
    out = alpha_composite(decoded, slot_axis=1)
    return dict(out, slots=slots)


def reconstruction_loss(outputs: Dict[str, Array], image: Array) -> Array:
  """Mean squared error of `outputs["reconstruction"]` against `image [B, H, W, C]`: scalar."""
  return jnp.mean(jnp.square(outputs["reconstruction"] - image))


class PropertyPredictionHead(nn.Module):
  """Per-slot MLP for CLEVR set prediction (supplement, Sec. 5.4 and Table 7).

  `slots [B, K, D] -> [B, K, output_size]`: Dense(hidden_size) + ReLU, then
  Dense(output_size) with a sigmoid (targets are one-hot properties, coordinates scaled
  to [0, 1] and a 0/1 "is a real object" flag, so every output lies in [0, 1]).

  Attributes:
    output_size: width of the prediction; 19 for CLEVR (3 coordinates, 2 sizes,
      2 materials, 3 shapes, 8 colours, 1 object flag; slot_ot_jax/evaluation/set_prediction.py).
    hidden_size: hidden width (64).
    sigmoid: apply the output sigmoid (turn off to get logits for a custom loss).
    framework_defaults: initialisers (`defaults`).
  """
  output_size: int = 19
  hidden_size: int = 64
  sigmoid: bool = True
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, slots: Array) -> Array:
    style = self.framework_defaults
    x = nn.relu(nn.Dense(self.hidden_size, name="hidden",
                         **defaults.dense(style, slots.shape[-1]))(slots))
    x = nn.Dense(self.output_size, name="out", **defaults.dense(style, self.hidden_size))(x)
    return jax.nn.sigmoid(x) if self.sigmoid else x


def property_prediction_encoder() -> CNNEncoder:
  """CLEVR set-prediction encoder: Table 3 with stride 2 on layers 2 and 3 (128 -> 32)."""
  return CNNEncoder(strides=(1, 2, 2, 1))


class SetPredictionModel(nn.Module):
  """Encoder -> slot attention -> `PropertyPredictionHead`, for CLEVR property prediction.

  `image [B, H, W, C] -> dict(predictions [B, K, output_size], slots [B, K, D_slot])`.
  """
  encoder: nn.Module
  slot_attention: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, image: Array, *, train: bool,
               num_slots: Optional[int] = None) -> Dict[str, Any]:
    features = self.encoder(image)
    slots = self.slot_attention(features, train=train, num_slots=num_slots)
    return dict(predictions=self.head(slots), slots=slots)

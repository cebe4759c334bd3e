"""Vision Transformer (Dosovitskiy et al., 2021) producing patch features, in Flax Linen.

DINOSAUR on MOVi (Krimmel et al., App. F; Seitzer et al., 2023) trains on the patch features
of a frozen, self-supervised ViT-B/8 (DINO, Caron et al., 2021): 224x224 frames, 8x8
patches -> a 28 x 28 grid of 768-dim features after the class token is dropped.

  ViT(config)(images [B, H, W, 3] float32, ImageNet-normalised)
      -> patch features [B, (H/p) * (W/p), D] (row-major patches, class token dropped)

`VIT_CONFIGS`: "vit_b8" (ViT-B/8: D=768, 12 blocks, 12 heads, MLP 3072, 224x224) and
"tiny" (tests). Blocks are pre-norm (LayerNorm -> attention -> residual, LayerNorm -> MLP
with exact GELU -> residual); LayerNorm epsilon 1e-6.

Pretrained weights come from a file the user supplies, never from the network: an `.npz`
of named arrays holding the checkpoint's PyTorch `state_dict` as is (the DINO release and
timm's `vit_base_patch8_224_dino` use the same names). Converting the DINO ViT-B/8
checkpoint once, with PyTorch installed:

  import numpy as np, torch
  sd = torch.load("dino_vitbase8_pretrain.pth", map_location="cpu")
  np.savez("dino_vitb8.npz", **{k: v.numpy() for k, v in sd.items()})

`params_from_state_dict` maps the names (`STATE_DICT_MAPPING` documents each one), checks
every shape and rejects missing or unexpected arrays; `state_dict_from_params` is its
inverse (used by the tests to write a checkpoint of a randomly initialised model).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Mean and standard deviation of the ImageNet pixels in [0, 1] (DINO's input normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  image_size: int = 224
  patch_size: int = 8
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_size: int = 3072
  # Which activation the features are: "block" = output of the last block (DINOSAUR's
  # choice of feature level), "norm" = after the final LayerNorm (timm's forward_features).
  output: str = "block"

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid * self.grid


VIT_CONFIGS = {
    "vit_b8": ViTConfig(),
    "tiny": ViTConfig(image_size=32, patch_size=8, width=16, depth=2, num_heads=2,
                      mlp_size=32),
}


def get_vit_config(name: str, **overrides) -> ViTConfig:
  if name not in VIT_CONFIGS:
    raise ValueError(f"Unknown ViT {name!r}; valid: {', '.join(sorted(VIT_CONFIGS))}.")
  return dataclasses.replace(VIT_CONFIGS[name], **overrides)


class _Attention(nn.Module):
  """Multi-head self-attention with one fused qkv projection (as in the checkpoints)."""
  num_heads: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, n, d = x.shape
    h = self.num_heads
    qkv = nn.Dense(3 * d, name="qkv")(x).reshape(b, n, 3, h, d // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]              # [B, N, H, d/H]
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(d // h)
    out = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)
    return nn.Dense(d, name="proj")(out.reshape(b, n, d))


class _Block(nn.Module):
  num_heads: int
  mlp_size: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ln = lambda name: nn.LayerNorm(epsilon=1e-6, name=name)
    x = x + _Attention(self.num_heads, name="attn")(ln("norm1")(x))
    y = nn.Dense(self.mlp_size, name="fc1")(ln("norm2")(x))
    y = nn.Dense(x.shape[-1], name="fc2")(nn.gelu(y, approximate=False))
    return x + y


class ViT(nn.Module):
  """`images [B, H, W, 3]` (ImageNet-normalised) -> patch features `[B, N, D]`."""
  config: ViTConfig

  @nn.compact
  def __call__(self, images: Array) -> Array:
    c = self.config
    if images.shape[1:3] != (c.image_size, c.image_size):
      raise ValueError(f"ViT expects {c.image_size}x{c.image_size} images (its position "
                       f"embedding is learned for that grid), got {images.shape[1:3]}.")
    x = nn.Conv(c.width, (c.patch_size, c.patch_size), strides=c.patch_size,
                padding="VALID", name="patch_embed")(images)
    b = x.shape[0]
    x = x.reshape(b, -1, c.width)                                       # [B, N, D]
    cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, c.width))
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, c.num_patches + 1, c.width))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c.width)), x], axis=1) + pos
    for i in range(c.depth):
      x = _Block(c.num_heads, c.mlp_size, name=f"block{i}")(x)
    if c.output == "norm":
      x = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
    elif c.output != "block":
      raise ValueError(f"Unknown ViT output {c.output!r}; valid: block, norm.")
    return x[:, 1:]  # Drop the class token.


def normalize_images(images: Array) -> Array:
  """uint8 (or [0, 255] float) `[..., 3]` -> ImageNet-normalised float32."""
  x = jnp.asarray(images, jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


# ------------------------------------------------------------------------------------------
# Checkpoint conversion: PyTorch state_dict names <-> Flax params
# ------------------------------------------------------------------------------------------
# (state_dict name pattern, Flax path pattern, how the array is laid out in the state_dict).
# "{i}" is the block index. Layouts: "linear" = torch Linear weight [out, in] -> kernel
# [in, out]; "conv" = Conv2d weight [out, in, kh, kw] -> kernel [kh, kw, in, out]; "same" =
# copied unchanged (biases, LayerNorm weight -> scale, class token, position embedding).
STATE_DICT_MAPPING = (
    ("patch_embed.proj.weight", "patch_embed/kernel", "conv"),
    ("patch_embed.proj.bias", "patch_embed/bias", "same"),
    ("cls_token", "cls_token", "same"),
    ("pos_embed", "pos_embed", "same"),
    ("blocks.{i}.norm1.weight", "block{i}/norm1/scale", "same"),
    ("blocks.{i}.norm1.bias", "block{i}/norm1/bias", "same"),
    ("blocks.{i}.attn.qkv.weight", "block{i}/attn/qkv/kernel", "linear"),
    ("blocks.{i}.attn.qkv.bias", "block{i}/attn/qkv/bias", "same"),
    ("blocks.{i}.attn.proj.weight", "block{i}/attn/proj/kernel", "linear"),
    ("blocks.{i}.attn.proj.bias", "block{i}/attn/proj/bias", "same"),
    ("blocks.{i}.norm2.weight", "block{i}/norm2/scale", "same"),
    ("blocks.{i}.norm2.bias", "block{i}/norm2/bias", "same"),
    ("blocks.{i}.mlp.fc1.weight", "block{i}/fc1/kernel", "linear"),
    ("blocks.{i}.mlp.fc1.bias", "block{i}/fc1/bias", "same"),
    ("blocks.{i}.mlp.fc2.weight", "block{i}/fc2/kernel", "linear"),
    ("blocks.{i}.mlp.fc2.bias", "block{i}/fc2/bias", "same"),
    ("norm.weight", "norm/scale", "same"),
    ("norm.bias", "norm/bias", "same"),
)
# Arrays of the checkpoints that the feature extractor does not use.
IGNORED_STATE_DICT_KEYS = ("head.weight", "head.bias")
_TO_FLAX = {"same": lambda a: a, "linear": lambda a: a.T,
            "conv": lambda a: a.transpose(2, 3, 1, 0)}
_TO_TORCH = {"same": lambda a: a, "linear": lambda a: a.T,
             "conv": lambda a: a.transpose(3, 2, 0, 1)}


def _name_pairs(config: ViTConfig):
  """(state_dict name, Flax path, layout) for every parameter of `ViT(config)`."""
  for torch_name, flax_path, layout in STATE_DICT_MAPPING:
    if torch_name.startswith("norm.") and config.output != "norm":
      continue  # The final LayerNorm is not part of the "block" model.
    if "{i}" in torch_name:
      for i in range(config.depth):
        yield torch_name.format(i=i), flax_path.format(i=i), layout
    else:
      yield torch_name, flax_path, layout


def _get(tree, path):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _set(tree, path, value):
  parts = path.split("/")
  for part in parts[:-1]:
    tree = tree.setdefault(part, {})
  tree[parts[-1]] = value


def abstract_params(config: ViTConfig) -> Any:
  """Shapes of the params of `ViT(config)` (no computation)."""
  images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
  return jax.eval_shape(lambda: ViT(config).init(jax.random.PRNGKey(0),
                                                  jnp.zeros(images.shape)))["params"]


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], config: ViTConfig) -> dict:
  """Flax params of `ViT(config)` from a PyTorch-named state dict (see module docstring).

  Raises:
    ValueError: naming the missing arrays, the unexpected ones, or a shape mismatch.
  """
  pairs = list(_name_pairs(config))
  expected = {name for name, _, _ in pairs}
  optional = set(IGNORED_STATE_DICT_KEYS) | {"norm.weight", "norm.bias"}
  missing = sorted(expected - set(state_dict))
  unexpected = sorted(set(state_dict) - expected - optional)
  if missing or unexpected:
    raise ValueError(f"ViT checkpoint does not match config {config}: missing "
                     f"{missing[:8] or 'none'}, unexpected {unexpected[:8] or 'none'}.")
  shapes = abstract_params(config)
  params: dict = {}
  for torch_name, flax_path, layout in pairs:
    value = _TO_FLAX[layout](np.asarray(state_dict[torch_name], np.float32))
    want = tuple(_get(shapes, flax_path).shape)
    if value.shape != want:
      raise ValueError(f"ViT checkpoint array {torch_name!r} has shape {value.shape} after "
                       f"conversion; {flax_path} of config {config} needs {want}.")
    _set(params, flax_path, value)
  return params


def state_dict_from_params(params: Any, config: ViTConfig) -> dict[str, np.ndarray]:
  """Inverse of `params_from_state_dict`: PyTorch names and layouts."""
  return {torch_name: np.asarray(_TO_TORCH[layout](np.asarray(_get(params, flax_path))))
          for torch_name, flax_path, layout in _name_pairs(config)}


def load_params(path: str, config: ViTConfig) -> dict:
  """Params of `ViT(config)` from an `.npz` of PyTorch-named arrays (module docstring)."""
  with np.load(path) as data:
    return params_from_state_dict({k: data[k] for k in data.files}, config)

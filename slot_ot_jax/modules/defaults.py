"""Framework defaults: the initialisers and LayerNorm epsilons of each reference's framework.

Every module with parameters takes a `framework_defaults` field naming one style; this module
holds the whole mapping, so the modules only pass the style and the fan-in of each layer.

  style   reference code                                       LayerNorm eps
  flax    ours (Flax's own defaults; the library default)      1e-6
  torch   PyTorch: the MESH reference (github davzha/MESH)     1e-5
  keras   TF/Keras: the Slot Attention reference               1e-3
          (google-research/slot_attention/model.py)
  ocl     PyTorch with the explicit initialisations of the     1e-5
          object-centric-learning-framework (DINOSAUR's code,
          github amazon-science/object-centric-learning-framework)

Per layer kind (Flax layouts: Dense kernel [in, out], Conv and ConvTranspose kernels
[kh, kw, in, out]; U(b) is the uniform distribution on [-b, b]):

  Dense           flax:  kernel lecun_normal, bias 0
                  torch: kernel and bias U(1/sqrt(in)); ocl: the same, but bias 0 in MLPs
                  keras: kernel glorot_uniform, bias 0
  Conv            flax:  kernel lecun_normal (fan in kh kw), bias 0
                  torch, ocl: kernel and bias U(1/sqrt(in kh kw))
                  keras: kernel glorot_uniform, bias 0
  ConvTranspose   flax:  kernel lecun_normal (fan in kh kw), bias 0
                  torch, ocl: kernel and bias U(1/sqrt(out kh kw)): PyTorch's fan-in of a
                         ConvTranspose2d weight [in, out, kh, kw] is size(1) kh kw, the
                         OUTPUT channels
                  keras: kernel glorot_uniform (symmetric in in/out), bias 0
  GRUCell         flax:  input kernels lecun_normal, recurrent orthogonal, biases 0
                  torch, ocl: every kernel and bias U(1/sqrt(hidden))
                  keras: input kernels U(sqrt(6 / (in + 3 hidden))) (glorot of the
                         [in, 3 hidden] kernel), recurrent kernels blocks of an orthogonal
                         [hidden, 3 hidden], biases 0
  LayerNorm       scale 1, bias 0 everywhere; epsilon 1e-6 flax, 1e-5 torch and ocl,
                  1e-3 keras
  slots_mu,       glorot / xavier uniform with each framework's fans of [1, 1, D]:
  slots_log_sigma flax and keras (fans 1 and D): U(sqrt(6 / (D + 1)));
  (bare tensors)  torch and ocl (fans D and D; MESH and OCL call xavier_uniform_):
                  U(sqrt(3 / D))
  learned MESH    flax: mesh_lr (as before); torch, keras, ocl: 1, where the MESH reference
  step            starts it (nn.Parameter(torch.ones(1)); Keras has no MESH code)

PyTorch: nn.Linear and nn.Conv2d / ConvTranspose2d initialise the weight with
kaiming_uniform_(a=sqrt(5)), i.e. U(gain sqrt(3 / fan_in)) with gain sqrt(2 / (1 + 5)), which
is U(1/sqrt(fan_in)), and the bias with U(1/sqrt(fan_in)) of the same fan-in; nn.GRUCell draws
every weight and bias from U(1/sqrt(hidden)); nn.LayerNorm has eps 1e-5. For a tensor of shape
[a, b, c...], torch.nn.init computes fan_in = b prod(c...) and fan_out = a prod(c...).
Keras: Dense, Conv2D and Conv2DTranspose kernels are glorot_uniform, U(sqrt(6 / (fan_in +
fan_out))) with fan_in = shape[-2] prod(shape[:-2]) and fan_out = shape[-1] prod(shape[:-2])
(symmetric in the two channel axes, so the transposed kernel [kh, kw, out, in] gives the same
bound), biases zero; GRUCell's kernel [in, 3 hidden] is glorot_uniform, its recurrent kernel
[hidden, 3 hidden] orthogonal, its biases zero; LayerNormalization has epsilon 1e-3.
OCL (DINOSAUR): PyTorch's defaults, except that the MLPs built by its `build_mlp` (the slot
MLP, the feature MLP after the encoder, the patch decoder's MLP) start with zero biases.

Flax's GRUCell keeps its own parameter tree (gates ir, iz, in with biases; hr, hz without, hn
with one): "torch" draws each of these pieces from U(1/sqrt(hidden)) (PyTorch has two biases
per gate, b_ih and b_hh, where Flax has one), and "keras" draws each recurrent gate kernel as
one [hidden, hidden] block of an orthogonal [hidden, 3 hidden] matrix (each block is
distributed as a block of Keras's matrix; the three blocks come from independent draws).

"flax" passes nothing to the layers, so its parameters are exactly those of Flax's defaults.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STYLES = ("flax", "torch", "keras", "ocl")
LAYER_NORM_EPSILON = {"flax": 1e-6, "torch": 1e-5, "keras": 1e-3, "ocl": 1e-5}
_TORCH_LIKE = ("torch", "ocl")

Initializer = Callable[..., jax.Array]


def check(style: str) -> str:
  if style not in STYLES:
    raise ValueError(f"Unknown framework_defaults {style!r}; valid values: {list(STYLES)}")
  return style


def uniform(bound: float) -> Initializer:
  """U(-bound, bound) (Flax's `initializers.uniform` is U(0, scale))."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def torch_fans(shape: Sequence[int]) -> tuple[int, int]:
  """torch.nn.init._calculate_fan_in_and_fan_out of a PyTorch-layout tensor of `shape`."""
  receptive = math.prod(shape[2:])
  return shape[1] * receptive, shape[0] * receptive


def keras_fans(shape: Sequence[int]) -> tuple[int, int]:
  """Keras's fan computation (initializers._compute_fans) for a kernel of `shape`."""
  if len(shape) == 1:
    return shape[0], shape[0]
  receptive = math.prod(shape[:-2])
  return shape[-2] * receptive, shape[-1] * receptive


def _glorot_uniform_keras(key, shape, dtype=jnp.float32):
  fan_in, fan_out = keras_fans(shape)
  return uniform(math.sqrt(6.0 / (fan_in + fan_out)))(key, shape, dtype)


def _xavier_uniform_torch(key, shape, dtype=jnp.float32):
  # Our parameter has the PyTorch tensor's shape (e.g. slots_mu [1, 1, D]).
  fan_in, fan_out = torch_fans(shape)
  return uniform(math.sqrt(6.0 / (fan_in + fan_out)))(key, shape, dtype)


def _torch_kernel(key, shape, dtype=jnp.float32):
  """Flax Dense [in, out] / Conv [kh, kw, in, out]: fan_in = every axis but the last."""
  return uniform(1.0 / math.sqrt(math.prod(shape[:-1])))(key, shape, dtype)


def _torch_transpose_kernel(key, shape, dtype=jnp.float32):
  """Flax ConvTranspose [kh, kw, in, out]: PyTorch's fan_in is out kh kw (weight.size(1))."""
  return uniform(1.0 / math.sqrt(math.prod(shape[:-2]) * shape[-1]))(key, shape, dtype)


def layer_norm(style: str) -> Dict[str, Any]:
  """Keyword arguments of nn.LayerNorm (scale 1 and bias 0 in every framework)."""
  return {} if check(style) == "flax" else {"epsilon": LAYER_NORM_EPSILON[style]}


def dense(style: str, fan_in: int, *, mlp_block: bool = False) -> Dict[str, Any]:
  """Keyword arguments of nn.Dense for inputs of width `fan_in`.

  `mlp_block`: the layer belongs to an MLP that OCL builds with `build_mlp` (zero biases
  under "ocl"; no effect on the other styles).
  """
  if check(style) == "flax":
    return {}
  if style == "keras":
    return {"kernel_init": _glorot_uniform_keras, "bias_init": nn.initializers.zeros}
  bias = (nn.initializers.zeros if (style == "ocl" and mlp_block)
          else uniform(1.0 / math.sqrt(fan_in)))
  return {"kernel_init": _torch_kernel, "bias_init": bias}


def conv(style: str, in_features: int, kernel_size: Sequence[int]) -> Dict[str, Any]:
  """Keyword arguments of nn.Conv (PyTorch Conv2d, Keras Conv2D)."""
  if check(style) == "flax":
    return {}
  if style == "keras":
    return {"kernel_init": _glorot_uniform_keras, "bias_init": nn.initializers.zeros}
  fan_in = in_features * math.prod(kernel_size)
  return {"kernel_init": _torch_kernel, "bias_init": uniform(1.0 / math.sqrt(fan_in))}


def conv_transpose(style: str, out_features: int, kernel_size: Sequence[int]) -> Dict[str, Any]:
  """Keyword arguments of nn.ConvTranspose (PyTorch ConvTranspose2d, Keras Conv2DTranspose).

  PyTorch's fan-in of a transposed convolution counts its output channels.
  """
  if check(style) == "flax":
    return {}
  if style == "keras":
    return {"kernel_init": _glorot_uniform_keras, "bias_init": nn.initializers.zeros}
  fan_in = out_features * math.prod(kernel_size)
  return {"kernel_init": _torch_transpose_kernel, "bias_init": uniform(1.0 / math.sqrt(fan_in))}


def _keras_recurrent_block(key, shape, dtype=jnp.float32):
  """One [hidden, hidden] gate block of Keras's orthogonal [hidden, 3 hidden] matrix."""
  rows, cols = shape
  return nn.initializers.orthogonal()(key, (rows, 3 * cols), dtype)[:, :cols]


def gru(style: str, input_size: int, hidden: int) -> Dict[str, Any]:
  """Keyword arguments of nn.GRUCell with inputs of width `input_size`."""
  if check(style) == "flax":
    return {}
  if style == "keras":
    return {"kernel_init": uniform(math.sqrt(6.0 / (input_size + 3 * hidden))),
            "recurrent_kernel_init": _keras_recurrent_block,
            "bias_init": nn.initializers.zeros}
  bound = uniform(1.0 / math.sqrt(hidden))
  return {"kernel_init": bound, "recurrent_kernel_init": bound, "bias_init": bound}


def slot_parameter(style: str) -> Initializer:
  """Initialiser of the learned initial slots (slots_mu, slots_log_sigma [1, 1, D], per-slot
  embeddings [K, D]): glorot / xavier uniform with each framework's fans."""
  if check(style) == "flax":
    return nn.initializers.xavier_uniform()
  return _glorot_uniform_keras if style == "keras" else _xavier_uniform_torch


def learned_mesh_lr(style: str, mesh_lr: float) -> float:
  """Initial value of the learned MESH step: the MESH reference starts it at 1
  (nn.Parameter(torch.ones(1)), whatever its mesh_lr); "flax" keeps `mesh_lr`."""
  return float(mesh_lr) if check(style) == "flax" else 1.0

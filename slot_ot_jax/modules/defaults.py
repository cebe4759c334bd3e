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

Mixed styles, for ablations: "BASE:PART=STYLE[,PART=STYLE...]" takes each named part from
another style and the rest from BASE, e.g. "flax:epsilon=torch" (Flax's initialisers with
PyTorch's LayerNorm epsilon) or "torch:gru=flax". The parts (PARTS):
  epsilon    the LayerNorm epsilon
  kernel     Dense / Conv / ConvTranspose kernels
  bias       Dense / Conv / ConvTranspose biases
  gru        every GRUCell parameter
  slots      the learned initial slots (slots_mu, slots_log_sigma, per-slot embeddings)
  mesh_step  the initial value of the learned MESH step
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STYLES = ("flax", "torch", "keras", "ocl")
PARTS = ("epsilon", "kernel", "bias", "gru", "slots", "mesh_step")
LAYER_NORM_EPSILON = {"flax": 1e-6, "torch": 1e-5, "keras": 1e-3, "ocl": 1e-5}
_TORCH_LIKE = ("torch", "ocl")

Initializer = Callable[..., jax.Array]


def parts(style: str) -> Dict[str, str]:
  """The style of each part (PARTS) under `style`, e.g. "flax:epsilon=torch" gives
  {"epsilon": "torch", "kernel": "flax", ...}; raises ValueError naming the valid values."""
  if not isinstance(style, str):
    raise ValueError(f"framework_defaults must be a string, got {style!r}; valid values: "
                     f"{list(STYLES)} or BASE:PART=STYLE,... with PART in {list(PARTS)}")
  base, sep, rest = style.partition(":")
  if base not in STYLES:
    raise ValueError(f"Unknown framework_defaults {style!r}; valid values: {list(STYLES)}, "
                     f"or a mixed style BASE:PART=STYLE,... with PART in {list(PARTS)}")
  out = dict.fromkeys(PARTS, base)
  if not sep:
    return out
  for item in rest.split(","):
    part, eq, value = item.partition("=")
    if not eq or part not in PARTS or value not in STYLES:
      raise ValueError(f"Bad part {item!r} in framework_defaults {style!r}: expected PART=STYLE "
                       f"with PART in {list(PARTS)} and STYLE in {list(STYLES)}")
    out[part] = value
  return out


def check(style: str) -> str:
  """Returns `style` if it is a style of STYLES or a valid mixed style, else raises."""
  parts(style)
  return style


def _part(style: str, name: str) -> str:
  return parts(style)[name]


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
  eps = _part(style, "epsilon")
  return {} if eps == "flax" else {"epsilon": LAYER_NORM_EPSILON[eps]}


def _kernel_init(style: str, torch_kernel: Initializer) -> Initializer:
  """Kernel initialiser of a Dense / Conv / ConvTranspose under the kernel part's style."""
  if style == "flax":
    return nn.initializers.lecun_normal()  # Flax's default for all three layer kinds.
  return _glorot_uniform_keras if style == "keras" else torch_kernel


def _bias_init(style: str, fan_in: int, mlp_block: bool = False) -> Initializer:
  """Bias initialiser under the bias part's style (PyTorch: U(1/sqrt(fan_in)))."""
  if style in ("flax", "keras") or (style == "ocl" and mlp_block):
    return nn.initializers.zeros
  return uniform(1.0 / math.sqrt(fan_in))


def _layer(style: str, torch_kernel: Initializer, fan_in: int,
           mlp_block: bool = False) -> Dict[str, Any]:
  kernel, bias = _part(style, "kernel"), _part(style, "bias")
  if kernel == "flax" and bias == "flax":
    return {}  # Flax's own defaults, unchanged.
  return {"kernel_init": _kernel_init(kernel, torch_kernel),
          "bias_init": _bias_init(bias, fan_in, mlp_block)}


def dense(style: str, fan_in: int, *, mlp_block: bool = False) -> Dict[str, Any]:
  """Keyword arguments of nn.Dense for inputs of width `fan_in`.

  `mlp_block`: the layer belongs to an MLP that OCL builds with `build_mlp` (zero biases
  under "ocl"; no effect on the other styles).
  """
  return _layer(style, _torch_kernel, fan_in, mlp_block)


def conv(style: str, in_features: int, kernel_size: Sequence[int]) -> Dict[str, Any]:
  """Keyword arguments of nn.Conv (PyTorch Conv2d, Keras Conv2D)."""
  return _layer(style, _torch_kernel, in_features * math.prod(kernel_size))


def conv_transpose(style: str, out_features: int, kernel_size: Sequence[int]) -> Dict[str, Any]:
  """Keyword arguments of nn.ConvTranspose (PyTorch ConvTranspose2d, Keras Conv2DTranspose).

  PyTorch's fan-in of a transposed convolution counts its output channels.
  """
  return _layer(style, _torch_transpose_kernel, out_features * math.prod(kernel_size))


def _keras_recurrent_block(key, shape, dtype=jnp.float32):
  """One [hidden, hidden] gate block of Keras's orthogonal [hidden, 3 hidden] matrix."""
  rows, cols = shape
  return nn.initializers.orthogonal()(key, (rows, 3 * cols), dtype)[:, :cols]


def gru(style: str, input_size: int, hidden: int) -> Dict[str, Any]:
  """Keyword arguments of nn.GRUCell with inputs of width `input_size`."""
  style = _part(style, "gru")
  if style == "flax":
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
  style = _part(style, "slots")
  if style == "flax":
    return nn.initializers.xavier_uniform()
  return _glorot_uniform_keras if style == "keras" else _xavier_uniform_torch


def learned_mesh_lr(style: str, mesh_lr: float) -> float:
  """Initial value of the learned MESH step: the MESH reference starts it at 1
  (nn.Parameter(torch.ones(1)), whatever its mesh_lr); "flax" keeps `mesh_lr`."""
  return float(mesh_lr) if _part(style, "mesh_step") == "flax" else 1.0

"""Slots carried across video frames (MESH paper §5.4, App. F.4), with the noise baselines.

`VideoAutoencoder` extends the object-discovery autoencoder to videos `[B, T, H, W, C]`:
the encoder runs on every frame independently, slot attention runs on one frame at a time
with the slots of frame t (after `SlotTransition`) as the initial slots of frame t + 1, and
the spatial broadcast decoder decodes every frame's slots independently. There is no
predictor between frames, except the learned-noise baseline's MLP.

`SlotTransition` is what happens to the slots between two frames (the rows of MESH
Table 5):
  "none"     the slots are carried unchanged (SA, SA-SH, SA-MESH);
  "fixed"    Gaussian noise of standard deviation `noise_sigma` is added (SA fixed noise);
  "learned"  LayerNorm -> Dense(D) -> ReLU -> Dense(2D) predicts a mean and a
             log-variance per slot and the next initial slots are sampled from that
             Gaussian; a KL term to N(mean, prior_variance) (the variance part only, as the
             MESH reference) is returned for the loss (SA learned noise, after Wu et al.).
The noise is drawn in training and evaluation alike, as the MESH reference does, from the
RNG stream "transition". The reference samples the learned noise with standard deviation
exp(log-variance) while its KL term treats exp(log-variance) as the variance; we sample
with standard deviation exp(log-variance / 2), consistent with the KL term.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from slot_ot_jax.modules import defaults
from slot_ot_jax.modules import models

Array = jax.Array

TRANSITIONS = ("none", "fixed", "learned")


class SlotTransition(nn.Module):
  """Slots of one frame -> initial slots of the next, and a KL term.

  `slots [B, K, D] -> (slots [B, K, D], kl scalar)`; kl is 0 unless kind="learned".

  Attributes:
    kind: "none", "fixed" or "learned" (module docstring).
    noise_sigma: standard deviation of the fixed noise.
    prior_variance: variance of the KL prior of the learned noise (the reference's 0.1).
    framework_defaults: initialisers and LayerNorm epsilon of the learned-noise MLP
      (`defaults`; the MESH reference's is PyTorch's).
  """
  kind: str = "none"
  noise_sigma: float = 0.0
  prior_variance: float = 0.1
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, slots: Array) -> tuple[Array, Array]:
    if self.kind not in TRANSITIONS:
      raise ValueError(f"Unknown transition {self.kind!r}; valid values: {list(TRANSITIONS)}")
    zero = jnp.zeros((), jnp.float32)
    if self.kind == "none":
      return slots, zero
    noise = jax.random.normal(self.make_rng("transition"), slots.shape, slots.dtype)
    if self.kind == "fixed":
      return slots + self.noise_sigma * noise, zero
    d = slots.shape[-1]
    style = self.framework_defaults
    h = nn.LayerNorm(name="norm", **defaults.layer_norm(style))(slots)
    h = nn.relu(nn.Dense(d, name="hidden", **defaults.dense(style, d))(h))
    params = nn.Dense(2 * d, name="out", **defaults.dense(style, d))(h)
    mean, log_var = params[..., :d], params[..., d:]
    sampled = mean + jnp.exp(0.5 * log_var) * noise
    # KL(N(m, exp(log_var)) || N(m, v0)) per element, averaged (reference's regulariser).
    v0 = self.prior_variance
    kl = 0.5 * math.log(v0) - 0.5 * log_var + 0.5 * jnp.exp(log_var) / v0 - 0.5
    return sampled, jnp.mean(kl)


class VideoAutoencoder(nn.Module):
  """Per-frame encoder, slot attention carried across frames, per-frame decoder.

  Attributes:
    encoder: `image [M, H, W, C] -> features [M, N, D]` (e.g. `models.CNNEncoder`).
    decoder: `slots [M, D_slot] -> [M, H, W, C + 1]` (e.g. `models.SpatialBroadcastDecoder`).
    slot_attention: `SlotAttention`, called per frame with `initial_slots`.
    transition: `SlotTransition` applied between frames.
  """
  encoder: nn.Module
  decoder: nn.Module
  slot_attention: nn.Module
  transition: nn.Module

  @nn.compact
  def __call__(self, video: Array, *, train: bool,
               num_slots: Optional[int] = None) -> Dict[str, Array]:
    """`video [B, T, H, W, C]` -> dict of arrays.

    Returns:
      reconstruction [B, T, H, W, C], rgb [B, T, K, H, W, C], masks [B, T, K, H, W, 1]
      (softmax over slots), slots [B, T, K, D_slot], kl (scalar, sum over transitions).
    """
    b, t, h, w, c = video.shape
    features = self.encoder(video.reshape(b * t, h, w, c))
    features = features.reshape((b, t) + features.shape[1:])         # [B, T, N, D]
    all_slots, kl = [], jnp.zeros((), jnp.float32)
    slots = None
    for i in range(t):
      initial = None
      if slots is not None:
        initial, kl_i = self.transition(slots)
        kl = kl + kl_i
      slots = self.slot_attention(features[:, i], train=train, initial_slots=initial,
                                  num_slots=num_slots)                 # [B, K, Ds]
      all_slots.append(slots)
    slots = jnp.stack(all_slots, axis=1)                              # [B, T, K, Ds]
    k = slots.shape[2]
    decoded = self.decoder(slots.reshape(b * t * k, slots.shape[-1]))  # [BTK, H, W, C+1]
    decoded = decoded.reshape((b, t, k) + decoded.shape[1:])
    if decoded.shape[3:5] != (h, w) or decoded.shape[-1] != c + 1:
      raise ValueError(f"decoder output {decoded.shape[3:]} does not fit frames "
                       f"{(h, w, c)} (expected H, W, C + 1)")
    out = models.alpha_composite(decoded, slot_axis=2)
    return dict(reconstruction=out["reconstruction"], rgb=out["rgb"], masks=out["masks"],
                slots=slots, kl=kl)

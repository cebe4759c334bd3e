"""Optimizer of the papers: Adam with linear warm-up, exponential decay and global-norm clipping.

Everything comes from `config.optimizer`:
  learning_rate, warmup_steps, decay_rate, decay_steps, b1, b2, eps, grad_clip_norm.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """lr(step) = learning_rate * min(1, step / warmup_steps) * decay_rate ** (step / decay_steps).

  The Slot Attention schedule: the warm-up factor multiplies the decay, and the decay counts
  from step 0 (not from the end of the warm-up). `decay_steps <= 0` turns the decay off,
  `warmup_steps <= 0` the warm-up.
  """
  opt = config.optimizer
  base, warmup = float(opt.learning_rate), int(opt.warmup_steps)
  rate, decay_steps = float(opt.decay_rate), int(opt.decay_steps)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    lr = jnp.asarray(base, jnp.float32)
    if warmup > 0:
      lr = lr * jnp.minimum(1.0, step / warmup)
    if decay_steps > 0:
      lr = lr * rate ** (step / decay_steps)
    return lr

  return schedule


def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                               optax.Schedule]:
  """Returns (optax transformation, learning-rate schedule) from `config.optimizer`."""
  opt = config.optimizer
  schedule = learning_rate_schedule(config)
  parts = []
  if opt.grad_clip_norm and opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
  parts.append(optax.adam(schedule, b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps)))
  return optax.chain(*parts), schedule

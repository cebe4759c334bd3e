"""Random objects detection (MESH paper §5.1, Table 1, App. F.1): data, loss, metric, task.

Each example is a multiset of k vectors ("objects") drawn from N(0, sigma^2 I) in `dim`
dimensions plus h zero vectors, in random order; the model must copy the k objects into its
k slots. Shapes: inputs [B, N = k + h, D], objects [B, k, D], predictions (slots) [B, K, D].

The data lives in memory: per split the objects [n, k, D] and their positions among the N
elements [n, k]; a batch is assembled on the fly. The training order of epoch e is a
permutation seeded by (data seed, e), so the batch of any step is a pure function of the
config and the step.
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import functools
from typing import Iterator, Mapping

from clu import metrics as clu_metrics
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from slot_ot_jax import tasks

# Streams of np.random.default_rng([data_seed, stream, ...]): one per split and for the order.
_TRAIN_STREAM, _EVAL_STREAM, _ORDER_STREAM = 0, 1, 2

# Table 1 of the MESH paper: RMSE / sigma, median over 5 seeds, keyed by (attention, sigma).
PAPER_TABLE1 = {
    ("softmax", 1.0): 0.44, ("softmax", 0.1): 0.53, ("softmax", 0.01): 0.65,
    ("sinkhorn", 1.0): 0.27, ("sinkhorn", 0.1): 0.32, ("sinkhorn", 0.01): 0.41,
    ("emd", 1.0): 0.23, ("emd", 0.1): 0.52, ("emd", 0.01): 1.04,
    ("mesh", 1.0): 0.24, ("mesh", 0.1): 0.27, ("mesh", 0.01): 0.31,
}
PAPER_NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "emd": "SA-EMD", "mesh": "SA-MESH"}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def make_split(seed: int, stream: int, num_examples: int, num_objects: int,
               num_background: int, dim: int, sigma: float) -> dict[str, np.ndarray]:
  """Draws one split.

  Returns:
    {"objects": float32 [n, k, D] from N(0, sigma^2), "positions": int32 [n, k] distinct
    indices in [0, k + h) where the objects sit among the zero vectors}.
  """
  rng = np.random.default_rng([seed, stream])
  objects = rng.standard_normal((num_examples, num_objects, dim), dtype=np.float32)
  num_elements = num_objects + num_background
  # The first k entries of a random permutation of the N slots of each example.
  order = np.argsort(rng.random((num_examples, num_elements)), axis=1)
  return {"objects": objects * np.float32(sigma),
          "positions": order[:, :num_objects].astype(np.int32)}


def assemble(split: Mapping[str, np.ndarray], index: np.ndarray,
             num_elements: int) -> dict[str, np.ndarray]:
  """Batch of the examples `index`.

  Returns inputs [b, N, D] (objects scattered among zeros) and objects [b, k, D].
  """
  objects = split["objects"][index]
  inputs = np.zeros((len(index), num_elements, objects.shape[-1]), np.float32)
  np.put_along_axis(inputs, split["positions"][index][..., None], objects, axis=1)
  return {"inputs": inputs, "objects": objects}


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """Training order of `epoch`: a permutation of the example indices, seeded by (seed, epoch)."""
  return np.random.default_rng([seed, _ORDER_STREAM, epoch]).permutation(num_examples)


# ------------------------------------------------------------------------------------------
# Loss and metric
# ------------------------------------------------------------------------------------------
def hungarian_match(predictions: jax.Array, targets: jax.Array):
  """Matching of predictions [B, K, D] to targets [B, k, D] by least mean squared error.

  Returns:
    (errors [B, K, k] of every pair, rows [B, min(K, k)] prediction indices, cols [B, min(K, k)]
    the matched target indices), found with `optax.assignment.hungarian_algorithm`.
  """
  errors = jnp.mean(jnp.square(predictions[:, :, None, :] - targets[:, None, :, :]), -1)
  rows, cols = jax.vmap(optax.assignment.hungarian_algorithm)(jax.lax.stop_gradient(errors))
  return errors, rows, cols


def matched_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error after Hungarian matching of predictions to targets.

  Args:
    predictions: [B, K, D].
    targets: [B, k, D].

  Returns:
    [B] mean over the min(K, k) matched pairs and D of the squared error. The matching
    (`hungarian_match`) minimises exactly this quantity; gradients flow through the matched
    errors only.
  """
  errors, rows, cols = hungarian_match(predictions, targets)
  matched = jax.vmap(lambda c, r, k: c[r, k])(errors, rows, cols)  # [B, min(K, k)]
  return jnp.mean(matched, -1)


@flax.struct.dataclass
class RootMean(clu_metrics.Average):
  """Square root of the average: an RMSE when fed squared errors."""

  def compute(self):
    return jnp.sqrt(super().compute())


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  """rmse_over_sigma = sqrt(mean squared error) / sigma over the whole evaluation set."""
  rmse_over_sigma: RootMean.from_output("normalised_squared_error")
  loss: clu_metrics.Average.from_output("loss")


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------
class SetMLP(nn.Module):
  """Tiny debugging stand-in for SlotAttention: per-element MLP, mean pool, linear read-out.

  inputs [B, N, D] -> predictions [B, num_slots, slot_size].
  """
  num_slots: int
  slot_size: int
  mlp_size: int

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    del train
    hidden = nn.relu(nn.Dense(self.mlp_size)(inputs))            # [B, N, H]
    pooled = jnp.mean(hidden, axis=1)                             # [B, H]
    out = nn.Dense(self.num_slots * self.slot_size)(pooled)      # [B, K * S]
    return out.reshape(inputs.shape[0], self.num_slots, self.slot_size)


def _build_slot_attention(kwargs):
  from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
  return SlotAttention(**kwargs)


def _build_set_mlp(kwargs):
  return SetMLP(num_slots=kwargs["num_slots"], slot_size=kwargs["slot_size"],
                mlp_size=kwargs["mlp_size"])


MODELS = {"slot_attention": _build_slot_attention, "set_mlp": _build_set_mlp}


# ------------------------------------------------------------------------------------------
# Task
# ------------------------------------------------------------------------------------------
@tasks.register_task("random_objects")
class RandomObjectsTask(tasks.Task):
  """Batches {"inputs": [B, N, D], "objects": [B, k, D]}; the model's slots are the predictions."""

  rng_streams = ("slots", "mesh")
  eval_metrics = EvalMetrics

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    data = config.data
    self.num_elements = data.num_objects + data.num_background
    self.steps_per_epoch = data.num_train // config.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"data.num_train={data.num_train} is smaller than one batch "
                       f"(batch_size={config.batch_size}).")
    if data.num_eval % config.eval_batch_size:
      raise ValueError(f"data.num_eval={data.num_eval} must be a multiple of "
                       f"eval_batch_size={config.eval_batch_size}.")

  def config_ranges(self):
    """Counts of the data (checked by the trainer before anything is built)."""
    return {"data.num_objects": (1, None), "data.num_background": (0, None),
            "data.dim": (1, None), "data.num_train": (1, None), "data.num_eval": (1, None),
            "num_epochs": (1, None)}

  @functools.cached_property
  def train_split(self):
    d = self.config.data
    return make_split(d.seed, _TRAIN_STREAM, d.num_train, d.num_objects, d.num_background,
                      d.dim, d.sigma)

  @functools.cached_property
  def eval_split(self):
    d = self.config.data
    return make_split(d.seed, _EVAL_STREAM, d.num_eval, d.num_objects, d.num_background,
                      d.dim, d.sigma)

  def build_model(self) -> nn.Module:
    name = self.config.model.name
    if name not in MODELS:
      raise ValueError(f"Unknown model {name!r} for random_objects; valid models: "
                       f"{', '.join(sorted(MODELS))}.")
    return MODELS[name](dict(self.config.model.slot_attention))

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    d = self.config.data
    return {"inputs": np.zeros((batch_size, self.num_elements, d.dim), np.float32),
            "objects": np.zeros((batch_size, d.num_objects, d.dim), np.float32)}

  def train_batches(self, start_step: int, process_index: int = 0,
                    process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    batch_size = self.config.batch_size
    local = batch_size // process_count
    lo, hi = process_index * local, (process_index + 1) * local
    epoch, order = None, None
    step = start_step
    while True:
      if step // self.steps_per_epoch != epoch:
        epoch = step // self.steps_per_epoch
        order = epoch_order(self.config.data.seed, epoch, self.config.data.num_train)
      start = (step % self.steps_per_epoch) * batch_size
      index = order[start:start + batch_size][lo:hi]
      yield assemble(self.train_split, index, self.num_elements)
      step += 1

  def eval_batches(self, process_index: int = 0, process_count: int = 1):
    batch_size = self.config.eval_batch_size
    local = batch_size // process_count
    for start in range(0, self.config.data.num_eval, batch_size):
      index = np.arange(start + process_index * local, start + (process_index + 1) * local)
      yield assemble(self.eval_split, index, self.num_elements)

  def loss_fn(self, model, variables, batch, rngs):
    predictions, new_state = tasks.apply_model(model, variables, batch["inputs"], rngs=rngs,
                                               train=True)
    loss = jnp.mean(matched_squared_error(predictions, batch["objects"]))
    aux = {"rmse_over_sigma": jnp.sqrt(loss) / self.config.data.sigma}
    return loss, aux, new_state

  def eval_outputs(self, model, variables, batch, rngs):
    predictions, _ = tasks.apply_model(model, variables, batch["inputs"], rngs=rngs,
                                       train=False)
    errors = matched_squared_error(predictions, batch["objects"])  # [B]
    return {"loss": errors,
            "normalised_squared_error": errors / self.config.data.sigma ** 2}

  def report(self, eval_results: Mapping[str, float]) -> str:
    attention = self.config.model.slot_attention.attention
    sigma = float(self.config.data.sigma)
    value = float(eval_results["rmse_over_sigma"])
    if self.config.model.name != "slot_attention":
      return (f"RMSE/sigma = {value:.3f} (model {self.config.model.name}, sigma={sigma:g}; "
              "no published number)")
    line = f"RMSE/sigma = {value:.3f} ({PAPER_NAMES[attention]}, sigma={sigma:g})"
    paper = PAPER_TABLE1.get((attention, sigma))
    if paper is None:
      return line + "; no published number for this cell"
    return line + f"; paper Table 1: {paper:.2f}"

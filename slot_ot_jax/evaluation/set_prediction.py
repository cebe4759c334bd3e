"""Set prediction: target layout, Hungarian Huber loss and average precision (AP).

Object property prediction (Slot Attention §4.2 and supplement Sec. 5.4 / 5.9; MESH §5.2,
App. F.2) predicts, per slot, a vector in [0, 1]^D laid out as

  [ coordinates (coord_dims) | one-hot group 1 | ... | one-hot group G | presence ]

and compares the K predictions of an image with its M zero-padded targets (padding rows are
all zeros, so their presence is 0). `TargetLayout` names the blocks: CLEVR has 3 coordinates
((x, y, z) mapped from [-3, 3] to [0, 1]), size (2), material (2), shape (3), colour (8) and
presence: 19 dims.

Loss (`hungarian_huber_loss`): the cost of a (prediction, target) pair is the Huber loss
(delta 1) averaged over the D dims; `optax.assignment.hungarian_algorithm` finds the
least-cost one-to-one matching of the K predictions with the M targets (padding included, so
presence is learned through the matching); the matched costs are summed per image. Gradients
flow through the matched costs only.

AP (`average_precision`), the Slot Attention supplement's definition (Sec. 5.9, after Zhang et
al., 2019): every prediction of every image of the evaluation set is ranked by its presence
(descending; ties keep image-then-slot order). Going down that list, a prediction is a true
positive when an object of its own image that is real (presence target 1), not yet claimed by
a higher-ranked prediction, has the same argmax in every one-hot group and lies at a distance
*strictly below* the threshold; the nearest such object is then claimed. Otherwise it is a
false positive (so a second prediction of one object is a false positive). Distances are
Euclidean between coordinates multiplied by `coord_scale` (6 maps CLEVR's [0, 1] back to its
[-3, 3] units); a distance exactly equal to the threshold is a false positive; threshold inf
ignores positions. Precision/recall at every rank (recall over the number of real objects),
AP = area under the every-point interpolated curve (precision replaced by its maximum at any
higher recall, summed over the recall steps), as in PASCAL VOC 2010+.
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import dataclasses
from typing import Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics

# The distance thresholds of Slot Attention Table 2 / MESH Tables 2 and 6 (in scene units).
AP_THRESHOLDS = (float("inf"), 1.0, 0.5, 0.25, 0.125, 0.0625)


@dataclasses.dataclass(frozen=True)
class TargetLayout:
  """Blocks of a prediction/target vector: coordinates, one-hot groups, presence last.

  Attributes:
    coord_dims: number of leading coordinate dims (3 for CLEVR, 2 for image positions).
    groups: (name, number of classes) of each one-hot block, in order.
    coord_scale: factor from the stored [0, 1] coordinates to the units of the AP
      thresholds (6 for CLEVR's [-3, 3]).
  """
  coord_dims: int
  groups: Tuple[Tuple[str, int], ...]
  coord_scale: float = 6.0

  @property
  def size(self) -> int:
    return self.coord_dims + sum(n for _, n in self.groups) + 1

  def group_slices(self) -> list[slice]:
    slices, start = [], self.coord_dims
    for _, n in self.groups:
      slices.append(slice(start, start + n))
      start += n
    return slices


# Slot Attention order: (x, y, z), size, material, shape, colour, presence.
CLEVR_LAYOUT = TargetLayout(coord_dims=3, groups=(("size", 2), ("material", 2), ("shape", 3),
                                                  ("color", 8)))


def threshold_name(threshold: float) -> str:
  """Metric name of a threshold: ap_inf, ap_1, ap_0.5, ..., ap_0.0625."""
  return "ap_inf" if np.isinf(threshold) else f"ap_{threshold:g}"


# ------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------
def pairwise_huber(predictions: jax.Array, targets: jax.Array, delta: float = 1.0) -> jax.Array:
  """`[B, K, D]`, `[B, M, D]` -> `[B, K, M]` Huber loss averaged over D for every pair."""
  per_dim = optax.losses.huber_loss(predictions[:, :, None, :], targets[:, None, :, :],
                                    delta=delta)
  return jnp.mean(per_dim, axis=-1)


def hungarian_huber_loss(predictions: jax.Array, targets: jax.Array,
                         delta: float = 1.0) -> jax.Array:
  """Per-image Hungarian Huber loss.

  Args:
    predictions: [B, K, D].
    targets: [B, M, D], padding rows included (they are matched too).
    delta: Huber delta (1 in the papers).

  Returns:
    [B] sum over the min(K, M) matched pairs of the pair cost (Huber averaged over D). The
    batch loss of the papers is the mean of this over the batch.
  """
  cost = pairwise_huber(predictions, targets, delta)
  rows, cols = jax.vmap(optax.assignment.hungarian_algorithm)(jax.lax.stop_gradient(cost))
  matched = jax.vmap(lambda c, r, k: c[r, k])(cost, rows, cols)  # [B, min(K, M)]
  return jnp.sum(matched, axis=-1)


# ------------------------------------------------------------------------------------------
# Average precision (numpy, on the host, over the whole evaluation set)
# ------------------------------------------------------------------------------------------
def _attributes(x: np.ndarray, layout: TargetLayout) -> np.ndarray:
  """`[..., D]` -> `[..., G]` argmax of each one-hot group."""
  return np.stack([np.argmax(x[..., s], axis=-1) for s in layout.group_slices()], axis=-1)


def true_positives(predictions: np.ndarray, targets: np.ndarray, layout: TargetLayout,
                   thresholds: Sequence[float] = AP_THRESHOLDS) -> np.ndarray:
  """Which predictions are true positives, per threshold.

  Images are independent, so the greedy claiming runs over the K ranks of each image, all
  images and thresholds at once.

  Args:
    predictions: [N, K, D] (presence last).
    targets: [N, M, D]; rows with presence <= 0.5 are padding.
    layout: the blocks of D.
    thresholds: distance thresholds (inf allowed).

  Returns:
    bool [T, N, K].
  """
  predictions = np.asarray(predictions, np.float64)
  targets = np.asarray(targets, np.float64)
  n, k = predictions.shape[:2]
  c = layout.coord_dims
  thr = np.asarray(thresholds, np.float64)[:, None]                      # [T, 1]
  real = targets[..., -1] > 0.5                                          # [N, M]
  same = np.all(_attributes(predictions, layout)[:, :, None, :]
                == _attributes(targets, layout)[:, None, :, :], axis=-1)  # [N, K, M]
  candidate = same & real[:, None, :]
  diff = (predictions[:, :, None, :c] - targets[:, None, :, :c]) * layout.coord_scale
  dist = np.sqrt(np.sum(np.square(diff), axis=-1))                       # [N, K, M]
  # Rank of the slots inside each image; stable, so ties keep slot order (as the global rank).
  order = np.argsort(-predictions[..., -1], axis=1, kind="stable")       # [N, K]
  rows = np.arange(n)
  claimed = np.zeros((len(thr), n, targets.shape[1]), bool)
  hits = np.zeros((len(thr), n, k), bool)
  for rank in range(k):
    slot = order[:, rank]
    free = candidate[rows, slot][None] & ~claimed                         # [T, N, M]
    d = np.where(free, dist[rows, slot][None], np.inf)
    nearest = np.argmin(d, axis=-1)                                       # [T, N]
    hit = np.take_along_axis(d, nearest[..., None], -1)[..., 0] < thr     # [T, N]
    hits[:, rows, slot] = hit
    t_idx, n_idx = np.nonzero(hit)
    claimed[t_idx, n_idx, nearest[t_idx, n_idx]] = True
  return hits


def average_precision(predictions: np.ndarray, targets: np.ndarray, layout: TargetLayout,
                      thresholds: Sequence[float] = AP_THRESHOLDS) -> np.ndarray:
  """AP over a whole evaluation set (module docstring), vectorised.

  Args:
    predictions: [N, K, D] in the layout, presence last (the ranking confidence).
    targets: [N, M, D], zero-padded.
    layout: the blocks of D.
    thresholds: distance thresholds in scene units.

  Returns:
    float64 [T] AP in [0, 1] per threshold; nan when the targets hold no real object.
  """
  predictions = np.asarray(predictions, np.float64)
  hits = true_positives(predictions, targets, layout, thresholds)        # [T, N, K]
  num_real = int(np.sum(np.asarray(targets)[..., -1] > 0.5))
  if num_real == 0:
    return np.full(len(thresholds), np.nan)
  ranking = np.argsort(-predictions[..., -1].reshape(-1), kind="stable")  # Global rank.
  tp = hits.reshape(len(thresholds), -1)[:, ranking]                      # [T, P]
  cum_tp = np.cumsum(tp, axis=1)
  precision = cum_tp / np.arange(1, tp.shape[1] + 1)
  # Every-point interpolation: the best precision at this or any later rank (higher recall).
  envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
  # Recall rises by 1 / num_real at each true positive, only there.
  return np.sum(np.where(tp, envelope, 0.0), axis=1) / num_real


# ------------------------------------------------------------------------------------------
# clu metrics
# ------------------------------------------------------------------------------------------
def make_eval_metrics(layout: TargetLayout, thresholds: Sequence[float] = AP_THRESHOLDS
                      ) -> type[clu_metrics.Collection]:
  """Collection of `loss` (mean over valid examples) and `ap_<threshold>` per threshold.

  Model outputs: loss [B], predictions [B, K, D], targets [B, M, D], mask bool [B] (False on
  evaluation padding, excluded from both). The predictions are gathered on the host over the
  whole evaluation set (the AP ranks them globally) and scored when `compute()` is called.
  """
  thresholds = tuple(float(t) for t in thresholds)

  @flax.struct.dataclass
  class AveragePrecision(clu_metrics.CollectingMetric.from_outputs(
      ("predictions", "targets", "mask"))):

    def compute(self):
      values = super().compute()
      keep = np.asarray(values["mask"], bool)
      ap = average_precision(values["predictions"][keep], values["targets"][keep], layout,
                             thresholds)
      return {threshold_name(t): float(v) for t, v in zip(thresholds, ap)}

  @flax.struct.dataclass
  class PropertyEvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    ap: AveragePrecision

    def compute(self):
      results = super().compute()
      results.update(results.pop("ap"))
      return results

  return PropertyEvalMetrics

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

AP (`average_precision`), two rules (docs/evaluation.md compares them):

* "official" (default) computes AP as the evaluator of the Slot Attention code does
  (google-research `slot_attention/utils.py`, `average_precision_clevr`, which follows the
  Deep Set Prediction Networks evaluator that the Slot Attention supplement, Sec. 5.9,
  cites). Every prediction of every image of the evaluation set is ranked by its presence
  (descending; tied predictions in reverse order of their flat index image * K + slot, as
  the official argsort-then-reverse gives). Going down that list, each prediction is given
  the *nearest* object of its own image that is real (presence target nonzero) and has the
  same argmax in every one-hot group, whether or not a higher-ranked prediction already
  claimed it. The prediction is a true positive when that distance is *strictly below* the
  threshold and the object is not yet claimed (it is then claimed); otherwise (no such
  object, too far, or already claimed) it is a false positive. Distances are computed in
  float32, as the official code does on its float32 arrays; recall is over the sum of the
  presence targets (the number of objects for 0/1 targets).
* "lenient" (our earlier rule) gives each prediction the nearest *unclaimed* such object,
  ranks ties in image-then-slot order, computes in float64 and counts presence > 0.5 as
  real. A prediction whose nearest match is already claimed may still claim a farther
  object with the same attributes, where the official rule counts a false positive, so the
  lenient AP is usually the higher one in scenes with identical objects. When attributes
  are unique within each image and confidences have no ties, the two rules agree (up to
  float32 rounding of distances at a threshold).

In both, distances are Euclidean between coordinates multiplied by `coord_scale` (6 maps
CLEVR's [0, 1] back to its [-3, 3] units), a distance exactly equal to the threshold is a
miss, and threshold inf ignores positions. Precision/recall at every rank, AP = area under
the every-point interpolated curve (precision replaced by its maximum at any higher recall,
summed over the recall steps), as in PASCAL VOC 2010+.
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import dataclasses
from typing import Sequence, Tuple

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

# The distance thresholds of Slot Attention Table 2 / MESH Tables 2 and 6 (in scene units).
AP_THRESHOLDS = (float("inf"), 1.0, 0.5, 0.25, 0.125, 0.0625)
# AP claim rules (module docstring); metric names: ap_<t> (official), ap_lenient_<t>.
AP_RULES = ("official", "lenient")


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


def threshold_name(threshold: float, rule: str = "official") -> str:
  """Metric name of a threshold: ap_inf, ap_1, ..., ap_0.0625 for the official rule,
  ap_lenient_inf, ap_lenient_1, ... for the lenient one."""
  _check_rule(rule)
  prefix = "ap_" if rule == "official" else f"ap_{rule}_"
  return prefix + ("inf" if np.isinf(threshold) else f"{threshold:g}")


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
  """`[..., D]` -> `[..., G]` argmax of each one-hot group (first maximum on ties)."""
  return np.stack([np.argmax(x[..., s], axis=-1) for s in layout.group_slices()], axis=-1)


def _check_rule(rule: str) -> None:
  if rule not in AP_RULES:
    raise ValueError(f"Unknown AP rule {rule!r}; valid: {', '.join(AP_RULES)}.")


def _slot_order(confidence: np.ndarray, rule: str) -> np.ndarray:
  """`[N, K]` confidences -> `[N, K]` slot indices of each image, best first.

  Official: ties in reverse slot order (the official evaluator's argsort then reversal);
  lenient: ties in slot order. Restricted to one image, the global rank of
  `_global_order` gives the same order, since the flat index is image * K + slot.
  """
  if rule == "official":
    k = confidence.shape[1]
    return k - 1 - np.argsort(-confidence[:, ::-1], axis=1, kind="stable")
  return np.argsort(-confidence, axis=1, kind="stable")


def _global_order(confidence: np.ndarray, rule: str) -> np.ndarray:
  """`[N, K]` -> `[N * K]` flat indices ranked over the whole set (ties as `_slot_order`)."""
  flat = confidence.reshape(-1)
  if rule == "official":
    return flat.size - 1 - np.argsort(-flat[::-1], kind="stable")
  return np.argsort(-flat, kind="stable")


def _prepare(predictions, targets, layout: TargetLayout, rule: str):
  """Per-rule dtypes, real objects [N, M], candidates [N, K, M] and distances [N, K, M]."""
  dtype = np.float32 if rule == "official" else np.float64
  predictions = np.asarray(predictions).astype(dtype)
  targets = np.asarray(targets).astype(dtype)
  c = layout.coord_dims
  presence = targets[..., -1]
  # Official: any nonzero presence is an object (`if target_real_obj`); lenient: > 0.5.
  real = presence != 0 if rule == "official" else presence > 0.5
  same = np.all(_attributes(predictions, layout)[:, :, None, :]
                == _attributes(targets, layout)[:, None, :, :], axis=-1)  # [N, K, M]
  diff = (predictions[:, :, None, :c] - targets[:, None, :, :c]) * dtype(layout.coord_scale)
  dist = np.sqrt(np.sum(np.square(diff), axis=-1))                       # [N, K, M], dtype
  return predictions, targets, real, same & real[:, None, :], dist


def true_positives(predictions: np.ndarray, targets: np.ndarray, layout: TargetLayout,
                   thresholds: Sequence[float] = AP_THRESHOLDS,
                   rule: str = "official") -> np.ndarray:
  """Which predictions are true positives, per threshold (module docstring for the rules).

  Images are independent, so the claiming runs over the K ranks of each image, all images
  and thresholds at once.

  Args:
    predictions: [N, K, D] (presence last).
    targets: [N, M, D]; zero presence marks padding ("lenient": presence <= 0.5).
    layout: the blocks of D.
    thresholds: distance thresholds (inf allowed).
    rule: "official" (default) or "lenient".

  Returns:
    bool [T, N, K].
  """
  _check_rule(rule)
  predictions, targets, _, candidate, dist = _prepare(predictions, targets, layout, rule)
  n, k = predictions.shape[:2]
  thr = np.asarray(thresholds, np.float64)[:, None]                      # [T, 1]
  order = _slot_order(predictions[..., -1], rule)                        # [N, K]
  rows = np.arange(n)
  claimed = np.zeros((len(thr), n, targets.shape[1]), bool)
  hits = np.zeros((len(thr), n, k), bool)
  if rule == "official":
    # The nearest same-attribute real object, claimed or not (first one on equal distances).
    d = np.where(candidate, dist, np.inf)
    nearest = np.argmin(d, axis=-1)                                      # [N, K]
    nearest_d = np.take_along_axis(d, nearest[..., None], -1)[..., 0]
  for rank in range(k):
    slot = order[:, rank]
    if rule == "official":
      target = np.broadcast_to(nearest[rows, slot], (len(thr), n))        # [T, N]
      close = nearest_d[rows, slot][None] < thr                           # [T, N]
      hit = close & ~np.take_along_axis(claimed, target[..., None], -1)[..., 0]
    else:
      free = candidate[rows, slot][None] & ~claimed                       # [T, N, M]
      d = np.where(free, dist[rows, slot][None], np.inf)
      target = np.argmin(d, axis=-1)                                      # [T, N]
      hit = np.take_along_axis(d, target[..., None], -1)[..., 0] < thr    # [T, N]
    hits[:, rows, slot] = hit
    t_idx, n_idx = np.nonzero(hit)
    claimed[t_idx, n_idx, target[t_idx, n_idx]] = True
  return hits


def average_precision(predictions: np.ndarray, targets: np.ndarray, layout: TargetLayout,
                      thresholds: Sequence[float] = AP_THRESHOLDS,
                      rule: str = "official") -> np.ndarray:
  """AP over a whole evaluation set (module docstring), vectorised.

  Args:
    predictions: [N, K, D] in the layout, presence last (the ranking confidence).
    targets: [N, M, D], zero-padded.
    layout: the blocks of D.
    thresholds: distance thresholds in scene units.
    rule: "official" (default: the Slot Attention evaluator) or "lenient".

  Returns:
    float64 [T] AP in [0, 1] per threshold; nan when the targets hold no real object.
  """
  _check_rule(rule)
  hits = true_positives(predictions, targets, layout, thresholds, rule)  # [T, N, K]
  predictions, targets, real, _, _ = _prepare(predictions, targets, layout, rule)
  # Official: recall over the sum of the presence targets (the number of objects for 0/1
  # targets); lenient: over the number of real objects.
  num_real = float(np.sum(targets[..., -1])) if rule == "official" else float(np.sum(real))
  if num_real == 0:
    return np.full(len(thresholds), np.nan)
  ranking = _global_order(predictions[..., -1], rule)
  tp = hits.reshape(len(thresholds), -1)[:, ranking]                      # [T, P]
  cum_tp = np.cumsum(tp, axis=1)
  precision = cum_tp / np.arange(1, tp.shape[1] + 1)
  recall = cum_tp / num_real
  if rule == "official":  # The official evaluator rounds both curves to float32.
    precision = precision.astype(np.float32).astype(np.float64)
    recall = recall.astype(np.float32).astype(np.float64)
  # Every-point interpolation: the best precision at this or any later rank (higher recall),
  # times the recall step, summed where recall rises (at the true positives only).
  envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
  step = np.diff(recall, axis=1, prepend=0.0)
  return np.sum(np.where(step != 0, envelope * step, 0.0), axis=1)


# ------------------------------------------------------------------------------------------
# clu metrics
# ------------------------------------------------------------------------------------------
def make_eval_metrics(layout: TargetLayout, thresholds: Sequence[float] = AP_THRESHOLDS,
                      rules: Sequence[str] = AP_RULES) -> type[clu_metrics.Collection]:
  """Collection of `loss` (mean over valid examples) and the AP of every rule and threshold.

  Metric names: `threshold_name(t, rule)`, i.e. ap_inf, ap_1, ... (official rule) and
  ap_lenient_inf, ap_lenient_1, ... (lenient rule). Model outputs: loss [B], predictions
  [B, K, D], targets [B, M, D], mask bool [B] (False on evaluation padding, excluded from
  both). The predictions are gathered on the host over the whole evaluation set (the AP
  ranks them globally) and scored when `compute()` is called.
  """
  thresholds = tuple(float(t) for t in thresholds)
  rules = tuple(rules)
  for rule in rules:
    _check_rule(rule)

  @flax.struct.dataclass
  class AveragePrecision(clu_metrics.CollectingMetric.from_outputs(
      ("predictions", "targets", "mask"))):

    def compute(self):
      values = super().compute()
      keep = np.asarray(values["mask"], bool)
      results = {}
      for rule in rules:
        ap = average_precision(values["predictions"][keep], values["targets"][keep], layout,
                               thresholds, rule=rule)
        results.update({threshold_name(t, rule): float(v) for t, v in zip(thresholds, ap)})
      return results

  @flax.struct.dataclass
  class PropertyEvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    ap: AveragePrecision

    def compute(self):
      results = super().compute()
      results.update(results.pop("ap"))
      return results

  return PropertyEvalMetrics

"""Tests of slot_ot_jax/evaluation/set_prediction.py: Hungarian Huber loss and average precision."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slot_ot_jax.evaluation import set_prediction as sp

LAYOUT = sp.CLEVR_LAYOUT  # 3 coords, size 2, material 2, shape 3, colour 8, presence: 19.
SMALL = sp.TargetLayout(coord_dims=2, groups=(("shape", 3), ("color", 2)), coord_scale=1.0)


def reference_ap(predictions, targets, layout, threshold):
  """AP written from the Slot Attention supplement's definition (Sec. 5.9), one loop each.

  Rank all predictions by confidence; each is a true positive if an unclaimed real object of
  its image has the same discrete properties and lies within the threshold (the nearest is
  claimed); area under the precision-recall curve made monotone at the unique recall values.
  """
  def attributes(vector):
    out, start = [], layout.coord_dims
    for _, n in layout.groups:
      group = list(vector[start:start + n])
      out.append(group.index(max(group)))
      start += n
    return out

  detections = []
  for image, slots in enumerate(predictions):
    for slot, vector in enumerate(slots):
      detections.append((float(vector[-1]), image, slot))
  detections.sort(key=lambda d: -d[0])  # Stable: ties stay in image, slot order.
  num_real = sum(1 for objects in targets for o in objects if o[-1] > 0.5)
  claimed = set()
  flags = []
  for _, image, slot in detections:
    p = predictions[image][slot]
    best, best_index = math.inf, None
    for index, o in enumerate(targets[image]):
      if o[-1] <= 0.5 or (image, index) in claimed or attributes(o) != attributes(p):
        continue
      d = math.dist([layout.coord_scale * v for v in p[:layout.coord_dims]],
                    [layout.coord_scale * v for v in o[:layout.coord_dims]])
      if d < best:
        best, best_index = d, index
    hit = best_index is not None and best < threshold
    if hit:
      claimed.add((image, best_index))
    flags.append(hit)
  precisions, recalls, tp = [], [], 0
  for rank, hit in enumerate(flags, start=1):
    tp += hit
    precisions.append(tp / rank)
    recalls.append(tp / num_real)
  recall = [0.0] + recalls + [1.0]
  precision = [0.0] + precisions + [0.0]
  for i in range(len(precision) - 2, -1, -1):
    precision[i] = max(precision[i], precision[i + 1])
  return sum((recall[i + 1] - recall[i]) * precision[i + 1] for i in range(len(recall) - 1)
             if recall[i + 1] != recall[i])


def make_object(layout, coords, classes, presence=1.0):
  vector = np.zeros(layout.size)
  vector[:layout.coord_dims] = coords
  for s, c in zip(layout.group_slices(), classes):
    vector[s.start + c] = 1.0
  vector[-1] = presence
  return vector


def random_problem(rng, layout, images, slots, objects):
  """Predictions near the targets, with some wrong classes and coordinate noise."""
  targets = np.zeros((images, objects, layout.size))
  predictions = np.zeros((images, slots, layout.size))
  for i in range(images):
    count = int(rng.integers(0, objects + 1))
    for j in range(count):
      targets[i, j] = make_object(layout, rng.uniform(0, 1, layout.coord_dims),
                                  [int(rng.integers(n)) for _, n in layout.groups])
    for j in range(slots):
      base = targets[i, j % max(count, 1)]
      classes = [int(np.argmax(base[s])) if rng.uniform() < 0.8 else int(rng.integers(n))
                 for s, (_, n) in zip(layout.group_slices(), layout.groups)]
      coords = base[:layout.coord_dims] + rng.normal(0, 0.08, layout.coord_dims)
      # Rounded confidences create ties, which must be broken identically.
      predictions[i, j] = make_object(layout, coords, classes, round(rng.uniform(), 1))
  return predictions, targets


@pytest.mark.parametrize("layout,seed", [(LAYOUT, 0), (LAYOUT, 1), (SMALL, 2), (SMALL, 3)])
def test_ap_matches_plain_python_reference(layout, seed):
  predictions, targets = random_problem(np.random.default_rng(seed), layout, 7, 5, 4)
  thresholds = (math.inf, 1.0, 0.5, 0.25, 0.125, 0.0625)
  got = sp.average_precision(predictions, targets, layout, thresholds)
  want = [reference_ap(predictions.tolist(), targets.tolist(), layout, t) for t in thresholds]
  np.testing.assert_allclose(got, want, atol=1e-12)
  assert len(set(np.round(want, 6))) > 2  # The thresholds do separate this problem.


def _two_objects():
  a = make_object(LAYOUT, [0.2, 0.3, 0.4], [0, 1, 2, 5])
  b = make_object(LAYOUT, [0.7, 0.6, 0.5], [1, 0, 0, 3])
  targets = np.stack([a, b, np.zeros(LAYOUT.size)])[None]  # [1, 3, 19], one padding row.
  return a, b, targets


def test_ap_perfect_predictions_give_one():
  a, b, targets = _two_objects()
  predictions = np.stack([b, np.zeros(LAYOUT.size), a])[None]
  np.testing.assert_allclose(sp.average_precision(predictions, targets, LAYOUT), 1.0)


def test_ap_wrong_colour_is_a_false_positive():
  a, b, targets = _two_objects()
  wrong = a.copy()
  wrong[LAYOUT.group_slices()[3]] = 0.0
  wrong[LAYOUT.group_slices()[3].start + 6] = 1.0  # colour 6 instead of 5.
  wrong[-1] = 0.9  # Ranked first: a false positive at rank 1.
  b = b.copy()
  b[-1] = 0.8
  predictions = np.stack([wrong, b])[None]
  hits = sp.true_positives(predictions, targets, LAYOUT)
  assert not hits[:, 0, 0].any() and hits[:, 0, 1].all()
  # Ranks: FP, TP -> precision at recall 1/2 is 1/2; object a is never found.
  np.testing.assert_allclose(sp.average_precision(predictions, targets, LAYOUT), 0.25)


def test_ap_duplicate_prediction_is_one_tp_one_fp():
  a, _, targets = _two_objects()
  first, second = a.copy(), a.copy()
  first[-1], second[-1] = 0.9, 0.8
  hits = sp.true_positives(np.stack([second, first])[None], targets, LAYOUT)
  np.testing.assert_array_equal(hits[:, 0], [[False, True]] * len(sp.AP_THRESHOLDS))
  # TP at rank 1, FP at rank 2: recall 1/2 at precision 1.
  np.testing.assert_allclose(
      sp.average_precision(np.stack([second, first])[None], targets, LAYOUT), 0.5)


def test_ap_threshold_is_strict_and_in_scene_units():
  a, _, targets = _two_objects()
  # Shifted by 0.5 / 6 in x: 0.5 scene units after the [0, 1] -> [-3, 3] mapping (exact in
  # binary floating point: 0.25 + 1/12 = 1/3 does not round 0.5 away).
  moved = a.copy()
  moved[0] = 0.25
  targets = targets.copy()
  targets[0, 0, 0] = 0.25 - 0.5 / 6
  distance = 6 * abs(moved[0] - targets[0, 0, 0])
  thresholds = (math.inf, 1.0, 0.75, distance, 0.25)
  hits = sp.true_positives(moved[None, None], targets, LAYOUT, thresholds)[:, 0, 0]
  # A distance equal to the threshold is a miss (strictly below counts).
  np.testing.assert_array_equal(hits, [True, True, True, False, False])


def test_ap_no_real_objects_is_nan_and_padding_predictions_rank_last():
  targets = np.zeros((2, 3, LAYOUT.size))
  assert np.isnan(sp.average_precision(np.zeros((2, 4, LAYOUT.size)), targets, LAYOUT)).all()
  a, _, targets = _two_objects()
  # Low-presence extra predictions after all true positives leave AP unchanged.
  extra = np.zeros(LAYOUT.size)
  extra[-1] = 0.01
  full = np.stack([a, extra, extra])[None]
  np.testing.assert_allclose(sp.average_precision(full, targets, LAYOUT), 0.5)


def test_eval_metrics_collection_masks_padding_and_names_thresholds():
  a, b, targets = _two_objects()
  collection = sp.make_eval_metrics(LAYOUT)
  good = np.stack([a, b, np.zeros(LAYOUT.size)])[None]
  garbage = np.ones_like(good)  # Would be false positives at presence 1 if not masked.
  batches = [(good, np.array([True])), (garbage, np.array([False]))]
  metrics = None
  for preds, mask in batches:
    update = collection.single_from_model_output(
        loss=jnp.array([0.5]), predictions=jnp.asarray(preds), targets=jnp.asarray(targets),
        mask=jnp.asarray(mask))
    metrics = update if metrics is None else metrics.merge(update)
  result = metrics.compute()
  assert set(result) == {"loss", "ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125", "ap_0.0625"}
  assert result["ap_0.0625"] == pytest.approx(1.0)
  assert float(result["loss"]) == pytest.approx(0.5)


_LOSS = jax.jit(sp.hungarian_huber_loss)  # One compilation for the [2, 4, 5] problems below.


def test_hungarian_huber_loss_hand_worked_and_permutation_invariant():
  # Best pairs: pred 0 <-> target 1 (error 0.5 in 1 of 5 dims: Huber 0.125, mean 0.025) and
  # pred 1 <-> target 0 (error 3 in 1 dim: Huber 2.5, mean 0.5); preds 2, 3 equal the padding
  # targets 2, 3 (all zeros). Image 1 is image 0 with both sets permuted.
  predictions = np.zeros((2, 4, 5), np.float32)
  targets = np.zeros((2, 4, 5), np.float32)
  predictions[0, 0, 0], targets[0, 1, 0] = 1.5, 1.0
  predictions[0, 1, 1], targets[0, 0, 1] = 3.0, 0.0
  targets[0, 0, 4] = targets[0, 1, 4] = predictions[0, 0, 4] = predictions[0, 1, 4] = 1.0
  predictions[1] = predictions[0, ::-1]
  targets[1] = targets[0, [2, 0, 3, 1]]
  loss = _LOSS(jnp.asarray(predictions), jnp.asarray(targets))
  # Pair costs: (0.5^2 / 2) / 5 = 0.025 and (3 - 0.5) / 5 = 0.5, summed over the image.
  np.testing.assert_allclose(loss, [0.525, 0.525], rtol=1e-6)


def test_hungarian_huber_loss_matches_padding_and_has_gradients():
  rng = np.random.default_rng(0)
  targets = np.zeros((2, 4, 5), np.float32)
  targets[:, :2] = rng.uniform(size=(2, 2, 5))
  predictions = jnp.asarray(rng.uniform(size=(2, 4, 5)), jnp.float32)
  loss = _LOSS(predictions, jnp.asarray(targets))
  # Brute force over the 24 permutations: the matching is the cheapest one, padding included.
  import itertools
  cost = np.asarray(sp.pairwise_huber(predictions, jnp.asarray(targets)))
  best = [min(sum(c[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4)))
          for c in cost]
  np.testing.assert_allclose(loss, best, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p, t: jnp.mean(sp.hungarian_huber_loss(p, t))))(
      predictions, jnp.asarray(targets))
  assert np.all(np.isfinite(grads)) and np.abs(grads).sum() > 0

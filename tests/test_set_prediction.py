"""Tests of slot_ot_jax/evaluation/set_prediction.py: Hungarian Huber loss and average precision."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slot_ot_jax.evaluation import set_prediction as sp

LAYOUT = sp.CLEVR_LAYOUT  # 3 coords, size 2, material 2, shape 3, colour 8, presence: 19.
SMALL = sp.TargetLayout(coord_dims=2, groups=(("shape", 3), ("color", 2)), coord_scale=1.0)


def _attributes(vector, layout):
  """The index of the largest entry of each one-hot group of a target or prediction vector."""
  out, start = [], layout.coord_dims
  for _, n in layout.groups:
    group = list(vector[start:start + n])
    out.append(group.index(max(group)))
    start += n
  return out


def reference_ap(predictions, targets, layout, threshold):
  """The lenient rule written as plain loops.

  Rank all predictions by confidence (ties in image, slot order); each is a true positive if
  an unclaimed real object of its image has the same discrete properties and lies within the
  threshold (the nearest is claimed); area under the precision-recall curve made monotone at
  the unique recall values.
  """
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
      if (o[-1] <= 0.5 or (image, index) in claimed
          or _attributes(o, layout) != _attributes(p, layout)):
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


def official_reference_ap(predictions, targets, layout, threshold):
  """The official rule written as plain loops from the Slot Attention evaluator's description.

  Ranking by confidence with ties in reverse flat index order; each prediction takes the
  nearest real same-attribute object of its image (claimed or not; float32 distances) and
  is a true positive only if it is within the threshold and not yet claimed.
  """
  predictions = np.asarray(predictions, np.float32)
  targets = np.asarray(targets, np.float32)
  k = predictions.shape[1]
  flat = [(float(predictions[i, j, -1]), i * k + j) for i in range(len(predictions))
          for j in range(k)]
  flat.sort(key=lambda d: (-d[0], -d[1]))  # Ties: higher flat index first.
  claimed, flags = set(), []
  for _, index in flat:
    image, slot = divmod(index, k)
    p = predictions[image, slot]
    best, best_index = np.float32(np.inf), None
    for m, o in enumerate(targets[image]):
      if o[-1] == 0 or _attributes(o, layout) != _attributes(p, layout):
        continue
      diff = (p[:layout.coord_dims] - o[:layout.coord_dims]) * np.float32(layout.coord_scale)
      d = np.sqrt(np.sum(diff * diff, dtype=np.float32), dtype=np.float32)
      if d < best:
        best, best_index = d, m
    hit = best_index is not None and best < threshold and (image, best_index) not in claimed
    if hit:
      claimed.add((image, best_index))
    flags.append(hit)
  num_real = float(np.sum(targets[..., -1]))
  tp, recall, precision = 0, [0.0], [0.0]
  for rank, hit in enumerate(flags, start=1):
    tp += hit
    precision.append(float(np.float32(tp / rank)))
    recall.append(float(np.float32(tp / num_real)))
  recall.append(1.0)
  precision.append(0.0)
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
  got = sp.average_precision(predictions, targets, layout, thresholds, rule="lenient")
  want = [reference_ap(predictions.tolist(), targets.tolist(), layout, t) for t in thresholds]
  np.testing.assert_allclose(got, want, atol=1e-12)
  assert len(set(np.round(want, 6))) > 2  # The thresholds do separate this problem.
  got = sp.average_precision(predictions, targets, layout, thresholds)  # Official default.
  want = [official_reference_ap(predictions, targets, layout, t) for t in thresholds]
  np.testing.assert_allclose(got, want, atol=1e-12)
  assert len(set(np.round(want, 6))) > 2


def _identical_pair():
  """Two objects with the same attributes at x = 0.5 and 0.55 (y = z = 0.5); predictions
  of those attributes at x = 0.5 (confidence 0.9) and x = 0.51 (confidence 0.8)."""
  classes = [0, 1, 2, 5]
  targets = np.stack([make_object(LAYOUT, [0.5, 0.5, 0.5], classes),
                      make_object(LAYOUT, [0.55, 0.5, 0.5], classes)])[None]
  predictions = np.stack([make_object(LAYOUT, [0.5, 0.5, 0.5], classes, 0.9),
                          make_object(LAYOUT, [0.51, 0.5, 0.5], classes, 0.8)])[None]
  return predictions, targets


def test_ap_claim_rule_official_vs_lenient_hand_worked():
  predictions, targets = _identical_pair()
  # The second prediction is 0.06 from the first object (claimed) and 0.24 from the second.
  # Official: it takes the nearest, claimed object -> false positive at every threshold:
  # TP, FP -> precision 1 up to recall 1/2 -> AP 0.5.
  np.testing.assert_allclose(sp.average_precision(predictions, targets, LAYOUT), 0.5,
                             atol=1e-7)
  hits = sp.true_positives(predictions, targets, LAYOUT)
  assert hits[:, 0, 0].all() and not hits[:, 0, 1].any()
  # Lenient: it claims the free second object where 0.24 is below the threshold.
  np.testing.assert_allclose(
      sp.average_precision(predictions, targets, LAYOUT, rule="lenient"),
      [1, 1, 1, 1, 0.5, 0.5], atol=1e-12)


def test_ap_ties_rank_in_reverse_index_order_officially():
  a, _, targets = _two_objects()
  wrong = a.copy()
  wrong[LAYOUT.group_slices()[2]] = 0.0
  wrong[LAYOUT.group_slices()[2].start] = 1.0  # Shape 0 instead of 2: never a match.
  a, wrong = a.copy(), wrong.copy()
  a[-1] = wrong[-1] = 0.5  # Tied: slot 0 wrong, slot 1 right.
  predictions = np.stack([wrong, a])[None]
  # Official: slot 1 ranks first -> TP, FP: precision 1 at recall 1/2 -> 0.5.
  np.testing.assert_allclose(sp.average_precision(predictions, targets, LAYOUT), 0.5,
                             atol=1e-7)
  # Lenient: slot 0 first -> FP, TP: precision 1/2 at recall 1/2 -> 0.25.
  np.testing.assert_allclose(sp.average_precision(predictions, targets, LAYOUT,
                                                  rule="lenient"), 0.25)
  # Across images as well: the later image's tied prediction ranks first officially.
  # Flat indices 0, 1 (image 0: wrong, wrong), 2, 3 (image 1: wrong, a); 4 real objects.
  two = np.stack([np.stack([wrong, wrong]), np.stack([wrong, a])])
  both = np.concatenate([targets, targets])
  # Official order 3, 2, 1, 0: TP first -> precision 1 at recall 1/4.
  np.testing.assert_allclose(sp.average_precision(two, both, LAYOUT)[0], 0.25, atol=1e-7)
  # Lenient order 0, 1, 2, 3: the TP last -> precision 1/4 at recall 1/4.
  np.testing.assert_allclose(sp.average_precision(two, both, LAYOUT, rule="lenient")[0],
                             1 / 16)


def test_ap_official_distances_are_float32():
  a, _, targets = _two_objects()
  targets = targets.copy()
  targets[0, 0, :3] = [0.5, 0.5, 0.5]
  moved = a.copy()
  moved[:3] = [0.5, 0.5, 0.5]
  # A shift just under 0.25 scene units in float64 that float32 rounds up to 0.25.
  moved[0] = 0.5 + 0.25 / 6 - 1e-12
  d64 = 6 * (moved[0] - 0.5)
  d32 = (np.float32(moved[0]) - np.float32(0.5)) * np.float32(6)
  assert d64 < 0.25 <= d32
  thresholds = (0.25,)
  assert not sp.true_positives(moved[None, None], targets, LAYOUT, thresholds)[0, 0, 0]
  assert sp.true_positives(moved[None, None], targets, LAYOUT, thresholds,
                           rule="lenient")[0, 0, 0]


def test_ap_official_counts_any_nonzero_presence_as_an_object():
  a, _, targets = _two_objects()
  targets = targets[:, :1].copy()
  targets[0, 0, -1] = 0.3  # Not a 0/1 target: an object officially, padding when lenient.
  predictions = a[None, None]
  assert sp.true_positives(predictions, targets, LAYOUT)[:, 0, 0].all()
  assert not sp.true_positives(predictions, targets, LAYOUT, rule="lenient").any()
  assert np.isnan(sp.average_precision(predictions, targets, LAYOUT, rule="lenient")).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_rules_agree_when_attributes_are_unique_per_image(seed):
  rng = np.random.default_rng(seed)
  layout = SMALL  # 3 shapes x 2 colours: up to 6 distinct objects per image.
  images, slots, objects = 20, 6, 5
  combos = [(s, c) for s in range(3) for c in range(2)]
  targets = np.zeros((images, objects, layout.size))
  predictions = np.zeros((images, slots, layout.size))
  for i in range(images):
    count = int(rng.integers(0, objects + 1))
    chosen = rng.permutation(len(combos))[:count]
    for j, c in enumerate(chosen):
      targets[i, j] = make_object(layout, rng.uniform(0, 1, 2), combos[c])
    for j in range(slots):  # Duplicates and wrong attributes included.
      c = combos[chosen[j % count]] if count and rng.uniform() < 0.8 else \
          combos[int(rng.integers(len(combos)))]
      base = targets[i, j % count, :2] if count else rng.uniform(0, 1, 2)
      predictions[i, j] = make_object(layout, base + rng.normal(0, 0.1, 2), c,
                                      rng.uniform())  # Continuous: no ties.
  thresholds = (math.inf, 0.5, 0.25, 0.125)
  official = sp.average_precision(predictions, targets, layout, thresholds)
  lenient = sp.average_precision(predictions, targets, layout, thresholds, rule="lenient")
  np.testing.assert_allclose(official, lenient, atol=1e-6)
  assert len(set(np.round(official, 4))) > 1  # Positions matter in this problem.
  # With an identical pair per image, the rules part (test above, hand-worked).
  predictions, targets = _identical_pair()
  assert not np.allclose(sp.average_precision(predictions, targets, LAYOUT),
                         sp.average_precision(predictions, targets, LAYOUT, rule="lenient"))


def test_ap_unknown_rule_is_an_error():
  with pytest.raises(ValueError, match="lenient"):
    sp.average_precision(np.zeros((1, 1, LAYOUT.size)), np.zeros((1, 1, LAYOUT.size)),
                         LAYOUT, rule="strict")


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


@pytest.mark.parametrize("rule", sp.AP_RULES)
def test_ap_threshold_is_strict_and_in_scene_units(rule):
  a, _, targets = _two_objects()
  # Shifted by 0.5 / 6 in x: 0.5 scene units after the [0, 1] -> [-3, 3] mapping.
  moved = a.copy()
  moved[0] = 0.25
  targets = targets.copy()
  targets[0, 0, 0] = 0.25 - 0.5 / 6
  dtype = np.float32 if rule == "official" else np.float64
  distance = float(dtype(6) * abs(dtype(moved[0]) - dtype(targets[0, 0, 0])))
  assert distance == pytest.approx(0.5)
  thresholds = (math.inf, 1.0, 0.75, distance, 0.25)
  hits = sp.true_positives(moved[None, None], targets, LAYOUT, thresholds, rule=rule)[:, 0, 0]
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
  names = {"ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125", "ap_0.0625"}
  assert set(result) == {"loss"} | names | {n.replace("ap_", "ap_lenient_") for n in names}
  assert result["ap_0.0625"] == pytest.approx(1.0)
  assert result["ap_lenient_0.0625"] == pytest.approx(1.0)
  # The two rules are computed from the same gathered predictions.
  pair_preds, pair_targets = _identical_pair()
  pair = collection.single_from_model_output(
      loss=jnp.array([0.0]), predictions=jnp.asarray(pair_preds),
      targets=jnp.asarray(pair_targets), mask=jnp.array([True])).compute()
  assert pair["ap_0.25"] == pytest.approx(0.5) and pair["ap_lenient_0.25"] == pytest.approx(1)
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

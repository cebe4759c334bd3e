"""Tests of the object-discovery metrics (slot_ot_jax/evaluation/metrics.py)."""
import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from sklearn.metrics import adjusted_rand_score

from slot_ot_jax.evaluation import metrics as M


def _ids(*rows):
  return jnp.asarray(np.array(rows, dtype=np.int32))


def _random_maps(seed, batch=24, pixels=300, num_true=6, num_pred=7):
  """Label maps with varied cluster counts and varied agreement between truth and guess."""
  rng = np.random.default_rng(seed)
  true = np.zeros((batch, pixels), np.int32)
  pred = np.zeros((batch, pixels), np.int32)
  for i in range(batch):
    kt, kp = rng.integers(1, num_true + 1), rng.integers(1, num_pred + 1)
    true[i] = rng.integers(0, kt, pixels)
    noise = rng.random(pixels) < rng.random()  # fraction of pixels guessed at random
    pred[i] = np.where(noise, rng.integers(0, kp, pixels), true[i] % kp)
    pred[i] = rng.permutation(num_pred)[pred[i]]  # slot order is arbitrary
  return true, pred


def _miou_reference(true, pred, num_true, num_pred):
  """Plain numpy/scipy FG-mIoU with MESH semantics, one image of [P] labels."""
  objects = [j for j in range(1, num_true) if np.any(true == j)]
  if not objects:
    return 1.0
  iou = np.zeros((len(objects), num_pred))
  for r, j in enumerate(objects):
    for k in range(num_pred):
      inter = np.sum((true == j) & (pred == k))
      union = np.sum((true == j) | (pred == k))
      iou[r, k] = inter / union
  rows, cols = scipy.optimize.linear_sum_assignment(1.0 - iou)
  return iou[rows, cols].sum() / len(objects)


class AriTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2, 3, 4)
  def test_against_sklearn(self, seed):
    true, pred = _random_maps(seed)
    ari = M.adjusted_rand_index(jnp.asarray(true), jnp.asarray(pred), num_true=6, num_pred=7)
    fg = M.fg_ari(jnp.asarray(true), jnp.asarray(pred), num_true=6, num_pred=7)
    for i in range(true.shape[0]):
      np.testing.assert_allclose(ari[i], adjusted_rand_score(true[i], pred[i]), atol=1e-5)
      keep = true[i] > 0
      expected = adjusted_rand_score(true[i][keep], pred[i][keep]) if keep.any() else 1.0
      np.testing.assert_allclose(fg[i], expected, atol=1e-5)

  def test_spatial_shape_and_valid_mask(self):
    true, pred = _random_maps(7, batch=4, pixels=96)
    valid = np.random.default_rng(7).random(true.shape) < 0.6
    ari = M.adjusted_rand_index(jnp.asarray(true).reshape(4, 8, 12),
                                jnp.asarray(pred).reshape(4, 8, 12), num_true=6, num_pred=7,
                                valid=jnp.asarray(valid).reshape(4, 8, 12))
    for i in range(4):
      expected = adjusted_rand_score(true[i][valid[i]], pred[i][valid[i]])
      np.testing.assert_allclose(ari[i], expected, atol=1e-5)

  def test_edge_cases(self):
    true = _ids([0, 0, 1, 1, 1, 0],   # one object segmented perfectly: zero denominator
                [0, 0, 1, 1, 1, 0],   # one object split over two slots
                [0, 0, 0, 0, 0, 0],   # no foreground at all
                [0, 0, 0, 1, 0, 0],   # a single foreground pixel
                [1, 2, 3, 0, 0, 0])   # every object one pixel (all singletons)
    pred = _ids([0, 0, 1, 1, 1, 0],
                [0, 0, 1, 1, 2, 0],
                [0, 1, 2, 0, 1, 2],
                [0, 1, 2, 0, 1, 2],
                [2, 0, 1, 1, 1, 1])
    kw = dict(num_true=4, num_pred=3)
    np.testing.assert_allclose(M.fg_ari(true, pred, **kw), [1.0, 0.0, 1.0, 1.0, 1.0])
    for i in (0, 1, 3, 4):  # sklearn agrees wherever it is defined
      keep = np.asarray(true[i]) > 0
      self.assertAlmostEqual(float(M.fg_ari(true, pred, **kw)[i]),
                             adjusted_rand_score(np.asarray(true[i])[keep],
                                                 np.asarray(pred[i])[keep]), places=6)
    nan_empty = M.fg_ari(true, pred, empty_value=float("nan"), **kw)
    self.assertTrue(np.isnan(nan_empty[2]))
    self.assertEqual(int(np.isnan(nan_empty).sum()), 1)

  def test_large_image_perfect_and_permuted(self):
    # 128 x 128 pixels: the single-cluster test must not depend on float round-off.
    true = np.zeros((2, 128 * 128), np.int32)
    true[:, 1000:9000] = 1
    pred = np.where(true == 1, 3, 5)
    pred[1, 9000:] = np.arange(128 * 128 - 9000) % 4  # background spread over slots
    np.testing.assert_allclose(M.fg_ari(jnp.asarray(true), jnp.asarray(pred), num_true=2,
                                        num_pred=6), [1.0, 1.0])
    ari = M.adjusted_rand_index(jnp.asarray(true), jnp.asarray(pred), num_true=2, num_pred=6)
    np.testing.assert_allclose(ari, [adjusted_rand_score(true[i], pred[i]) for i in (0, 1)],
                               atol=1e-5)


class MiouTest(parameterized.TestCase):

  def test_hand_worked(self):
    # One batch (one compilation): 6 true labels (0 = background), 4 slots, 8 pixels of
    # which the ones marked "x" in the comments are invalid (padding) and must not count.
    true = _ids([0, 0, 1, 1, 1, 2, 2, 0],   # A: objects 1 (3 px), 2 (2 px); 3-5 absent
                [1, 1, 2, 2, 3, 3, 4, 5],   # B: five objects, four slots
                [0, 0, 0, 0, 5, 5, 5, 5],   # C: no foreground; xxxx
                [0, 1, 1, 2, 4, 4, 4, 4],   # D: perfect; xxxx
                [0, 1, 1, 2, 4, 4, 4, 4])   # E: xxxx
    pred = _ids([0, 0, 1, 1, 2, 2, 2, 3],
                [0, 0, 1, 1, 2, 2, 3, 3],
                [0, 0, 1, 1, 3, 3, 3, 3],
                [2, 0, 0, 1, 3, 3, 3, 3],
                [2, 1, 0, 1, 3, 3, 3, 3])
    valid = jnp.asarray([[True] * 8, [True] * 8] + [[True] * 4 + [False] * 4] * 3)
    kw = dict(num_true=6, num_pred=4, valid=valid)
    # A: IoU(1, slot 1) = IoU(2, slot 2) = 2/3; slots 0 and 3 unmatched, ignored.
    # B: objects 1-3 have their slot (IoU 1); 4 and 5 share slot 3 (IoU 1/2 each): one of
    #    them gets it, the other none (IoU 0) -> (3 + 1/2) / 5.
    # C: empty -> empty_value.   D: 1.   E: 1 -> slot 0 (1/2), 2 -> slot 1 (1/2).
    mesh = [2 / 3, 0.7, 1.0, 1.0, 0.5]
    np.testing.assert_allclose(M.fg_miou(true, pred, **kw), mesh, rtol=1e-6)
    np.testing.assert_allclose(M.fg_miou(true, pred, empty_value=0.0, **kw),
                               [2 / 3, 0.7, 0.0, 1.0, 0.5], rtol=1e-6)
    # ClevrTex: the background takes part in the matching and each non-empty slot beyond
    # the present true masks (background included) adds an IoU-0 term.
    # A: background takes slot 0, slot 3 is surplus -> (2/3 + 2/3) / 3.
    # B: no background pixel, 5 present masks, 4 slots -> no surplus.
    # C: one present mask (background), two non-empty slots -> 0 / 1.
    clevrtex = [4 / 9, 0.7, 0.0, 1.0, 0.5]
    np.testing.assert_allclose(
        M.fg_miou(true, pred, count_unmatched_predictions=True, **kw), clevrtex, rtol=1e-6)
    np.testing.assert_array_equal(M.has_foreground(true, valid), [True] * 2 + [False] + [True] * 2)

  def test_against_scipy_reference(self):
    true, pred = _random_maps(11, batch=16, pixels=64, num_true=5, num_pred=6)
    true[3] = 0  # one image without foreground
    got = M.fg_miou(jnp.asarray(true), jnp.asarray(pred), num_true=5, num_pred=6)
    expected = [_miou_reference(t, p, 5, 6) for t, p in zip(true, pred)]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    perm = np.random.default_rng(0).permutation(6)  # relabelling slots changes nothing
    np.testing.assert_allclose(
        M.fg_miou(jnp.asarray(true), jnp.asarray(perm[pred]), num_true=5, num_pred=6), got,
        atol=1e-6)


class TemporalConsistencyTest(absltest.TestCase):
  """Hand-worked cases of the MESH definition (no ties between equal-cost matchings)."""

  def test_cases(self):
    kw = dict(num_true=4, num_pred=3)
    true = _ids([[0, 1, 1, 2, 2, 0], [0, 2, 2, 1, 1, 3]],    # objects move; 3 appears
                [[0, 1, 1, 2, 2, 0], [0, 2, 2, 1, 1, 0]],
                [[0, 1, 1, 0, 0, 0], [0, 0, 0, 2, 2, 0]])    # no object in both frames
    pred = _ids([[0, 1, 1, 2, 2, 0], [0, 2, 2, 1, 1, 0]],    # slots follow the objects
                [[0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0]],    # slots swap objects
                [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    consistent, common = M.temporal_consistency_counts(true, pred, **kw)
    np.testing.assert_array_equal(common, [2, 2, 0])
    np.testing.assert_array_equal(consistent, [2, 0, 0])
    np.testing.assert_allclose(M.temporal_consistency(true, pred, **kw), [1.0, 0.0, 1.0])

  def test_zero_iou_match_counts(self):
    # Frame 2: slot 0 covers everything, slot 1 is empty. The matching gives object 1
    # slot 0 (IoU 3/6) and object 2 the empty slot 1 (IoU 0; the other way round costs
    # more). Object 2 had slot 1 in frame 1 too, so both objects are consistent (MESH
    # has no IoU > 0 condition): TC = 1, not 1/2.
    true = _ids([[1, 1, 2, 2, 0, 0], [1, 1, 1, 2, 0, 0]])
    pred = _ids([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    consistent, common = M.temporal_consistency_counts(true, pred, num_true=3, num_pred=2)
    np.testing.assert_array_equal(common, [2])
    np.testing.assert_array_equal(consistent, [2])

  def test_more_objects_than_slots(self):
    # Three objects, two slots: the object left without a slot is never consistent.
    true = _ids([[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3]])
    pred = _ids([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    consistent, common = M.temporal_consistency_counts(true, pred, num_true=4, num_pred=2)
    np.testing.assert_array_equal(common, [3])
    np.testing.assert_array_equal(consistent, [2])

  def test_attribute_identity_hand_worked(self):
    # Objects 1 and 2 look identical (same code); each frame has both, each in its own slot.
    true = _ids([[0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0]],
                [[0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0]])
    pred = _ids([[0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0]],    # both keep their slots
                [[0, 1, 1, 2, 2, 0], [0, 2, 2, 1, 1, 0]])    # the slots swap objects
    kw = dict(num_true=3, num_pred=3)
    same = jnp.array([[-1, 7, 7]] * 2)  # Background code ignored.
    np.testing.assert_allclose(M.temporal_consistency(true, pred, **kw), [1.0, 0.0])
    # MESH's attribute identity: 4 same-attribute pairs, 2 of them share a slot, either way.
    consistent, pairs = M.temporal_consistency_counts(true, pred, identity=same, **kw)
    np.testing.assert_array_equal(pairs, [4, 4])
    np.testing.assert_array_equal(consistent, [2, 2])
    np.testing.assert_allclose(M.temporal_consistency(true, pred, identity=same, **kw),
                               [0.5, 0.5])
    # Distinct codes reduce to the ids.
    distinct = jnp.array([[-1, 3, 5]] * 2)
    np.testing.assert_allclose(M.temporal_consistency(true, pred, identity=distinct, **kw),
                               [1.0, 0.0])

  def test_attribute_identity_against_scipy_reference(self):
    rng = np.random.default_rng(5)
    b, pixels, num_true, num_pred = 12, 40, 6, 6
    true = rng.integers(0, num_true, (b, 2, pixels)).astype(np.int32)
    true[0, 1] = 0  # No object in frame 1: no pair.
    pred = np.where(rng.random((b, 2, pixels)) < 0.7, true,
                    rng.integers(0, num_pred, (b, 2, pixels))).astype(np.int32)
    pred[:, 1] = rng.permutation(num_pred)[pred[:, 1]] * (rng.random((b, 1)) < 0.5) + \
        pred[:, 1] * (rng.random((b, 1)) >= 0.5)
    codes = rng.integers(0, 3, (b, num_true)).astype(np.int32)  # Repeated codes.
    got_c, got_p = M.temporal_consistency_counts(jnp.asarray(true), jnp.asarray(pred),
                                                 num_true=num_true, num_pred=num_pred,
                                                 identity=jnp.asarray(codes))
    for i in range(b):  # MESH `time_consistency_accuracy` semantics, written out.
      slots = []
      for f in range(2):
        objects = [j for j in range(1, num_true) if np.any(true[i, f] == j)]
        iou = np.array([[np.sum((true[i, f] == j) & (pred[i, f] == k)) /
                         np.sum((true[i, f] == j) | (pred[i, f] == k))
                         for k in range(num_pred)] for j in objects]).reshape(-1, num_pred)
        rows, cols = scipy.optimize.linear_sum_assignment(1.0 - iou)
        slots.append({objects[r]: c for r, c in zip(rows, cols)})
      pairs = [(n, m) for n in slots[0] for m in slots[1] if codes[i, n] == codes[i, m]]
      self.assertEqual(int(got_p[i]), len(pairs))
      self.assertEqual(int(got_c[i]), sum(slots[0][n] == slots[1][m] for n, m in pairs))
    self.assertGreater(int(np.sum(got_p)), int(np.sum(got_c)))


class TransformTest(absltest.TestCase):

  def test_jit_and_vmap_match_eager(self):
    true, pred = _random_maps(3, batch=6, pixels=48, num_true=4, num_pred=5)
    true, pred = jnp.asarray(true), jnp.asarray(pred)
    video_t, video_p = true.reshape(3, 2, 48), pred.reshape(3, 2, 48)
    for fn, args in ((M.fg_ari, (true, pred)), (M.fg_miou, (true, pred)),
                     (M.temporal_consistency, (video_t, video_p))):
      f = functools.partial(fn, num_true=4, num_pred=5)
      eager = f(*args)
      # An extra leading axis under vmap, the whole inside an outer jit.
      stacked = jax.jit(jax.vmap(f))(*(x.reshape((3, -1) + x.shape[1:]) for x in args))
      np.testing.assert_allclose(stacked.reshape(eager.shape), eager, atol=1e-6)

  def test_without_jit(self):
    # The public functions carry their own jit; op by op they must give the same numbers.
    true, pred = _random_maps(5, batch=4, pixels=16, num_true=4, num_pred=5)
    true, pred = jnp.asarray(true), jnp.asarray(pred)
    f = functools.partial(M.adjusted_rand_index, num_true=4, num_pred=5)
    with jax.disable_jit():
      eager = f(true, pred)
    np.testing.assert_allclose(f(true, pred), eager, atol=1e-6)
    # (The Hungarian-based metrics are checked against scipy in MiouTest instead: op by
    # op, the solver's loops take seconds.)

  def test_masks_to_ids(self):
    masks = np.random.default_rng(0).dirichlet(np.ones(4), (2, 3, 5)).transpose(0, 3, 1, 2)
    masks = masks[..., None]  # [B, K, H, W, 1], summing to 1 over slots
    ids = M.masks_to_ids(jnp.asarray(masks))
    self.assertEqual(ids.shape, (2, 3, 5))
    np.testing.assert_array_equal(ids, np.argmax(np.asarray(masks)[..., 0], axis=1))


class CluMetricsTest(absltest.TestCase):

  def test_image_collection(self):
    true = _ids([0, 1, 1, 2], [0, 0, 0, 0], [0, 1, 2, 2])
    pred = _ids([0, 1, 1, 2], [0, 0, 1, 1], [0, 0, 1, 1])
    outputs = M.segmentation_metric_outputs(true, pred, num_true=3, num_pred=3)
    collection = M.make_eval_metrics()
    first = collection.single_from_model_output(
        loss=jnp.float32(2.0), mask=jnp.array([True, True, True]), **outputs)
    second = collection.single_from_model_output(
        loss=jnp.float32(4.0), mask=jnp.array([True, True, False]), **outputs)
    result = first.merge(second).compute()
    self.assertAlmostEqual(float(result["loss"]), 3.0, places=6)
    ari = np.asarray(outputs["fg_ari"])
    np.testing.assert_allclose(ari[:2], [1.0, 1.0])
    self.assertAlmostEqual(float(result["fg_ari"]), (2 * ari.sum() - ari[2]) / 5, places=6)
    # fg_miou: image 1 has no foreground and is left out; image 3 is padding once.
    miou = np.asarray(outputs["fg_miou"])
    self.assertAlmostEqual(float(result["fg_miou"]), (2 * miou[0] + miou[2]) / 3, places=6)

  def test_video_collection(self):
    true = _ids([[0, 1, 1, 2, 2, 0], [0, 2, 2, 1, 1, 0]],   # 2 of 2 objects keep their slot
                [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]],   # 0 of 1
                [[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]])   # no object in both frames
    pred = _ids([[0, 1, 1, 2, 2, 0], [0, 2, 2, 1, 1, 0]],
                [[0, 1, 1, 0, 0, 0], [0, 0, 0, 2, 2, 0]],
                [[0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0]])
    outputs = M.segmentation_metric_outputs(true, pred, num_true=3, num_pred=3, video=True)
    for key, value in outputs.items():
      per_frame = key in ("fg_miou_frames", "frame_has_foreground")
      self.assertEqual(value.shape, (3, 2) if per_frame else (3,))
    np.testing.assert_allclose(outputs["fg_miou"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(outputs["tc"], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(outputs["tc_has_common"], [True, True, False])
    collection = M.make_eval_metrics(video=True)
    result = collection.single_from_model_output(loss=jnp.float32(1.0), **outputs).compute()
    # The mean over the two examples with a common object (1 + 0) / 2, not the pooled
    # share of objects 2 / 3, and the third example does not count.
    self.assertAlmostEqual(float(result["temporal_consistency"]), 0.5, places=6)
    self.assertAlmostEqual(float(result["fg_ari"]), 1.0)
    masked = collection.single_from_model_output(
        loss=jnp.float32(1.0), mask=jnp.array([True, False, True]), **outputs).compute()
    self.assertAlmostEqual(float(masked["temporal_consistency"]), 1.0, places=6)

  def test_video_miou_average_over_frames_or_videos(self):
    # Video 0: frame 0 perfect (IoU 1), frame 1 without foreground. Video 1: IoU 1/2 in
    # both frames (the object's 4 pixels are split between slots 1 and 2).
    true = _ids([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
                [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]])
    pred = _ids([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
                [[1, 1, 2, 2, 0, 0], [1, 1, 2, 2, 0, 0]])
    outputs = M.segmentation_metric_outputs(true, pred, num_true=2, num_pred=3, video=True)
    np.testing.assert_allclose(outputs["fg_miou_frames"], [[1.0, 1.0], [0.5, 0.5]])
    np.testing.assert_array_equal(outputs["frame_has_foreground"],
                                  [[True, False], [True, True]])
    result = M.make_eval_metrics(video=True).single_from_model_output(
        loss=jnp.float32(0.0), **outputs).compute()
    self.assertAlmostEqual(float(result["fg_miou"]), (1.0 + 0.5) / 2, places=6)  # Videos.
    frames = M.make_eval_metrics(video=True, miou_average="frames")
    result = frames.single_from_model_output(loss=jnp.float32(0.0), **outputs).compute()
    self.assertAlmostEqual(float(result["fg_miou"]), (1.0 + 0.5 + 0.5) / 3, places=6)
    # Padding examples drop out with all their frames.
    masked = frames.single_from_model_output(loss=jnp.float32(0.0),
                                             mask=jnp.array([False, True]), **outputs)
    self.assertAlmostEqual(float(masked.compute()["fg_miou"]), 0.5, places=6)
    with self.assertRaisesRegex(ValueError, "frames"):
      M.make_eval_metrics(video=True, miou_average="pixels")


if __name__ == "__main__":
  absltest.main()

"""Object-discovery metrics: FG-ARI, FG-mIoU, temporal consistency, clu collections.

Pure `jax.numpy` functions, jit- and vmap-able, batched over a leading axis. Segmentations
are integer label maps, not one-hot masks:

  true_ids  [B, ...]   int in [0, num_true)   0 is the background, 1.. are objects
  pred_ids  [B, ...]   int in [0, num_pred)   index of the slot that wins the pixel
  valid     [B, ...]   optional bool/0-1 map  False marks pixels without a label (padding)

where `...` is any spatial shape (H, W or P pixels; flattened internally). Predicted soft
masks become `pred_ids` through `masks_to_ids` (hard assignment by argmax, as the DeepMind
reference does). Video inputs carry a time axis after the batch axis: [B, T, ...]. A label
outside [0, num_true) (or [0, num_pred)) one-hot encodes to zeros, so its pixels drop out
silently (no error is possible inside jit): size `num_true` as max objects + 1.

Edge cases, where the public implementations disagree (each policy is tested):

* ARI with a zero denominator. It is zero exactly when the two partitions of the counted
  pixels are both a single cluster (e.g. one foreground object segmented perfectly) or both
  all singletons (at most one pixel). We return 1.0, as sklearn's `adjusted_rand_score`,
  SAVi (`savi/lib/metrics.py`), MESH (`losses.py`) and the ClevrTex evaluator do. The
  DeepMind reference (`multi_object_datasets/segmentation_metrics.py`) tests "single
  cluster" on all pixels, ignored ones included, so it returns NaN for a perfectly segmented
  single object whenever the background falls in another slot. A single object split over
  several slots gets the formula's value, 0.
* ARI with no counted pixel (FG-ARI of an image without foreground): `empty_value`, 1.0 by
  default (MESH, SAVi, ClevrTex evaluator via sklearn); `empty_value=float("nan")` gives the
  DeepMind reference's NaN.
* FG-mIoU (MESH `losses.compute_IoU`, App. F.3 of the MESH paper): Hungarian matching on
  1 - IoU between foreground objects and the argmax masks of *all* slots; the mean runs over
  the objects present in the image. Absent (padded) object ids count for nothing; objects
  left without a slot (more objects than slots) count as IoU 0; predictions left without an
  object do not count. With `count_unmatched_predictions=True` the ClevrTex evaluator's
  convention is used instead (`ool/clevrtex_eval.py`, `mIoU_fg`): the background takes part
  in the matching and every non-empty predicted mask beyond the number of present true
  masks (background included) adds an IoU-0 term to the mean. (The evaluator's count also
  depends on how its solver breaks ties between zero-IoU pairs; we take the count that
  pairs every present mask with a non-empty prediction first.) An image whose mean has no
  term gets `empty_value` (1.0); `has_foreground` tells such images apart, and the clu
  metric below leaves them out of the average as MESH's `robust_mean` does with its NaNs.
* Temporal consistency (MESH paper, App. F.3/F.4; MESH `time_consistency_accuracy`): in
  each frame, objects are matched to slots as for FG-mIoU (Hungarian on 1 - IoU, foreground
  objects against all slots); the matched slot counts whatever its IoU, as in MESH (a
  zero-IoU match that happens to pick the same slot in both frames is consistent). Which
  objects of the two frames are "the same" is set by `identity`:
    - None (object ids): an object of frame 0 and one of frame 1 are the same when they
      carry the same id, so ids must name the same object in both frames. For datasets
      without attributes (the offline two-frame sprites).
    - `identity` [B, num_true] int (reference): a code per object id, e.g. of its
      (colour, material, shape); every pair (object of frame 0, object of frame 1) with the
      same code counts, as MESH compares attribute vectors, so two identical-looking objects
      make four pairs (two objects that keep their slots score 0.5, not 1; swapped, 0.5,
      not 0). Use it for CLEVRER to compare with MESH Table 5.
  Per example, TC = consistent pairs / pairs, the pairs being those of foreground objects
  present in their frame; an example without a pair has no TC (`tc_has_common` False, score
  `empty_value`) and the clu metric averages TC over the examples that have one, as MESH's
  `robust_mean` drops its NaNs. (Ties between equal-cost matches are broken by the solver,
  so avoid them when comparing with other implementations.)
* Video FG-mIoU (and FG-ARI) average: MESH computes the score per frame and averages over
  all frames of the evaluation set that have a foreground object (`robust_mean` of the
  [videos, frames] scores): `make_eval_metrics(video=True, miou_average="frames")`. With
  "videos" the frames of each video are averaged first, then the videos. The two differ
  only when some frame has no foreground object. FG-ARI is averaged over the frames of each
  video, then over videos: every video has the same number of frames, so this is the mean
  over all frames (MESH's) whenever no frame lacks a score.
"""

import functools
from typing import Optional, Tuple

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import optax

Array = jax.Array
# The public functions are jitted (integer sizes and flags static) so that eager calls
# compile the Hungarian solver once per shape instead of dispatching it op by op.
def _jit(*flags):
  return functools.partial(jax.jit, static_argnames=("num_true", "num_pred") + flags)


def masks_to_ids(masks: Array, axis: int = 1) -> Array:
  """Hard assignment of pixels to slots by argmax over the slot axis `axis`.

  `[B, K, H, W, 1]` (or `[B, K, H, W]`) masks -> `[B, H, W]` int32 slot ids; use `axis=2`
  for video masks `[B, T, K, H, W, 1]`.
  """
  if masks.shape[-1] == 1:  # drop the trailing channel axis of [B, K, H, W, 1]
    masks = masks[..., 0]
  return jnp.argmax(masks, axis=axis).astype(jnp.int32)


def _one_hots(true_ids, pred_ids, num_true, num_pred, valid, ndim_lead=1):
  """Flattens `[*lead, ...]` label maps to one-hot `[*lead, P, num_true|num_pred]` float32."""
  lead = true_ids.shape[:ndim_lead]
  t = jax.nn.one_hot(true_ids.reshape(lead + (-1,)), num_true, dtype=jnp.float32)
  p = jax.nn.one_hot(pred_ids.reshape(lead + (-1,)), num_pred, dtype=jnp.float32)
  if valid is not None:
    v = valid.reshape(lead + (-1, 1)).astype(jnp.float32)
    t, p = t * v, p * v
  return t, p


@_jit("ignore_background")
def adjusted_rand_index(true_ids: Array, pred_ids: Array, *, num_true: int, num_pred: int,
                        ignore_background: bool = False, valid: Optional[Array] = None,
                        empty_value: float = 1.0) -> Array:
  """Adjusted Rand index (Hubert & Arabie, 1985) of label maps, per image.

  Args:
    true_ids: [B, ...] int, true labels in [0, num_true); 0 is the background.
    pred_ids: [B, ...] int, predicted labels in [0, num_pred) (e.g. `masks_to_ids`).
    num_true: number of true labels, background included (max id + 1).
    num_pred: number of predicted labels (slots).
    ignore_background: leave out pixels whose true label is 0 (FG-ARI).
    valid: optional [B, ...] map; pixels where it is False are left out.
    empty_value: the score of an image with no counted pixel (see module docstring).

  Returns:
    [B] float32 ARI; 1.0 where both partitions are trivially equal (module docstring).
  """
  t, p = _one_hots(true_ids, pred_ids, num_true, num_pred, valid)
  if ignore_background:
    t = t[..., 1:]
  nij = jnp.einsum("bpt,bpk->btk", t, p)  # contingency table [B, T, K]
  a, b = nij.sum(2), nij.sum(1)  # true and predicted cluster sizes, counted pixels only
  n = a.sum(1)
  rindex = jnp.sum(nij * (nij - 1), axis=(1, 2))
  aindex = jnp.sum(a * (a - 1), axis=1)
  bindex = jnp.sum(b * (b - 1), axis=1)
  expected = aindex * bindex / jnp.maximum(n * (n - 1), 1.0)
  denominator = (aindex + bindex) / 2 - expected
  # Zero denominator <=> both single-cluster or both all-singletons; tested on the exact
  # integer counts rather than on a float difference that round-off may leave nonzero.
  trivial = (jnp.max(nij, axis=(1, 2)) == n) | ((aindex == 0) & (bindex == 0))
  ari = (rindex - expected) / jnp.where(trivial, 1.0, denominator)
  ari = jnp.where(trivial, 1.0, ari)
  return jnp.where(n == 0, jnp.asarray(empty_value, jnp.float32), ari)


def fg_ari(true_ids: Array, pred_ids: Array, *, num_true: int, num_pred: int,
           valid: Optional[Array] = None, empty_value: float = 1.0) -> Array:
  """FG-ARI: `adjusted_rand_index` without background pixels (true label 0). [B] float32."""
  return adjusted_rand_index(true_ids, pred_ids, num_true=num_true, num_pred=num_pred,
                             ignore_background=True, valid=valid, empty_value=empty_value)


def has_foreground(true_ids: Array, valid: Optional[Array] = None) -> Array:
  """Whether an image has at least one (valid) foreground pixel: [B, ...] -> [B] bool."""
  fg = true_ids.reshape(true_ids.shape[0], -1) > 0
  if valid is not None:
    fg = fg & valid.reshape(fg.shape).astype(bool)
  return jnp.any(fg, axis=1)


def _iou_matrix(t: Array, p: Array) -> Array:
  """IoU of one-hot masks `t [P, T]` and `p [P, K]` -> `[T, K]`; 0 where the union is empty."""
  inter = t.T @ p
  union = t.sum(0)[:, None] + p.sum(0)[None, :] - inter
  return inter / jnp.maximum(union, 1.0)


def _match(iou: Array, present: Array) -> Tuple[Array, Array]:
  """Hungarian matching of rows (true masks) to columns (slots), maximising total IoU.

  Args:
    iou: [T, K] IoU matrix.
    present: [T] bool, rows of objects present in the image; absent rows get a cost above
      every real one, so they only take the slots that present objects leave.

  Returns:
    matched_iou [T] (0 for rows left without a slot) and slot [T] int32 (-1 if none).
  """
  cost = jnp.where(present[:, None], 1.0 - iou, 2.0)
  rows, cols = optax.assignment.hungarian_algorithm(cost)
  matched_iou = jnp.zeros(iou.shape[0], iou.dtype).at[rows].set(iou[rows, cols])
  slot = jnp.full(iou.shape[0], -1, jnp.int32).at[rows].set(cols.astype(jnp.int32))
  return matched_iou, slot


def _miou_one(t, p, count_unmatched_predictions, empty_value):
  """FG-mIoU of one image from one-hot masks `t [P, T]`, `p [P, K]` -> scalar."""
  iou = _iou_matrix(t, p)
  present = t.sum(0) > 0
  if count_unmatched_predictions:  # ClevrTex evaluator: background in the matching
    matched_iou, _ = _match(iou, present)
    matched_iou, present_fg = matched_iou[1:], present[1:]
    surplus = jnp.maximum(jnp.sum(p.sum(0) > 0) - jnp.sum(present), 0)
  else:  # MESH: foreground objects only
    present_fg = present[1:]
    matched_iou, _ = _match(iou[1:], present_fg)
    surplus = 0
  terms = jnp.sum(present_fg) + surplus
  total = jnp.sum(jnp.where(present_fg, matched_iou, 0.0))
  return jnp.where(terms > 0, total / jnp.maximum(terms, 1), empty_value)


@_jit("count_unmatched_predictions")
def fg_miou(true_ids: Array, pred_ids: Array, *, num_true: int, num_pred: int,
            valid: Optional[Array] = None, count_unmatched_predictions: bool = False,
            empty_value: float = 1.0) -> Array:
  """Foreground mean IoU after Hungarian matching of slots to objects, per image.

  Args:
    true_ids: [B, ...] int, true labels in [0, num_true); 0 is the background.
    pred_ids: [B, ...] int, slot ids in [0, num_pred) (argmax masks, `masks_to_ids`).
    num_true: number of true labels, background included.
    num_pred: number of slots.
    valid: optional [B, ...] map; pixels where it is False are left out of every mask.
    count_unmatched_predictions: False (default): MESH convention; True: ClevrTex
      evaluator convention (module docstring).
    empty_value: the score of an image whose mean has no term (no foreground object).

  Returns:
    [B] float32 in [0, 1], never NaN.
  """
  t, p = _one_hots(true_ids, pred_ids, num_true, num_pred, valid)
  fn = lambda ti, pi: _miou_one(ti, pi, count_unmatched_predictions, empty_value)
  return jax.vmap(fn)(t, p)


@_jit()
def temporal_consistency_counts(true_ids: Array, pred_ids: Array, *, num_true: int,
                                num_pred: int, valid: Optional[Array] = None,
                                identity: Optional[Array] = None) -> Tuple[Array, Array]:
  """Counts behind temporal consistency for two-frame videos.

  Args:
    true_ids: [B, 2, ...] int object ids; 0 background.
    pred_ids: [B, 2, ...] int, slot ids (slots carried from frame to frame).
    num_true, num_pred, valid: as in `fg_miou` (valid is [B, 2, ...]).
    identity: None: objects are identified across the frames by their id. Otherwise
      [B, num_true] int, a code per object id (entry 0, the background, is ignored):
      objects with equal codes are the same object (MESH's attribute identity).

  Returns:
    (consistent [B], pairs [B]) int32. Pairs: (object present in frame 0, object present in
    frame 1) that are the same object; consistent: those whose Hungarian-matched slots in
    the two frames are the same slot. An object left without a slot (more objects than
    slots) is never consistent.
  """
  if true_ids.shape[1] != 2:
    raise ValueError(f"expected two frames on axis 1, got shape {true_ids.shape}")
  t, p = _one_hots(true_ids, pred_ids, num_true, num_pred, valid, ndim_lead=2)

  def frame(ti, pi):  # [P, T], [P, K] -> slot [T-1], present [T-1]
    present = ti.sum(0)[1:] > 0
    _, slot = _match(_iou_matrix(ti, pi)[1:], present)
    return slot, present

  slot, present = jax.vmap(jax.vmap(frame))(t, p)  # [B, 2, T-1] each
  if identity is None:
    same = jnp.eye(num_true - 1, dtype=bool)[None]
  else:
    code = jnp.asarray(identity)[:, 1:]
    same = code[:, :, None] == code[:, None, :]               # [B, T-1, T-1]
  pairs = same & present[:, 0, :, None] & present[:, 1, None, :]
  kept = (slot[:, 0, :, None] == slot[:, 1, None, :]) & (slot[:, 0, :, None] >= 0)
  return (jnp.sum(pairs & kept, axis=(1, 2)).astype(jnp.int32),
          jnp.sum(pairs, axis=(1, 2)).astype(jnp.int32))


def temporal_consistency(true_ids: Array, pred_ids: Array, *, num_true: int, num_pred: int,
                         valid: Optional[Array] = None, identity: Optional[Array] = None,
                         empty_value: float = 1.0) -> Array:
  """Per-example share of the same-object pairs across the two frames that keep their slot.

  See `temporal_consistency_counts` for the arguments; `empty_value` where there is no pair
  (leave those examples out of a mean: MESH averages TC over the examples that have one).
  """
  consistent, pairs = temporal_consistency_counts(
      true_ids, pred_ids, num_true=num_true, num_pred=num_pred, valid=valid,
      identity=identity)
  return jnp.where(pairs > 0, consistent / jnp.maximum(pairs, 1), empty_value)


# --------------------------------------------------------------------------------------
# clu metrics
# --------------------------------------------------------------------------------------
def average_where(name: str, where: str):
  """`clu.metrics.Average` of output `name` [B, ...] over entries where `where` holds.

  The model output "mask" ([B], False for padding examples) is applied as well (broadcast
  over the trailing axes, e.g. the frames of [B, T] outputs).
  """

  @flax.struct.dataclass
  class AverageWhere(clu_metrics.Average):

    @classmethod
    def from_model_output(cls, **outputs):
      keep = jnp.asarray(outputs[where]).astype(bool)
      if outputs.get("mask") is not None:
        mask = jnp.asarray(outputs["mask"]).astype(bool)
        keep = keep & mask.reshape(mask.shape + (1,) * (keep.ndim - mask.ndim))
      return super().from_model_output(jnp.asarray(outputs[name]), mask=keep)

  return AverageWhere


MIOU_AVERAGES = ("videos", "frames")


def make_eval_metrics(*, video: bool = False, miou_average: str = "videos"):
  """A `clu.metrics.Collection` class for object-discovery evaluation.

  Fields: `loss` (mean of the "loss" output), `fg_ari` (mean over images, empty images
  scoring `empty_value`), `fg_miou` (mean over images with foreground), and with
  `video=True` `temporal_consistency` (mean over examples with a same-object pair across
  the frames). `miou_average` (video only): "videos" averages FG-mIoU over the frames of
  each video, then over videos; "frames" over all frames with foreground, as MESH (module
  docstring). Feed it `loss=..., mask=..., **segmentation_metric_outputs(...)`.
  """
  if miou_average not in MIOU_AVERAGES:
    raise ValueError(f"Unknown miou_average {miou_average!r}; valid: "
                     f"{', '.join(MIOU_AVERAGES)}.")
  if video:
    miou = (average_where("fg_miou_frames", "frame_has_foreground")
            if miou_average == "frames" else average_where("fg_miou", "has_foreground"))

    @flax.struct.dataclass
    class VideoEvalMetrics(clu_metrics.Collection):
      loss: clu_metrics.Average.from_output("loss")
      fg_ari: clu_metrics.Average.from_output("fg_ari")
      fg_miou: miou
      temporal_consistency: average_where("tc", "tc_has_common")

    return VideoEvalMetrics

  @flax.struct.dataclass
  class EvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    fg_ari: clu_metrics.Average.from_output("fg_ari")
    fg_miou: average_where("fg_miou", "has_foreground")

  return EvalMetrics


def segmentation_metric_outputs(true_ids: Array, pred_ids: Array, *, num_true: int,
                                num_pred: int, valid: Optional[Array] = None,
                                video: bool = False, empty_value: float = 1.0,
                                count_unmatched_predictions: bool = False,
                                identity: Optional[Array] = None) -> dict:
  """Per-example outputs for `make_eval_metrics`.

  Args:
    true_ids, pred_ids, valid: [B, ...] label maps, or [B, T, ...] with `video=True`.
    video: per-frame FG-ARI and FG-mIoU averaged over the frames of each video (MESH
      paper, Sec. 5.4; FG-mIoU over frames with foreground), plus temporal consistency
      of two-frame videos: tc (per-example TC, `empty_value` without a common object),
      tc_has_common, and the counts tc_consistent, tc_common (same-object pairs); the
      per-frame fg_miou_frames and frame_has_foreground [B, T] for MESH's frame average.
    identity: video only, the object identity of temporal consistency
      (`temporal_consistency_counts`): None = object ids, [B, num_true] codes = MESH's
      attribute identity.

  Returns:
    dict of [B] arrays: fg_ari, fg_miou, has_foreground (and the video outputs).
  """
  kw = dict(num_true=num_true, num_pred=num_pred)
  if not video:
    return dict(
        fg_ari=fg_ari(true_ids, pred_ids, valid=valid, empty_value=empty_value, **kw),
        fg_miou=fg_miou(true_ids, pred_ids, valid=valid, empty_value=empty_value,
                        count_unmatched_predictions=count_unmatched_predictions, **kw),
        has_foreground=has_foreground(true_ids, valid))
  b, t = true_ids.shape[:2]
  flat = lambda x: None if x is None else x.reshape((b * t,) + x.shape[2:])
  per_frame = segmentation_metric_outputs(
      flat(true_ids), flat(pred_ids), valid=flat(valid), empty_value=empty_value,
      count_unmatched_predictions=count_unmatched_predictions, **kw)
  ari, miou, fg = (per_frame[k].reshape(b, t) for k in
                   ("fg_ari", "fg_miou", "has_foreground"))
  nfg = fg.sum(1)
  consistent, common = temporal_consistency_counts(true_ids, pred_ids, valid=valid,
                                                   identity=identity, **kw)
  return dict(
      fg_ari=ari.mean(1),
      fg_miou=jnp.where(nfg > 0, jnp.sum(jnp.where(fg, miou, 0.0), 1) / jnp.maximum(nfg, 1),
                        empty_value),
      has_foreground=nfg > 0, fg_miou_frames=miou, frame_has_foreground=fg,
      tc=jnp.where(common > 0, consistent / jnp.maximum(common, 1), empty_value),
      tc_has_common=common > 0, tc_consistent=consistent, tc_common=common)

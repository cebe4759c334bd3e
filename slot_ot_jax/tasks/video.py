"""Two-frame video object discovery (MESH paper §5.4, Table 5, App. F.4): the "video" task.

Data: the two-frame TFDS builders `datasets/clevrer` (CLEVRER-S/L) and `datasets/shapes_video`
(offline), which emit `video` uint8 [2, H, W, 3] and `segmentation` uint8 [2, H, W, 1] with one
id per object in both frames (datasets/README.md). A split is read into memory once (the MESH
reference preloads too) and served as batches of
  video         float32 [B, 2, H, W, 3] in [-1, 1]
  segmentation  int32   [B, 2, H, W]    0 = background (evaluation only)
  mask          bool    [B]             False on padding (evaluation only)
Training batches: epoch e is a permutation of this host's shard seeded by (seed, process, e);
the batches of step s, s + 1, ... do not depend on where a run was resumed.

Model: `video_model.VideoAutoencoder` (the object-discovery encoder and decoder of
`config.model.architecture`, slot attention run frame by frame with the previous frame's
slots as `initial_slots`, `SlotTransition` between frames). Loss: MSE of both frames' pixels
plus `config.model.kl_weight` times the learned-noise KL term (1, as the reference).

Evaluation (clu collection of `metrics.make_eval_metrics(video=True)`): loss, FG-ARI and
FG-mIoU per frame, and temporal consistency (TC, MESH App. F.3: per example, the share of
same-object pairs across the two frames whose Hungarian-matched slots are the same, averaged
over the examples that have such pairs). Two options of `config.evaluation` choose between
the reference's definitions and ours (docs/evaluation.md):
  tc_identity   "attributes": objects are the same when their (colour, material, shape) are
                (MESH `time_consistency_accuracy`; CLEVRER configs, for Table 5); "ids": when
                their segmentation ids are (default; the offline sprites have no attributes).
  miou_average  "frames": FG-mIoU averaged over all frames with foreground (MESH; CLEVRER
                configs); "videos": over the frames of each video, then videos (default).
Image summaries: a grid of
both frames of the first examples (input, reconstruction, segmentation, per-slot masks).
`config.mode="eval"` evaluates a checkpoint of the workdir (`evaluation.checkpoint`: the latest
or the best) on `evaluation.test_split`.
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import dataclasses
import functools
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from slot_ot_jax import tasks
from slot_ot_jax.evaluation import metrics
from slot_ot_jax.evaluation import visualize
from slot_ot_jax.modules import video_model

PAPER_NAMES = {("softmax", "none"): "SA", ("softmax", "fixed"): "SA fixed noise",
               ("softmax", "learned"): "SA learned noise", ("sinkhorn", "none"): "SA-SH",
               ("mesh", "none"): "SA-MESH"}


TC_IDENTITIES = ("ids", "attributes")
# ClassLabel features whose joint value identifies an object under tc_identity="attributes".
IDENTITY_ATTRIBUTES = ("color", "material", "shape")


@dataclasses.dataclass(frozen=True)
class VideoPreset:
  """Defaults of one two-frame dataset (tfds name `module/config`)."""
  eval_split: str
  max_labels: int   # Largest object id of the segmentation (distinct objects per video).


PRESETS = {
    "shapes_video/32x32": VideoPreset("validation", 4),
    "shapes_video/16x16": VideoPreset("validation", 4),
    "shapes_video/tiny": VideoPreset("validation", 4),
    "clevrer/s": VideoPreset("validation", 10),
    "clevrer/l": VideoPreset("validation", 10),
    "clevrer/s_fake": VideoPreset("validation", 10),  # The fake files of dummy_data/.
    "clevrer/l_fake": VideoPreset("validation", 10),
}
# Published Table 5 (MESH paper, 5 seeds; FG-ARI / FG-mIoU / TC in %), keyed by
# (dataset, paper name).
PUBLISHED = {
    ("clevrer/s", "SA"): "78.1 +- 14.0 / 16.8 +- 9.8 / 26.3 +- 22.5",
    ("clevrer/s", "SA fixed noise"): "71.0 +- 34.0 / 17.1 +- 11.4 / 42.8 +- 19.3",
    ("clevrer/s", "SA learned noise"): "80.2 +- 14.1 / 13.2 +- 4.9 / 21.3 +- 13.5",
    ("clevrer/s", "SA-SH"): "89.3 +- 2.3 / 10.0 +- 2.8 / 89.7 +- 2.4",
    ("clevrer/s", "SA-MESH"): "93.8 +- 1.0 / 44.1 +- 7.1 / 80.2 +- 10.1",
    ("clevrer/l", "SA"): "69.6 +- 14.9 / 12.2 +- 6.6 / 12.8 +- 8.7",
    ("clevrer/l", "SA fixed noise"): "79.4 +- 5.9 / 11.9 +- 6.2 / 18.5 +- 13.0",
    ("clevrer/l", "SA learned noise"): "84.7 +- 5.7 / 10.2 +- 1.2 / 19.4 +- 7.7",
    ("clevrer/l", "SA-SH"): "82.9 +- 1.5 / 7.0 +- 0.2 / 26.8 +- 0.5",
    ("clevrer/l", "SA-MESH"): "92.9 +- 2.2 / 54.4 +- 8.9 / 55.4 +- 5.7",
}


def preset(name: str) -> VideoPreset:
  if name not in PRESETS:
    raise ValueError(f"Unknown video dataset {name!r}; valid names: {', '.join(sorted(PRESETS))}.")
  return PRESETS[name]


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def get_builder(data_config, *, prepare=None):
  """The prepared builder of `data_config.name` (`input_pipeline.get_builder`): the procedural
  dataset is built on first use, CLEVRER when its source files are in the manual dir; otherwise
  DatasetNotFoundError names the URL, the expected files and the preparation command."""
  from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  preset(data_config.name)
  return input_pipeline.get_builder(data_config, prepare=prepare, check_name=False)


def prepare(name: str, data_dir=None, manual_dir=None):
  """Builds two-frame dataset `name` (datasets/prepare.py); returns the prepared builder."""
  config = ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, manual_dir=manual_dir,
                                          prepare=True))
  return get_builder(config, prepare=True)


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir, manual_dir, split: str) -> dict[str, np.ndarray]:
  config = ml_collections.ConfigDict(dict(name=name, data_dir=data_dir,
                                          manual_dir=manual_dir, prepare=True))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = get_builder(config)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  objects = builder.info.features["objects"] if "objects" in builder.info.features else {}
  with_identity = all(k in objects.keys() for k in IDENTITY_ATTRIBUTES) if objects else False
  num_labels = preset(name).max_labels

  def select(ex):
    out = {"video": ex["video"], "segmentation": ex["segmentation"][..., 0]}
    if with_identity:
      # One code per object id (objects[k - 1] is id k); -1 for the background and unused
      # ids. Codes are equal exactly when all IDENTITY_ATTRIBUTES are.
      code = tf.zeros_like(ex["objects"][IDENTITY_ATTRIBUTES[0]], tf.int64)
      for key in IDENTITY_ATTRIBUTES:
        code = code * objects[key].num_classes + tf.cast(ex["objects"][key], tf.int64)
      code = code[:num_labels]
      out["identity"] = tf.ensure_shape(
          tf.pad(code, [[1, num_labels - tf.shape(code)[0]]], constant_values=-1),
          (num_labels + 1,))
    return out

  ds = ds.map(select)
  n = builder.info.splits[split].num_examples
  if n == 0:
    raise ValueError(f"{name} split {split!r} is empty.")
  return next(iter(tfds.as_numpy(ds.batch(n))))


def load_split(data_config, split: str) -> dict[str, np.ndarray]:
  """video uint8 [N, 2, H, W, 3] and segmentation uint8 [N, 2, H, W] of a split (cached);
  for datasets with (colour, material, shape) attributes also identity int64 [N, L + 1],
  the attribute code of each segmentation id (-1: background, unused id)."""
  return _load(data_config.name, data_config.data_dir, data_config.manual_dir, split)


def _to_inputs(video: np.ndarray) -> np.ndarray:
  return video.astype(np.float32) / 127.5 - 1.0


def train_batches(data_config, split: str, *, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless shuffled batches {video} of this process's shard, from step `start_step` on."""
  video = load_split(data_config, split)["video"][process_index::process_count]
  n = len(video)
  if n < batch_size:
    raise ValueError(f"{data_config.name} {split} has {n} examples on this process, fewer "
                     f"than the batch size {batch_size}.")
  per_epoch = n // batch_size  # The remainder of each epoch is dropped.
  epoch, offset = divmod(int(start_step), per_epoch)
  while True:
    order = np.random.default_rng([int(seed), int(process_index), epoch]).permutation(n)
    for i in range(offset, per_epoch):
      yield {"video": _to_inputs(video[order[i * batch_size:(i + 1) * batch_size]])}
    epoch, offset = epoch + 1, 0


def eval_batches(data_config, split: str, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, identity: bool = False
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass in order over this process's shard; the last batch padded with mask False.

  identity=True adds `identity` int32 [B, L + 1] (attribute code per object id, -1 for the
  background and padding); the dataset must have the attributes.
  """
  data = load_split(data_config, split)
  if identity and "identity" not in data:
    raise ValueError(f"{data_config.name} has no object attributes "
                     f"({', '.join(IDENTITY_ATTRIBUTES)}): use tc_identity='ids'.")
  arrays = {"video": data["video"], "segmentation": data["segmentation"]}
  if identity:
    arrays["identity"] = data["identity"]
  arrays = {k: v[process_index::process_count] for k, v in arrays.items()}
  total = len(data["video"])
  per_process = -(-total // process_count)  # ceil
  num_batches = -(-per_process // batch_size)
  for i in range(num_batches):
    batch = {k: v[i * batch_size:(i + 1) * batch_size] for k, v in arrays.items()}
    n = len(batch["video"])
    pad = batch_size - n
    if pad:
      batch = {k: np.concatenate([v, np.full((pad,) + v.shape[1:], -1 if k == "identity"
                                             else 0, v.dtype)]) for k, v in batch.items()}
    out = {"video": _to_inputs(batch["video"]),
           "segmentation": batch["segmentation"].astype(np.int32),
           "mask": np.arange(batch_size) < n}
    if identity:
      out["identity"] = batch["identity"].astype(np.int32)
    yield out


# ------------------------------------------------------------------------------------------
# Task
# ------------------------------------------------------------------------------------------
def build_model(config: ml_collections.ConfigDict) -> video_model.VideoAutoencoder:
  """The object-discovery encoder/decoder and slot attention of `config.model`, per frame."""
  from slot_ot_jax.tasks import object_discovery  # pylint: disable=g-import-not-at-top
  image_model = object_discovery.build_autoencoder(config)
  encoder, decoder = image_model.encoder, image_model.decoder
  m = config.model
  if m.encoder_stride > 1:  # A cheaper CPU model: stride on the first convolution.
    encoder = encoder.clone(strides=(m.encoder_stride,) + (1,) * (len(encoder.strides) - 1))
  if m.decoder_broadcast:  # Broadcast at this size, then stride-2 deconvs up to the frame.
    res, b = int(config.data.resolution), int(m.decoder_broadcast)
    ups = int(np.log2(res // b))
    if b << ups != res:
      raise ValueError(f"decoder_broadcast={b} times a power of 2 must be the resolution {res}")
    n = len(decoder.channels)
    decoder = decoder.clone(broadcast_resolution=(b, b),
                            strides=(2,) * ups + (1,) * max(n - ups, 0),
                            channels=(decoder.channels[0],) * max(n, ups))
  t = m.transition
  return video_model.VideoAutoencoder(
      encoder=encoder, decoder=decoder,
      slot_attention=image_model.slot_attention,
      transition=video_model.SlotTransition(
          kind=t.kind, noise_sigma=t.noise_sigma, prior_variance=t.prior_variance,
          framework_defaults=m.slot_attention.framework_defaults))


@tasks.register_task("video")
class VideoTask(tasks.Task):
  """Two-frame autoencoder with carried slots; MSE (+ KL) loss; FG-ARI, FG-mIoU and TC."""

  rng_streams = ("slots", "mesh", "transition")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.num_slots = int(config.model.slot_attention.num_slots)
    ev = config.get("evaluation", {})
    self.tc_identity = ev.get("tc_identity", "ids")
    if self.tc_identity not in TC_IDENTITIES:
      raise ValueError(f"Unknown evaluation.tc_identity {self.tc_identity!r}; valid: "
                       f"{', '.join(TC_IDENTITIES)}.")
    self.eval_metrics = metrics.make_eval_metrics(
        video=True, miou_average=ev.get("miou_average", "videos"))

  @property
  def eval_split(self) -> str:
    if self.config.mode == "eval":
      return self.config.evaluation.test_split
    return self.config.data.eval_split or preset(self.config.data.name).eval_split

  @property
  def num_true(self) -> int:
    return preset(self.config.data.name).max_labels + 1

  def check_ready(self) -> None:
    get_builder(self.config.data)

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    res = int(self.config.data.resolution)
    batch = {"video": np.zeros((batch_size, 2, res, res, 3), np.float32),
             "segmentation": np.zeros((batch_size, 2, res, res), np.int32),
             "mask": np.ones((batch_size,), bool)}
    if self.tc_identity == "attributes":
      batch["identity"] = np.full((batch_size, self.num_true), -1, np.int32)
    return batch

  def train_batches(self, start_step, process_index=0, process_count=1):
    return train_batches(self.config.data, self.config.data.train_split,
                         batch_size=self.config.batch_size // process_count,
                         seed=self.config.seed, start_step=start_step,
                         process_index=process_index, process_count=process_count)

  def eval_batches(self, process_index=0, process_count=1):
    return eval_batches(self.config.data, self.eval_split,
                        batch_size=self.config.eval_batch_size // process_count,
                        process_index=process_index, process_count=process_count,
                        identity=self.tc_identity == "attributes")

  def build_model(self):
    return build_model(self.config)

  def init_variables(self, model, rngs):
    return model.init(dict(rngs), self.dummy_batch(1)["video"], train=False)

  def loss_fn(self, model, variables, batch, rngs):
    outputs, new_state = tasks.apply_model(model, variables, batch["video"], rngs=rngs,
                                           train=True)
    mse = jnp.mean(jnp.square(outputs["reconstruction"] - batch["video"]))
    loss = mse + self.config.model.kl_weight * outputs["kl"]
    return loss, {"mse": mse, "kl": outputs["kl"]}, new_state

  def eval_outputs(self, model, variables, batch, rngs):
    outputs, _ = tasks.apply_model(model, variables, batch["video"], rngs=rngs, train=False)
    pred_ids = metrics.masks_to_ids(outputs["masks"], axis=2)  # [B, 2, H, W]
    scores = metrics.segmentation_metric_outputs(
        batch["segmentation"], pred_ids, num_true=self.num_true, num_pred=self.num_slots,
        video=True, identity=batch.get("identity") if self.tc_identity == "attributes"
        else None)
    err = jnp.square(outputs["reconstruction"] - batch["video"])
    return {"loss": jnp.mean(err, axis=(1, 2, 3, 4)), "mask": batch["mask"], **scores}

  @functools.cached_property
  def _apply(self):
    def run(model, variables, video, rngs):
      return tasks.apply_model(model, variables, video, rngs=rngs, train=False)[0]
    return jax.jit(run, static_argnums=0)

  def image_summaries(self, model, variables, batch, rngs):
    n = int(self.config.images.num_examples)
    if n <= 0:
      return None
    return {"frames": video_grid(self._apply(model, variables, batch["video"][:n], rngs),
                                 batch["video"][:n], mode=self.config.images.mode)[None]}

  def report(self, eval_results: Mapping[str, float]) -> str:
    sa = self.config.model.slot_attention
    name = PAPER_NAMES.get((sa.attention, self.config.model.transition.kind),
                           f"{sa.attention}+{self.config.model.transition.kind}")
    line = (f"FG-ARI {100 * eval_results['fg_ari']:.1f}, FG-mIoU "
            f"{100 * eval_results['fg_miou']:.1f}, TC "
            f"{100 * eval_results['temporal_consistency']:.1f} ({name}, {self.config.data.name}, "
            f"{self.num_slots} slots)")
    paper = PUBLISHED.get((self.config.data.name, name))
    if self.config.runlocal or paper is None:
      return line + "; no published number for this setting"
    return line + f"; published (MESH Table 5, FG-ARI / FG-mIoU / TC) {paper}"


def video_grid(outputs: Mapping[str, np.ndarray], video: np.ndarray, mode: str = "mask"
               ) -> np.ndarray:
  """Mask grid of both frames: a row per (example, frame) with the input, reconstruction,
  hard segmentation and the K per-slot tiles (slot colours are the same in both frames)."""
  outputs = jax.device_get(outputs)
  b, t = video.shape[:2]
  flat = lambda x: np.asarray(x).reshape((b * t,) + np.shape(x)[2:])
  return visualize.slot_grid(flat(video), flat(outputs["reconstruction"]),
                             flat(outputs["masks"]), flat(outputs["rgb"]),
                             max_examples=b * t, mode=mode)

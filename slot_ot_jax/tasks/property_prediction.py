"""Object property prediction (set prediction): SA paper §4.2, MESH §5.2 (Tables 2 and 6).

Data (`config.data`, read from the TFDS builders in datasets/): batches of
  image    float32 [B, H, W, 3] in [-1, 1] (resized to `resolution`, no crop)
  targets  float32 [B, M, D]    per object [coordinates | one-hot groups | presence 1],
                                zero-padded to M = `max_objects` rows (set_prediction.py)
  mask     bool    [B]          evaluation only: False on padding examples
Datasets (`DATASETS`):
  clevr_v1/full       CLEVR v1.0 scenes: (x, y, z) mapped from [-3, 3] to [0, 1], size (2),
                      material (2), shape (3), colour (8), presence: D = 19, M = 10.
  shapes/properties32 procedural sprites (offline): (x, y) in [0, 1] of the image, size (2),
                      shape (3), colour (6), presence: D = 14, M = 4; for the AP the image
                      side counts as 6 units, the width of CLEVR's [-3, 3] range.
Model: `models.SetPredictionModel` (strided CNN encoder with position embedding and MLP,
SlotAttention, per-slot MLP head with a sigmoid). Loss: Hungarian Huber loss summed over the
matched pairs of an image, averaged over the batch. Evaluation: the same loss and AP at the
distance thresholds of `config.evaluation.thresholds` over the whole evaluation split, under
both claim rules of evaluation/set_prediction.py: `ap_<t>` (ap_inf, ap_1, ..., ap_0.0625) is
the official Slot Attention evaluator's rule, `ap_lenient_<t>` our earlier, more lenient one
(docs/evaluation.md).
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import dataclasses
import functools
from typing import Callable, Iterator, Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np

from slot_ot_jax import tasks
from slot_ot_jax.evaluation import set_prediction
from slot_ot_jax.modules import models

PAPER_NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "emd": "SA-EMD", "mesh": "SA-MESH"}
# Published AP in % at inf / 1 / 0.5 / 0.25 / 0.125 / 0.0625, mean over 5 seeds, keyed by
# (attention, detach_slots): MESH Table 2 (the dagger rows, slots detached) and Table 6.
PUBLISHED = {
    ("softmax", True): (94.3, 85.7, 77.2, 53.1, 16.7, 4.0),
    ("sinkhorn", True): (98.9, 97.7, 95.2, 83.3, 38.5, 10.0),
    ("emd", True): (99.3, 98.1, 95.9, 85.8, 42.0, 11.4),
    ("mesh", True): (99.4, 99.2, 98.9, 91.1, 47.6, 12.5),
    ("softmax", False): (89.1, 85.7, 73.3, 35.4, 9.0, 2.0),
    ("sinkhorn", False): (95.6, 94.0, 84.5, 41.3, 10.4, 2.5),
    ("emd", False): (99.2, 98.7, 97.0, 82.4, 34.0, 8.3),
    ("mesh", False): (99.2, 99.1, 98.8, 88.3, 40.8, 10.6),
}



@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How one TFDS dataset becomes (image, targets)."""
  layout: set_prediction.TargetLayout
  max_objects: int
  targets: Callable  # tf objects dict -> float32 [n, D] (unpadded).


def _clevr_targets(objects):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  coords = (tf.cast(objects["3d_coords"], tf.float32) + 3.0) / 6.0  # [-3, 3] -> [0, 1].
  blocks = [coords]
  # Class ids of the builder's ClassLabels (datasets/clevr_v1: SIZES, MATERIALS, ...).
  for key, depth in (("size", 2), ("material", 2), ("shape", 3), ("color", 8)):
    blocks.append(tf.one_hot(objects[key], depth, dtype=tf.float32))
  blocks.append(tf.ones_like(coords[:, :1]))
  return tf.concat(blocks, axis=-1)


def _shapes_targets(objects):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  coords = tf.stack([objects["x"], objects["y"]], axis=-1)
  return tf.concat([coords, tf.one_hot(objects["size"], 2), tf.one_hot(objects["shape"], 3),
                    tf.one_hot(objects["color_index"], 6), tf.ones_like(coords[:, :1])], -1)


SHAPES_LAYOUT = set_prediction.TargetLayout(
    coord_dims=2, groups=(("size", 2), ("shape", 3), ("color", 6)), coord_scale=6.0)
DATASETS = {
    "clevr_v1/full": DatasetSpec(set_prediction.CLEVR_LAYOUT, 10, _clevr_targets),
    "shapes/properties32": DatasetSpec(SHAPES_LAYOUT, 4, _shapes_targets),
    "shapes/properties_tiny": DatasetSpec(SHAPES_LAYOUT, 4, _shapes_targets),
}


def dataset_spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise ValueError(f"Unknown property-prediction dataset {name!r}; valid: "
                     f"{', '.join(sorted(DATASETS))}.")
  return DATASETS[name]


# ------------------------------------------------------------------------------------------
# Input pipeline
# ------------------------------------------------------------------------------------------
def create_dataset(data_config, split: str, *, batch_size: int, train: bool, seed: int,
                   start_step: int = 0, process_index: int = 0, process_count: int = 1):
  """Batches {image, targets[, mask]} of one split for this process (module docstring).

  Training: the host's shard, shuffled per epoch with a seed of (seed, process, epoch),
  repeated, remainder dropped; start_step=s skips s * batch_size examples, so a resumed run
  sees the batches of an uninterrupted one. Evaluation: one pass in file order, the last
  batch padded with mask False.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.data import preprocessing  # pylint: disable=g-import-not-at-top
  spec = dataset_spec(data_config.name)
  builder = input_pipeline.get_builder(data_config)
  features = builder.info.features
  res = input_pipeline.output_resolution(data_config)
  decoders = {k: tfds.decode.SkipDecoding() for k in ("image", "segmentation") if k in features}
  splits = tfds.even_splits(split, n=process_count, drop_remainder=train)
  host_split = splits[process_index]

  def encoded(ex):
    targets = spec.targets(ex["objects"])[:spec.max_objects]
    targets = tf.pad(targets, [[0, spec.max_objects - tf.shape(targets)[0]], [0, 0]])
    return {"image": ex["image"], "targets": tf.ensure_shape(
        targets, (spec.max_objects, spec.layout.size))}

  def decode(ex):
    image = features["image"].decode_example(ex["image"])[..., :3]
    if res is not None:
      image = preprocessing.resize({"image": image}, (res, res),
                                   antialias=data_config.antialias)["image"]
    return {**ex, **preprocessing.scale_image({"image": image})}

  ds = builder.as_dataset(split=host_split, shuffle_files=False, decoders=decoders,
                          read_config=tfds.ReadConfig(add_tfds_id=False)).map(encoded)
  options = tf.data.Options()
  options.deterministic = True
  if train:
    n = builder.info.splits[host_split].num_examples
    if n < batch_size:
      raise ValueError(f"{data_config.name} {host_split} has {n} examples, fewer than the "
                       f"batch size {batch_size}.")
    host_seed = (int(seed) * 1_000_003 + int(process_index)) % (2**31 - 1)
    first_epoch, offset = divmod(int(start_step) * batch_size, n)
    buffer = max(1, min(int(data_config.shuffle_buffer), n))
    stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
        lambda e: ds.shuffle(buffer, seed=e * 1_000_033 + host_seed,
                             reshuffle_each_iteration=False))
    stream = stream.skip(offset).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                     deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(2).with_options(options)
  total = builder.info.splits[split].num_examples
  per_process = -(-total // process_count)  # ceil
  num_batches = -(-per_process // batch_size)
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.map(lambda ex: {**ex, "mask": tf.constant(True)})
  padding = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)).repeat()
  ds = ds.concatenate(padding).take(num_batches * batch_size).batch(batch_size)
  return ds.prefetch(2).with_options(options)


# ------------------------------------------------------------------------------------------
# Model and task
# ------------------------------------------------------------------------------------------
def build_model(config: ml_collections.ConfigDict) -> models.SetPredictionModel:
  """SetPredictionModel of `config.model` (see configs/property_prediction.py)."""
  from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
  m = config.model
  strides = tuple(int(s) for s in str(m.encoder_strides).split(","))
  style = m.slot_attention.framework_defaults  # modules/defaults.py
  encoder = models.CNNEncoder(channels=(int(m.width),) * len(strides), strides=strides,
                              kernel_size=int(m.get("kernel_size", 5)),
                              mlp_size=int(m.width), out_size=int(m.width),
                              framework_defaults=style)
  head = models.PropertyPredictionHead(output_size=dataset_spec(config.data.name).layout.size,
                                       hidden_size=int(m.head_hidden_size),
                                       framework_defaults=style)
  return models.SetPredictionModel(encoder=encoder,
                                   slot_attention=SlotAttention(**dict(m.slot_attention)),
                                   head=head)


@tasks.register_task("property_prediction")
class PropertyPredictionTask(tasks.Task):
  """Set prediction of object properties; Hungarian Huber loss; AP at distance thresholds."""

  rng_streams = ("slots", "mesh")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.spec = dataset_spec(config.data.name)
    self.thresholds = tuple(float(t) for t in str(config.evaluation.thresholds).split(","))
    self.eval_metrics = set_prediction.make_eval_metrics(self.spec.layout, self.thresholds)

  @functools.cached_property
  def eval_split(self) -> str:
    data = self.config.data
    if self.config.mode == "eval":
      return self.config.evaluation.test_split
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    return input_pipeline.eval_split(data)

  def check_ready(self) -> None:
    """Fails fast (DatasetNotFoundError with the preparation command) when data are missing."""
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    input_pipeline.get_builder(self.config.data)

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    res = int(self.config.data.resolution)
    return {"image": np.zeros((batch_size, res, res, 3), np.float32),
            "targets": np.zeros((batch_size, self.spec.max_objects, self.spec.layout.size),
                                np.float32),
            "mask": np.ones((batch_size,), bool)}

  def init_variables(self, model, rngs):
    return model.init(dict(rngs), self.dummy_batch(1)["image"], train=False)

  def train_batches(self, start_step: int, process_index: int = 0,
                    process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    ds = create_dataset(self.config.data, self.config.data.train_split,
                        batch_size=self.config.batch_size // process_count, train=True,
                        seed=self.config.seed, start_step=start_step,
                        process_index=process_index, process_count=process_count)
    return input_pipeline.as_numpy(ds)

  def eval_batches(self, process_index: int = 0, process_count: int = 1):
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    ds = create_dataset(self.config.data, self.eval_split,
                        batch_size=self.config.eval_batch_size // process_count, train=False,
                        seed=self.config.seed, process_index=process_index,
                        process_count=process_count)
    return input_pipeline.as_numpy(ds)

  def build_model(self) -> models.SetPredictionModel:
    return build_model(self.config)

  def loss_fn(self, model, variables, batch, rngs):
    outputs, new_state = tasks.apply_model(model, variables, batch["image"], rngs=rngs,
                                           train=True)
    loss = jnp.mean(set_prediction.hungarian_huber_loss(outputs["predictions"],
                                                        batch["targets"]))
    return loss, {}, new_state

  def eval_outputs(self, model, variables, batch, rngs):
    outputs, _ = tasks.apply_model(model, variables, batch["image"], rngs=rngs, train=False)
    predictions = outputs["predictions"]
    return {"loss": set_prediction.hungarian_huber_loss(predictions, batch["targets"]),
            "predictions": predictions, "targets": batch["targets"], "mask": batch["mask"]}

  def report(self, eval_results: Mapping[str, float]) -> str:
    sa = self.config.model.slot_attention
    names = [set_prediction.threshold_name(t) for t in self.thresholds]
    values = " / ".join(f"{100 * eval_results[n]:.1f}" for n in names)
    lenient = [set_prediction.threshold_name(t, "lenient") for t in self.thresholds]
    if all(n in eval_results for n in lenient):
      values += " [lenient rule: " + " / ".join(
          f"{100 * eval_results[n]:.1f}" for n in lenient) + "]"
    line = (f"AP % at {', '.join(n[3:] for n in names)}: {values} "
            f"({PAPER_NAMES.get(sa.attention, sa.attention)}"
            f"{', detached slots' if sa.detach_slots else ''}, {self.config.data.name})")
    paper = PUBLISHED.get((sa.attention, bool(sa.detach_slots)))
    if self.config.runlocal or self.config.data.name != "clevr_v1/full" or paper is None:
      return line + "; no published number for this setting"
    table = "Table 2" if sa.detach_slots else "Table 6"
    return line + f"; published MESH {table}: {' / '.join(f'{v:.1f}' for v in paper)}"

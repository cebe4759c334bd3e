"""Unsupervised object discovery (SA paper §4.1, MESH paper §5.3): the autoencoder task.

Data come from `slot_ot_jax/data/input_pipeline.py` (`config.data` holds its fields): batches of
  image         float32 [B, H, W, 3] in [-1, 1]
  segmentation  int32   [B, H, W]    0 = background, 1.. objects (evaluation only)
  num_objects   int32   [B]          (evaluation only)
  mask          bool    [B]          False on padding / filtered scenes (evaluation only)
The model is `ObjectDiscoveryAutoencoder` (encoder -> SlotAttention -> spatial broadcast
decoder -> alpha compositing over K slots) trained with the MSE of the reconstruction.

Evaluation (clu collection built from `metrics.make_eval_metrics`): loss, FG-ARI and FG-mIoU
over the whole evaluation split, with `config.evaluation.num_slots` slots (more than in
training is allowed with the default shared-Gaussian slot init) and the slot attention's
`num_iters_eval` iterations. Optional extras:
  per_object_count  fg_ari_objects{n}, fg_miou_objects{n} for n = 1..max objects
  slot_counts       "7,9,11": fg_ari_slots{k}, fg_miou_slots{k} for each k (003 Fig. 1)
  sweep_slot_counts "7,9,11,13", `config.mode="eval"` only: the cardinality sweep of
                    `slot_ot_jax/evaluation/cardinality.py` (FG-ARI, ARI, FG-mIoU, loss for every
                    slot count x object count present), written by `write_eval_artifacts` to
                    <workdir>/cardinality/sweep.{json,md,png} and TensorBoard; its raw
                    per-cell metrics are dropped from eval_metrics.json
Image summaries at every evaluation (first eval batch): one grid, a row per example with the
input, the reconstruction, the hard segmentation, the per-slot alpha masks and the attention
maps of the last slot-attention iteration (the trainer writes it to TensorBoard and as PNG).

`config.mode="eval"` makes the trainer evaluate a checkpoint of the workdir (the latest, or
the best one with `config.evaluation.checkpoint="best"`) on `config.evaluation.test_split`
instead of training (see `train.evaluate_checkpoint`).
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import functools
import os
from typing import Iterator, Mapping

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from slot_ot_jax import tasks
from slot_ot_jax.evaluation import cardinality
from slot_ot_jax.evaluation import metrics
from slot_ot_jax.evaluation import visualize
from slot_ot_jax.modules import models

PAPER_NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "emd": "SA-EMD", "mesh": "SA-MESH"}
# Published FG-ARI / FG-mIoU in %, keyed by (dataset name, attention): MESH paper Tables 3-4
# (5 seeds) and SA paper Table 1 (FG-ARI only; softmax attention).
PUBLISHED = {
    ("multi_object_datasets/multi_dsprites_colored_on_grayscale", "softmax"):
        "MESH Table 3: FG-ARI 92.2 +- 0.5, FG-mIoU 24.3 (SA paper Table 1: FG-ARI 91.3 +- 0.3)",
    ("multi_object_datasets/multi_dsprites_colored_on_grayscale", "sinkhorn"):
        "MESH Table 3: FG-ARI 87.2 +- 1.8, FG-mIoU 84.0",
    ("multi_object_datasets/multi_dsprites_colored_on_grayscale", "mesh"):
        "MESH Table 3: FG-ARI 95.6 +- 0.2, FG-mIoU 86.2",
    ("clevrtex/full", "softmax"): "MESH Table 4: FG-ARI 52.8, FG-mIoU 26.3",
    ("clevrtex/full", "sinkhorn"): "MESH Table 4: FG-ARI 70.8, FG-mIoU 35.3",
    ("clevrtex/full", "mesh"): "MESH Table 4: FG-ARI 79.0, FG-mIoU 43.2",
    ("multi_object_datasets/clevr6", "softmax"): "SA paper Table 1: FG-ARI 98.8 +- 0.3",
    ("multi_object_datasets/tetrominoes", "softmax"): "SA paper Table 1: FG-ARI 99.5 +- 0.2",
}


def _int_list(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)


def build_autoencoder(config: ml_collections.ConfigDict) -> models.ObjectDiscoveryAutoencoder:
  """The papers' autoencoder for `config.model` (see configs/object_discovery.py).

  model.architecture picks the encoder/decoder pair of `models.object_discovery_modules`;
  model.width (0 = the paper's) replaces every conv width, model.kernel_size (0 = the
  paper's) every hidden conv kernel (the decoder's output layer keeps its own); for "clevr"
  the broadcast grid is resolution / 16 (8x8 at 128x128), otherwise the decoder runs at full
  resolution. model.compute_dtype ("float32" or "bfloat16") is the computation dtype of the
  encoder and the decoder (the slot attention's follows it through a field reference).
  """
  from slot_ot_jax.modules.attention import COMPUTE_DTYPES  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
  m = config.model
  res = int(config.data.resolution)
  if m.architecture == "clevr":
    encoder, decoder = models.object_discovery_modules("clevr")
    if res % 16:
      raise ValueError(f"the CLEVR decoder upsamples 16x; resolution {res} is not a multiple")
    decoder = decoder.clone(broadcast_resolution=(res // 16, res // 16))
  else:
    encoder, decoder = models.object_discovery_modules(m.architecture, (res, res))
  if m.width:
    w = int(m.width)
    encoder = encoder.clone(channels=(w,) * len(encoder.channels), mlp_size=w, out_size=w)
    decoder = decoder.clone(channels=(w,) * len(decoder.channels))
  if m.get("kernel_size"):  # E.g. 3 for CPU-sized studies (configs/cardinality_shapes.py).
    encoder = encoder.clone(kernel_size=int(m.kernel_size))
    decoder = decoder.clone(kernel_size=int(m.kernel_size))
  dtype = m.get("compute_dtype", "float32")
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"Unknown model.compute_dtype {dtype!r}; valid values: "
                     f"{', '.join(COMPUTE_DTYPES)}.")
  encoder, decoder = encoder.clone(dtype=jnp.dtype(dtype)), decoder.clone(dtype=jnp.dtype(dtype))
  # Initialisers and LayerNorm epsilon of the reference's framework (modules/defaults.py).
  style = m.slot_attention.framework_defaults
  encoder = encoder.clone(framework_defaults=style)
  decoder = decoder.clone(framework_defaults=style)
  # The first decoder layer without the broadcast copies (same parameters and outputs).
  decoder = decoder.clone(fold_broadcast=bool(m.get("fold_broadcast", True)))
  return models.ObjectDiscoveryAutoencoder(
      encoder=encoder, decoder=decoder,
      slot_attention=SlotAttention(**dict(m.slot_attention)))


@tasks.register_task("object_discovery")
class ObjectDiscoveryTask(tasks.Task):
  """Autoencoder with slots; MSE loss; FG-ARI / FG-mIoU evaluation and image summaries."""

  rng_streams = ("slots", "mesh")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    ev = config.evaluation
    self.num_slots = int(config.model.slot_attention.num_slots)
    self.eval_num_slots = int(ev.num_slots or self.num_slots)
    self.slot_counts = _int_list(ev.slot_counts)
    self.sweep_slot_counts = (_int_list(ev.get("sweep_slot_counts", ""))
                              if config.get("mode", "train") == "eval" else ())
    self.eval_metrics = self._make_eval_metrics()

  # ---------------------------------------------------------------- data
  @functools.cached_property
  def eval_data_config(self) -> ml_collections.ConfigDict:
    """`config.data` with `evaluation.dataset` / the test split substituted."""
    data = ml_collections.ConfigDict(self.config.data.to_dict())
    ev = self.config.evaluation
    if ev.dataset:
      data.name = ev.dataset
      data.max_objects = ev.max_objects
    if self.config.mode == "eval":
      data.eval_split = ev.test_split
    return data

  @functools.cached_property
  def num_true(self) -> int:
    """Label ids of the segmentation: background + the most objects of the evaluation set."""
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    return input_pipeline.max_num_objects(self.eval_data_config) + 1

  def check_ready(self) -> None:
    """Fails fast (DatasetNotFoundError with the preparation command) when data are missing."""
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    if self.config.mode != "eval":
      input_pipeline.get_builder(self.config.data)
    input_pipeline.get_builder(self.eval_data_config)

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    res = int(self.config.data.resolution)
    return {"image": np.zeros((batch_size, res, res, 3), np.float32),
            "segmentation": np.zeros((batch_size, res, res), np.int32),
            "num_objects": np.zeros((batch_size,), np.int32),
            "mask": np.ones((batch_size,), bool)}

  def train_batches(self, start_step: int, process_index: int = 0,
                    process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    ds = input_pipeline.create_dataset(
        self.config.data, self.config.data.train_split,
        batch_size=self.config.batch_size // process_count, train=True,
        seed=self.config.seed, start_step=start_step, process_index=process_index,
        process_count=process_count)
    for batch in input_pipeline.as_numpy(ds):
      yield {"image": batch["image"]}  # Labels are not needed for training.

  def eval_batches(self, process_index: int = 0, process_count: int = 1):
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    data = self.eval_data_config
    ds = input_pipeline.create_dataset(
        data, input_pipeline.eval_split(data),
        batch_size=self.config.eval_batch_size // process_count, train=False,
        seed=self.config.seed, process_index=process_index, process_count=process_count)
    return input_pipeline.as_numpy(ds)

  # ---------------------------------------------------------------- model and loss
  def build_model(self) -> models.ObjectDiscoveryAutoencoder:
    return build_autoencoder(self.config)

  def init_variables(self, model, rngs):
    return model.init(dict(rngs), self.dummy_batch(1)["image"], train=False)

  def loss_fn(self, model, variables, batch, rngs):
    outputs, new_state = tasks.apply_model(model, variables, batch["image"], rngs=rngs,
                                           train=True)
    return models.reconstruction_loss(outputs, batch["image"]), {}, new_state

  # ---------------------------------------------------------------- evaluation
  def _make_eval_metrics(self) -> type[clu_metrics.Collection]:
    # The fields of `metrics.make_eval_metrics()`, plus the optional breakdowns.
    fields = {"loss": clu_metrics.Average.from_output("loss"),
              "fg_ari": clu_metrics.Average.from_output("fg_ari"),
              "fg_miou": metrics.average_where("fg_miou", "has_foreground")}
    if self.config.evaluation.per_object_count:
      from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
      for n in range(1, input_pipeline.max_num_objects(self.eval_data_config) + 1):
        fields[f"fg_ari_objects{n}"] = metrics.average_where("fg_ari", f"objects{n}")
        fields[f"fg_miou_objects{n}"] = metrics.average_where("fg_miou", f"objects{n}_fg")
    for k in self.slot_counts:
      fields[f"fg_ari_slots{k}"] = clu_metrics.Average.from_output(f"fg_ari_slots{k}")
      fields[f"fg_miou_slots{k}"] = metrics.average_where(f"fg_miou_slots{k}",
                                                          f"has_foreground_slots{k}")
    if self.sweep_slot_counts:
      fields.update(cardinality.metric_fields(self.sweep_slot_counts, self.object_counts))
    return clu_metrics.Collection.create(**fields)

  @property
  def object_counts(self) -> range:
    """Object counts a scene of the evaluation set can hold (bins of the sweep)."""
    return range(1, self.num_true)

  def _segment(self, model, variables, batch, rngs, num_slots, with_ids=False):
    outputs, _ = tasks.apply_model(model, variables, batch["image"], rngs=rngs, train=False,
                                   num_slots=num_slots)
    pred_ids = metrics.masks_to_ids(outputs["masks"])
    scores = metrics.segmentation_metric_outputs(
        batch["segmentation"], pred_ids, num_true=self.num_true, num_pred=num_slots,
        count_unmatched_predictions=self.config.evaluation.count_unmatched_predictions)
    if with_ids:
      return outputs, scores, pred_ids
    return outputs, scores

  @staticmethod
  def _mse(outputs, batch):
    return jnp.mean(jnp.square(outputs["reconstruction"] - batch["image"]), axis=(1, 2, 3))

  def eval_outputs(self, model, variables, batch, rngs):
    outputs, scores = self._segment(model, variables, batch, rngs, self.eval_num_slots)
    result = {"loss": self._mse(outputs, batch), "mask": batch["mask"], **scores}
    if self.config.evaluation.per_object_count:
      for n in range(1, self.num_true):
        result[f"objects{n}"] = batch["num_objects"] == n
        result[f"objects{n}_fg"] = result[f"objects{n}"] & scores["has_foreground"]
    for k in self.slot_counts:
      _, more = self._segment(model, variables, batch, rngs, k)
      result[f"fg_ari_slots{k}"] = more["fg_ari"]
      result[f"fg_miou_slots{k}"] = more["fg_miou"]
      result[f"has_foreground_slots{k}"] = more["has_foreground"]
    if self.sweep_slot_counts:
      result.update(cardinality.object_count_outputs(
          batch["num_objects"], scores["has_foreground"], self.object_counts))
    for k in self.sweep_slot_counts:
      out_k, scores_k, ids_k = self._segment(model, variables, batch, rngs, k, with_ids=True)
      result.update(cardinality.cell_outputs(k, batch["segmentation"], ids_k, scores_k,
                                             self._mse(out_k, batch), num_true=self.num_true))
    return result

  def write_eval_artifacts(self, eval_results, *, step, workdir, writer):
    """The cardinality sweep's table, JSON and figure (process 0 writes the files)."""
    if not self.sweep_slot_counts:
      return dict(eval_results)
    data = self.eval_data_config
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    sa = self.config.model.slot_attention
    table = cardinality.collect(
        eval_results, self.sweep_slot_counts, self.object_counts, step=int(step),
        dataset=data.name, split=input_pipeline.eval_split(data),
        train_dataset=self.config.data.name, train_num_slots=self.num_slots,
        num_iters=sa.num_iters, num_iters_eval=sa.num_iters_eval or sa.num_iters,
        attention=sa.attention, update_norm=sa.update_norm)
    if jax.process_index() == 0:
      train_max = input_pipeline.max_num_objects(self.config.data)
      cardinality.write_sweep(
          table, os.path.join(str(workdir), "cardinality"), writer=writer, step=int(step),
          train_max_objects=train_max, eval_slots=self.eval_num_slots,
          label=f"{PAPER_NAMES.get(sa.attention, sa.attention)}, {sa.update_norm}")
    return {k: v for k, v in eval_results.items() if not cardinality.is_sweep_key(k)}

  @functools.cached_property
  def _decompose(self):
    """Jitted (model, variables, image [b,H,W,3], rngs) -> (outputs, last attention [b,N,K])."""
    def run(model, variables, image, rngs):
      variables = {k: v for k, v in variables.items() if k != "intermediates"}
      outputs, state = model.apply(variables, image, train=False, rngs=dict(rngs),
                                   num_slots=self.eval_num_slots, mutable=["intermediates"])
      attn = state["intermediates"]["slot_attention"]["attn"][-1]
      return outputs, attn
    return jax.jit(run, static_argnums=0)

  def image_summaries(self, model, variables, batch, rngs):
    n = int(self.config.images.num_examples)
    if n <= 0:
      return None
    image = jax.device_get(batch["image"])[:n]
    outputs, attn = jax.device_get(self._decompose(model, variables, image, rngs))
    grid = visualize.slot_grid(image, outputs["reconstruction"], outputs["masks"],
                               outputs["rgb"], attn, max_examples=n,
                               mode=self.config.images.mode)
    return {"slots": grid[None]}  # [1, rows * (H + 2) + 2, (3 + 2K) * (W + 2) + 2, 3] uint8

  def report(self, eval_results: Mapping[str, float]) -> str:
    attention = self.config.model.slot_attention.attention
    data = self.eval_data_config
    line = (f"FG-ARI {100 * eval_results['fg_ari']:.1f}, FG-mIoU "
            f"{100 * eval_results['fg_miou']:.1f} ({PAPER_NAMES.get(attention, attention)}, "
            f"{data.name}, {self.eval_num_slots} slots)")
    paper = PUBLISHED.get((data.name, attention))
    if self.config.runlocal or paper is None:
      return line + "; no published number for this setting"
    return line + f"; published {paper}"


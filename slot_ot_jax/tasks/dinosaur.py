"""DINOSAUR on MOVi (Krimmel et al. §5.2 and App. F; Seitzer et al., 2023): task "dinosaur".

A feature autoencoder over frozen ViT patch features (extracted once by
scripts/extract_vit_features.py; data in slot_ot_jax/data/movi.py):

  features [B, g, g, D]  (DINO ViT-B/8: g = 28, D = 768)
    -> MLPEncoder: LayerNorm, Dense(D) + ReLU, Dense(128), per patch (App. F, Table 4)
    -> SlotAttention: slots, keys, queries, values 128, slot MLP hidden 512, 3 iterations
    -> MLPBroadcastDecoder, each slot separately: broadcast to g x g, add a learned
       position embedding P [g, g, 128] (App. F, eq. 41), MLP 1024-1024-1024 (ReLU) ->
       D + 1 (Table 5)
    -> softmax of the alpha logits over slots; reconstruction = sum_k alpha_k * features_k
and trained with the mean squared error of the reconstructed features. The autoencoder is
`models.ObjectDiscoveryAutoencoder` with these encoder and decoder; it never sees pixels.

Evaluation (App. F): the alpha masks [B, K, g, g] are upsampled bilinearly to the
segmentation's resolution (224 x 224) and the argmax over slots is compared with the
ground truth: FG-ARI, ARI (background included; Krimmel Table 1), FG-mIoU and the feature
MSE ("loss"), over `config.evaluation.dataset` (e.g. MOVi-D for the zero-shot transfer of
Table 1, 24 slots) with `config.evaluation.num_slots` slots; `evaluation.slot_counts`
("7,11,15") adds fg_ari_slots{k}, ari_slots{k}, fg_miou_slots{k} for each k.
`config.mode="eval"` evaluates a checkpoint of the workdir (`evaluation.checkpoint`: the latest
or the best) on `evaluation.test_split`.
"""
# No `from __future__ import annotations`: clu reads the Collection field annotations.
import functools
from typing import Iterator, Mapping, Sequence

from clu import metrics as clu_metrics
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from slot_ot_jax import tasks
from slot_ot_jax.evaluation import metrics
from slot_ot_jax.modules import defaults
from slot_ot_jax.modules import models

Array = jax.Array

# Most objects in a clip: MOVi-C 3-10, MOVi-D up to 23 (Krimmel §5; kubric README).
MAX_OBJECTS = {"movi_c": 10, "movi_d": 23}
# Krimmel Table 1: zero-shot MOVi-D, 24 slots, median +- max deviation over seeds, keyed by
# (update_norm, objects O and slots K of training): F-ARI, l2 loss, ARI.
KRIMMEL_TABLE1 = {
    ("weighted_mean", 10, 11): "F-ARI 0.647 +- 0.015, l2 2.143, ARI 0.172",
    ("layer_norm", 10, 11): "F-ARI 0.660 +- 0.012, l2 2.146, ARI 0.171",
    ("weighted_sum", 10, 11): "F-ARI 0.722 +- 0.005, l2 2.223, ARI 0.204",
    ("batch_norm", 10, 11): "F-ARI 0.725 +- 0.006, l2 2.149, ARI 0.182",
    ("weighted_mean", 6, 11): "F-ARI 0.640 +- 0.009, l2 2.220, ARI 0.176",
    ("layer_norm", 6, 11): "F-ARI 0.639 +- 0.011, l2 2.220, ARI 0.176",
    ("weighted_sum", 6, 11): "F-ARI 0.709 +- 0.044, l2 2.309, ARI 0.205",
    ("batch_norm", 6, 11): "F-ARI 0.711 +- 0.005, l2 2.219, ARI 0.175",
    ("weighted_mean", 6, 7): "F-ARI 0.741 +- 0.005, l2 2.370, ARI 0.253",
    ("layer_norm", 6, 7): "F-ARI 0.742 +- 0.019, l2 2.365, ARI 0.253",
    ("weighted_sum", 6, 7): "F-ARI 0.797 +- 0.023, l2 2.475, ARI 0.242",
    ("batch_norm", 6, 7): "F-ARI 0.809 +- 0.005, l2 2.374, ARI 0.297",
}


class MLPEncoder(nn.Module):
  """`features [B, g, g, D] -> [B, g*g, out_size]`: LayerNorm, MLP per patch (Table 4).

  No position embedding: the ViT features carry position (App. F). `framework_defaults`
  selects the initialisers and LayerNorm epsilon (slot_ot_jax/modules/defaults.py); DINOSAUR's
  code (object-centric-learning-framework) builds this MLP with `build_mlp`, whose biases
  start at zero: style "ocl".
  """
  hidden_size: int = 768
  out_size: int = 128
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, features: Array) -> Array:
    style = self.framework_defaults
    x = features.reshape(features.shape[0], -1, features.shape[-1])
    x = nn.LayerNorm(name="norm", **defaults.layer_norm(style))(x)
    x = nn.relu(nn.Dense(self.hidden_size, name="dense0",
                         **defaults.dense(style, x.shape[-1], mlp_block=True))(x))
    return nn.Dense(self.out_size, name="dense1",
                    **defaults.dense(style, self.hidden_size, mlp_block=True))(x)


class MLPBroadcastDecoder(nn.Module):
  """`slots [M, Ds] -> [M, g, g, out_channels]` (Table 5).

  Each slot is broadcast to the g x g grid, a learned position embedding [g, g, Ds] is
  added (eq. 41; initialised N(0, 0.02^2) in every style, as DINOSAUR's PatchDecoder in the
  object-centric-learning-framework: torch.randn * 0.02), then an MLP runs per position
  (a `build_mlp` MLP there: zero biases under style "ocl").
  """
  grid: int = 28
  hidden_sizes: Sequence[int] = (1024, 1024, 1024)
  out_channels: int = 769
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, slots: Array) -> Array:
    style = self.framework_defaults
    d = slots.shape[-1]
    pos = self.param("position_embedding", nn.initializers.normal(0.02),
                     (self.grid, self.grid, d))
    x = slots[:, None, None, :] + pos[None]                       # [M, g, g, Ds]
    for i, size in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(size, name=f"dense{i}",
                           **defaults.dense(style, x.shape[-1], mlp_block=True))(x))
    return nn.Dense(self.out_channels, name="out",
                    **defaults.dense(style, x.shape[-1], mlp_block=True))(x)


def build_model(config: ml_collections.ConfigDict) -> models.ObjectDiscoveryAutoencoder:
  """The autoencoder of `config.model` (configs/movi_dinosaur.py)."""
  from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
  m = config.model
  sa = SlotAttention(**dict(m.slot_attention))
  style = m.slot_attention.framework_defaults
  return models.ObjectDiscoveryAutoencoder(
      encoder=MLPEncoder(hidden_size=m.encoder_hidden or m.feature_size, out_size=sa.slot_size,
                         framework_defaults=style),
      decoder=MLPBroadcastDecoder(grid=m.grid, hidden_sizes=tuple(m.decoder_hidden),
                                  out_channels=m.feature_size + 1, framework_defaults=style),
      slot_attention=sa)


def upsampled_ids(masks: Array, size: tuple[int, int]) -> Array:
  """Alpha masks `[B, K, g, g, 1]` -> slot ids `[B, H, W]`: bilinear upsampling, argmax."""
  b, k = masks.shape[:2]
  up = jax.image.resize(masks[..., 0], (b, k) + tuple(size), method="bilinear")
  return metrics.masks_to_ids(up)


def _int_list(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)


@tasks.register_task("dinosaur")
class DinosaurTask(tasks.Task):
  """Feature autoencoder with slots on MOVi; FG-ARI / ARI / FG-mIoU from upsampled masks."""

  rng_streams = ("slots", "mesh")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    ev = config.evaluation
    self.num_slots = int(config.model.slot_attention.num_slots)
    self.eval_num_slots = int(ev.num_slots or self.num_slots)
    self.slot_counts = _int_list(ev.slot_counts)
    self.eval_name = ev.dataset or config.data.name
    if self.eval_name not in MAX_OBJECTS:
      raise ValueError(f"Unknown MOVi dataset {self.eval_name!r}; valid: "
                       f"{', '.join(MAX_OBJECTS)}.")
    self.num_true = MAX_OBJECTS[self.eval_name] + 1
    self.eval_metrics = self._make_eval_metrics()

  # ---------------------------------------------------------------- data
  def _builder(self, name: str):
    from slot_ot_jax.data import movi  # pylint: disable=g-import-not-at-top
    d = self.config.data
    return movi.features_builder(d.features_dir, name, d.vit, movi_dir=d.movi_dir)

  @functools.cached_property
  def train_builder(self):
    return self._builder(self.config.data.name)

  @functools.cached_property
  def eval_builder(self):
    return self._builder(self.eval_name)

  def check_ready(self) -> None:
    """Missing feature datasets (with the extraction command) or a model/data mismatch."""
    builders = [self.eval_builder] + ([self.train_builder] if self.config.mode != "eval"
                                      else [])
    m = self.config.model
    want = (m.grid * m.grid, m.feature_size)
    for builder in builders:
      shape = tuple(builder.info.features["features"].shape)
      if shape != want:
        raise ValueError(f"{builder.data_dir} holds features {shape} per frame; "
                         f"config.model (grid={m.grid}, feature_size={m.feature_size}) "
                         f"expects {want}.")

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    m = self.config.model
    return {"features": np.zeros((batch_size, m.grid, m.grid, m.feature_size), np.float32)}

  def train_batches(self, start_step: int, process_index: int = 0,
                    process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.data import movi  # pylint: disable=g-import-not-at-top
    d = self.config.data
    ds = movi.feature_batches(
        self.train_builder, d.train_split, batch_size=self.config.batch_size // process_count,
        train=True, seed=self.config.seed, max_objects=d.max_objects, start_step=start_step,
        process_index=process_index, process_count=process_count,
        shuffle_buffer=d.shuffle_buffer)
    return input_pipeline.as_numpy(ds)

  def eval_batches(self, process_index: int = 0, process_count: int = 1):
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.data import movi  # pylint: disable=g-import-not-at-top
    ev = self.config.evaluation
    split = ev.test_split if self.config.mode == "eval" else self.config.data.eval_split
    ds = movi.feature_batches(
        self.eval_builder, split, batch_size=self.config.eval_batch_size // process_count,
        train=False, seed=self.config.seed, max_objects=ev.max_objects,
        process_index=process_index, process_count=process_count)
    return input_pipeline.as_numpy(ds)

  # ---------------------------------------------------------------- model and loss
  def build_model(self) -> models.ObjectDiscoveryAutoencoder:
    return build_model(self.config)

  def init_variables(self, model, rngs):
    return model.init(dict(rngs), self.dummy_batch(1)["features"], train=False)

  def loss_fn(self, model, variables, batch, rngs):
    outputs, new_state = tasks.apply_model(model, variables, batch["features"], rngs=rngs,
                                           train=True)
    return models.reconstruction_loss(outputs, batch["features"]), {}, new_state

  # ---------------------------------------------------------------- evaluation
  def _make_eval_metrics(self) -> type[clu_metrics.Collection]:
    fields = {}
    for suffix in [""] + [f"_slots{k}" for k in self.slot_counts]:
      fields[f"fg_ari{suffix}"] = metrics.average_where(f"fg_ari{suffix}", "mask")
      fields[f"ari{suffix}"] = metrics.average_where(f"ari{suffix}", "mask")
      fields[f"fg_miou{suffix}"] = metrics.average_where(f"fg_miou{suffix}",
                                                         f"has_foreground{suffix}")
    fields["loss"] = metrics.average_where("loss", "mask")
    return clu_metrics.Collection.create(**fields)

  def _segment(self, model, variables, batch, rngs, num_slots, suffix):
    outputs, _ = tasks.apply_model(model, variables, batch["features"], rngs=rngs,
                                   train=False, num_slots=num_slots)
    true_ids = batch["segmentation"]
    pred_ids = upsampled_ids(outputs["masks"], true_ids.shape[1:3])
    scores = metrics.segmentation_metric_outputs(
        true_ids, pred_ids, num_true=self.num_true, num_pred=num_slots,
        count_unmatched_predictions=self.config.evaluation.count_unmatched_predictions)
    scores["ari"] = metrics.adjusted_rand_index(true_ids, pred_ids, num_true=self.num_true,
                                                num_pred=num_slots)
    return outputs, {f"{k}{suffix}": v for k, v in scores.items()}

  def eval_outputs(self, model, variables, batch, rngs):
    outputs, result = self._segment(model, variables, batch, rngs, self.eval_num_slots, "")
    err = jnp.square(outputs["reconstruction"] - batch["features"])
    result.update(loss=jnp.mean(err, axis=(1, 2, 3)), mask=batch["mask"])
    for k in self.slot_counts:
      result.update(self._segment(model, variables, batch, rngs, k, f"_slots{k}")[1])
    return result

  def report(self, eval_results: Mapping[str, float]) -> str:
    c = self.config
    sa = c.model.slot_attention
    objects = c.data.max_objects if c.data.max_objects >= 0 else MAX_OBJECTS[c.data.name]
    line = (f"FG-ARI {eval_results['fg_ari']:.3f}, ARI {eval_results['ari']:.3f}, FG-mIoU "
            f"{eval_results['fg_miou']:.3f}, feature MSE {eval_results['loss']:.4g} "
            f"({sa.update_norm}, trained on {c.data.name} <= {objects} objects with "
            f"{self.num_slots} slots; evaluated on {self.eval_name}, {self.eval_num_slots} slots)")
    paper = KRIMMEL_TABLE1.get((sa.update_norm, objects, self.num_slots))
    if (c.runlocal or paper is None or self.eval_name != "movi_d"
        or self.eval_num_slots != 24 or sa.attention != "softmax"):
      return line + "; no published number for this setting"
    return line + f"; Krimmel Table 1: {paper}"

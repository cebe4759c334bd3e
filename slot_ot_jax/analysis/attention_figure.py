"""MESH Fig. 2 / App. J (Figs. 7-8): attention maps and alpha masks of trained SA and SA-MESH.

Trains (or loads) both models on the offline shapes dataset with the settings of the CPU
demonstration in docs/object_discovery.md, decomposes test images into per-slot
reconstructions, alpha masks and the attention maps of every iteration, and draws them;
`python -m slot_ot_jax.analysis.figures attention_maps` is the command line. Shapes: images
[B, H, W, 3] in [-1, 1]; attention of iteration t [B, N, K] with N = H' * W' feature
positions and K slots; masks [B, K, H, W, 1].
Run from the repository root (the config comes from `configs/shapes.py`).
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax.evaluation import visualize

DEFAULT_STEPS = 3000  # training steps of each model of the attention-map figure
PAPER_NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "mesh": "SA-MESH"}


def discovery_config(attention: str, *, steps: int = DEFAULT_STEPS, batch_size: int = 16,
                     width: int = 16, slot_size: int = 32, seed: int = 0,
                     tiny: bool = False):
  """The shapes/32x32 config of the CPU demonstration (scripts/object_discovery_demo.py).

  Same settings as the 3,000-step demonstration of docs/object_discovery.md (16 channels,
  4 slots of 32, Adam 4e-4 with a 10% warm-up, halved once over the run, evaluated on the
  test split). `tiny`:
  the `runlocal=1` config (shapes/tiny, batch 8) cut to `steps` steps.
  """
  from configs import shapes  # pylint: disable=g-import-not-at-top
  if tiny:
    config = shapes.get_config(f"attention={attention},seed={seed},runlocal=1")
  else:
    config = shapes.get_config(f"attention={attention},seed={seed},steps={steps},"
                               f"width={width},batch_size={batch_size}")
  with config.unlocked():
    config.num_train_steps = steps
    config.eval_every_steps = config.checkpoint_every_steps = steps
    config.images.num_examples = 0
    if not tiny:
      config.model.slot_attention.slot_size = slot_size
      config.model.slot_attention.mlp_size = 2 * slot_size
      config.optimizer.warmup_steps = steps // 10
      config.optimizer.decay_steps = steps
      config.data.eval_split = "test"
  return config


def train_discovery(attention: str, workdir: str, *, train: bool = True, **config_kwargs):
  """Trains (or resumes) one model and returns (config, variables, result).

  A finished run in `workdir` is loaded, not retrained. With `train=False` the workdir's
  latest checkpoint is used as it is, even one saved before the end of the schedule (e.g.
  a run stopped by SIGTERM), and evaluated on the test split. `result` holds "step" and
  "report" (the test-split FG-ARI / FG-mIoU line).
  """
  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import train as trainer_lib  # pylint: disable=g-import-not-at-top
  config = discovery_config(attention, **config_kwargs)
  final = os.path.join(workdir, trainer_lib.FINAL_METRICS_FILE)
  evaluated = os.path.join(workdir, trainer_lib.EVAL_METRICS_FILE)
  checkpointer = checkpointing.Checkpointer(workdir, config)
  latest = checkpointer.latest_step()
  checkpointer.close()
  if os.path.exists(final) and json.load(open(final)).get("step") == config.num_train_steps:
    result = json.load(open(final))
  elif train:
    result = trainer_lib.train_and_evaluate(config, workdir)
  elif latest is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}; train first (train=True)")
  elif os.path.exists(evaluated) and json.load(open(evaluated)).get("step") == latest:
    result = json.load(open(evaluated))
  else:
    eval_config = config.copy_and_resolve_references()
    with eval_config.unlocked():
      eval_config.mode = "eval"
    result = trainer_lib.evaluate_checkpoint(eval_config, workdir)
  task = tasks.get_task(config)
  trainer = trainer_lib.Trainer(config, task, jax.devices()[:1])
  checkpointer = checkpointing.Checkpointer(workdir, config)
  try:
    state = checkpointer.restore(checkpointer.latest_step(), trainer.abstract_state_dict())
  finally:
    checkpointer.close()
  variables = {"params": state["params"], **state["model_state"]}
  return config, variables, result


def decompose(config, variables, images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
  """Runs a trained autoencoder on `images [B, H, W, 3]` and collects what the figures show.

  Returns numpy arrays: reconstruction [B, H, W, 3], masks [B, K, H, W] (alpha masks),
  attn [T, B, N, K] (the sown attention of every slot-attention iteration).
  """
  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  model = tasks.get_task(config).build_model()
  rngs = {"slots": jax.random.PRNGKey(seed), "mesh": jax.random.PRNGKey(seed + 1)}
  outputs, state = model.apply(variables, jnp.asarray(images), train=False, rngs=rngs,
                               mutable=["intermediates"])
  attn = state["intermediates"]["slot_attention"]["attn"]
  return {"reconstruction": np.asarray(outputs["reconstruction"]),
          "masks": np.asarray(outputs["masks"][..., 0]),
          "attn": np.stack([np.asarray(a) for a in attn])}


def per_image_scores(config, segmentation: np.ndarray, masks: np.ndarray) -> dict:
  """FG-ARI and FG-mIoU of each image (`segmentation [B, H, W]`, `masks [B, K, H, W]`)."""
  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
  scores = metrics.segmentation_metric_outputs(
      jnp.asarray(segmentation), metrics.masks_to_ids(jnp.asarray(masks)),
      num_true=tasks.get_task(config).num_true, num_pred=masks.shape[1])
  return {k: np.asarray(scores[k]) for k in ("fg_ari", "fg_miou")}


def attention_stats(attn: np.ndarray, segmentation: np.ndarray) -> dict[str, np.ndarray]:
  """How peaked the attention is, and how much of it falls on the background.

  Args:
    attn: [T, B, N, K] attention of each iteration, N = H * W (a full-resolution encoder
      grid, as in the shapes / Multi-dSprites model).
    segmentation: [B, H, W] ground truth, 0 = background.

  Returns:
    "entropy": [T] mean over images and slots of the entropy of each slot's attention
      column normalised to a distribution over the N inputs, divided by log N (1 = spread
      over the whole image, 0 = a single input); "background": [T] mean fraction of the
      attention mass on background inputs.
  """
  attn = np.asarray(attn, np.float64)
  n = attn.shape[2]
  if segmentation[0].size != n:
    raise ValueError(f"attention over {n} inputs does not match {segmentation.shape[1:]} "
                     "pixels; attention_stats needs a full-resolution encoder")
  col = attn / np.maximum(attn.sum(axis=2, keepdims=True), 1e-30)       # [T, B, N, K]
  h = -np.sum(np.where(col > 0, col * np.log(np.maximum(col, 1e-300)), 0.0), axis=2)
  background = (segmentation.reshape(segmentation.shape[0], n) == 0)    # [B, N]
  bg_mass = np.sum(attn * background[None, :, :, None], axis=(2, 3)) / attn.sum(axis=(2, 3))
  return {"entropy": h.mean(axis=(1, 2)) / np.log(n), "background": bg_mass.mean(axis=1)}


def test_images(config, num: int | None = None) -> dict[str, np.ndarray]:
  """The first `num` images and segmentations of the config's first evaluation batch."""
  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  batch = next(iter(tasks.get_task(config).eval_batches()))
  return {k: np.asarray(batch[k][:num]) for k in ("image", "segmentation")}


def _overlay(image01: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """The image times a [0, 1] weight map on white (how App. J shows maps and masks)."""
  return weight[..., None] * image01 + (1.0 - weight[..., None])


def plot_attention_maps(path: str, tiny: bool = False, workdir: str = "workdirs/figures",
                        attentions: Sequence[str] = ("softmax", "mesh"), num_images: int = 3,
                        steps: int | None = None, train: bool = True) -> dict:
  """Fig. 2 / App. J: per model and image, the attention of each iteration and alpha masks.

  One block per model; per image: a row per slot-attention iteration (the image, then each
  slot's attention map, scaled to its maximum, upsampled and laid over the image) and a row
  of alpha masks laid over the image, with the image's FG-ARI / FG-mIoU in the title.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = steps or (2 if tiny else DEFAULT_STEPS)
  num_images = 1 if tiny else num_images
  results = {}
  for attention in attentions:
    t0 = time.time()
    config, variables, result = train_discovery(
        attention, os.path.join(workdir, f"{attention}_{steps}"), steps=steps, tiny=tiny,
        train=train)
    data = test_images(config)  # the first evaluation batch; statistics over all of it
    out = decompose(config, variables, data["image"])
    out.update(per_image_scores(config, data["segmentation"], out["masks"]))
    out.update(image=data["image"], result=result, seconds=time.time() - t0,
               stats=attention_stats(out["attn"], data["segmentation"]))
    results[attention] = out

  first = results[attentions[0]]
  iters, _, _, k = first["attn"].shape
  rows_per_image = iters + 1
  nrows = len(attentions) * num_images * rows_per_image
  fig, axes = plt.subplots(nrows, k + 1, figsize=(1.3 * (k + 1), 1.35 * nrows), squeeze=False)
  row = 0
  for attention in attentions:
    out = results[attention]
    height, width = out["image"].shape[1:3]
    for i in range(num_images):
      image01 = np.clip((out["image"][i] + 1) / 2, 0, 1)
      for t in range(iters + 1):
        ax = axes[row]
        ax[0].imshow(image01)
        if t < iters:
          maps = visualize.attention_maps(out["attn"][t, i], height, width)
          tiles, label = [_overlay(image01, m) for m in maps], f"attention, it. {t + 1}"
        else:
          tiles, label = [_overlay(image01, m) for m in out["masks"][i]], "alpha masks"
        for j, tile in enumerate(tiles):
          ax[j + 1].imshow(np.clip(tile, 0, 1))
        ax[0].set_ylabel(label, fontsize=7)
        if t == 0:
          ax[0].set_title(f"{PAPER_NAMES[attention]} (step {out['result']['step']}), image "
                          f"{i + 1}: FG-ARI {100 * out['fg_ari'][i]:.0f}, FG-mIoU "
                          f"{100 * out['fg_miou'][i]:.0f}", fontsize=8, loc="left")
        for a in ax:
          a.set_xticks([])
          a.set_yticks([])
        row += 1
  for j in range(k):
    axes[-1, j + 1].set_xlabel(f"slot {j + 1}", fontsize=7)
  # Titles run over the first column's width, so no tight_layout.
  fig.subplots_adjust(left=0.06, right=0.99, bottom=0.2 / nrows, top=1 - 0.25 / nrows,
                      hspace=0.35, wspace=0.05)
  visualize.save_figure(fig, path)
  _write_attention_summary(os.path.splitext(path)[0] + ".md", results, steps, tiny)
  return results


def _write_attention_summary(path: str, results: dict, steps: int, tiny: bool) -> None:
  """The numbers behind the attention-map figure, as a small markdown table."""
  lines = [f"# Attention maps and alpha masks (schedule of {steps} training steps per model"
           + (", toy size" if tiny else "") + ")", "",
           "Test split (full evaluation of each model at the step it was drawn at):", ""]
  for attention, out in results.items():
    lines.append(f"- {PAPER_NAMES[attention]}, step {out['result']['step']}: "
                 f"{out['result']['report']}")
  n = len(next(iter(results.values()))["image"])
  lines += ["", f"First evaluation batch ({n} images), per slot-attention iteration: mean "
            "normalised entropy of a slot's attention over the inputs (1 = uniform over the "
            "image) and mean share of the attention mass on background pixels.", "",
            "| model | iteration | attention entropy | attention on background |",
            "| --- | --- | --- | --- |"]
  for attention, out in results.items():
    for t, (h, bg) in enumerate(zip(out["stats"]["entropy"], out["stats"]["background"])):
      lines.append(f"| {PAPER_NAMES[attention]} | {t + 1} | {h:.3f} | {100 * bg:.1f}% |")
  lines += ["", "Per image of that batch (FG-ARI / FG-mIoU, %):", "",
            "| image | " + " | ".join(PAPER_NAMES[a] for a in results) + " |",
            "| --- |" + " --- |" * len(results)]
  for i in range(n):
    lines.append(f"| {i + 1} | " + " | ".join(
        f"{100 * out['fg_ari'][i]:.0f} / {100 * out['fg_miou'][i]:.0f}"
        for out in results.values()) + " |")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")

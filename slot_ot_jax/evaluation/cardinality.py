"""Cardinality sweeps (003, Krimmel et al. §5): slot counts x object counts from one checkpoint.

003 asks how a model trained with few slots and objects behaves with more of either. From
one checkpoint, the sweep evaluates every slot count K of a list on the evaluation set and
splits every score by the number of objects n of the scene, giving one cell per (K, n):

  fg_ari   FG-ARI (background pixels left out; 003's F-ARI)
  ari      ARI over all pixels, background included (003's ARI)
  fg_miou  foreground mIoU after Hungarian matching (MESH paper; scenes with foreground)
  loss     reconstruction MSE per pixel and channel (003 App. A)

plus the pooled cell (K, all scenes). Only object counts present in the evaluation set get
cells: an empty bin is left out, never written as NaN.

How it plugs into evaluation (`slot_ot_jax/tasks/object_discovery.py`, `config.mode="eval"` with
`config.evaluation.sweep_slot_counts`):
  * `metric_fields(slot_counts, object_counts)`: clu metric fields added to the task's
    Collection, named `sweep_{metric}_k{K}_n{n}`, `sweep_{metric}_k{K}_all` and the scene
    counts `sweep_count_n{n}` / `sweep_count_fg_n{n}` (scenes with foreground);
  * `cell_outputs(...)`: the per-example outputs that feed them, one call per K inside the
    jitted evaluation step;
  * `collect(eval_results, ...)`: the reduced metrics -> a sweep table (dict, JSON-ready);
  * `write_sweep(table, directory, writer, step)`: sweep.json, sweep.md, sweep.png (003
    Fig. 1 layout, plus FG-mIoU and loss rows) and the same figure as a TensorBoard image.
`plot_sweeps` draws several runs per label (mean line, min-max band), for studies such as
scripts/cardinality_study.py.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax.evaluation import metrics

METRICS = ("fg_ari", "ari", "fg_miou", "loss")
TITLES = {"fg_ari": "FG-ARI", "ari": "ARI", "fg_miou": "FG-mIoU", "loss": "loss (MSE)"}
# Metrics averaged over scenes with foreground only (the others over all scenes).
_FG_ONLY = ("fg_miou",)


def count_where(where: str):
  """clu metric: the number of examples where output `where` [B] (and "mask") holds."""

  @flax.struct.dataclass
  class CountWhere(clu_metrics.Metric):
    count: jnp.ndarray

    @classmethod
    def from_model_output(cls, **outputs):
      keep = jnp.asarray(outputs[where]).astype(bool)
      if outputs.get("mask") is not None:
        keep = keep & jnp.asarray(outputs["mask"]).astype(bool)
      return cls(count=keep.sum().astype(jnp.int32))

    def merge(self, other):
      return type(self)(count=self.count + other.count)

    def compute(self):
      return self.count

  return CountWhere


def _name(metric: str, k: int, n: int | None) -> str:
  return f"sweep_{metric}_k{k}_" + ("all" if n is None else f"n{n}")


def metric_fields(slot_counts: Sequence[int], object_counts: Iterable[int]) -> dict[str, Any]:
  """clu metric fields of the sweep, for `clu.metrics.Collection.create(**fields)`."""
  fields = {}
  for n in object_counts:
    fields[f"sweep_count_n{n}"] = count_where(f"sweep_objects{n}")
    fields[f"sweep_count_fg_n{n}"] = count_where(f"sweep_objects{n}_fg")
  for k in slot_counts:
    for metric in METRICS:
      where = "has_foreground" if metric in _FG_ONLY else "sweep_all"
      fields[_name(metric, k, None)] = metrics.average_where(f"sweep_{metric}_k{k}", where)
      for n in object_counts:
        suffix = "_fg" if metric in _FG_ONLY else ""
        fields[_name(metric, k, n)] = metrics.average_where(
            f"sweep_{metric}_k{k}", f"sweep_objects{n}{suffix}")
  return fields


def object_count_outputs(num_objects: jax.Array, has_foreground: jax.Array,
                         object_counts: Iterable[int]) -> dict[str, jax.Array]:
  """Per-example bin indicators [B] (shared by every slot count)."""
  out = {"sweep_all": jnp.ones_like(has_foreground, bool)}
  for n in object_counts:
    out[f"sweep_objects{n}"] = num_objects == n
    out[f"sweep_objects{n}_fg"] = (num_objects == n) & has_foreground
  return out


def cell_outputs(k: int, true_ids: jax.Array, pred_ids: jax.Array, scores: Mapping[str, Any],
                 loss: jax.Array, *, num_true: int) -> dict[str, jax.Array]:
  """Per-example outputs [B] of slot count `k`.

  Args:
    k: the slot count (names the outputs).
    true_ids: [B, H, W] int ground truth, 0 = background.
    pred_ids: [B, H, W] int slot index per pixel (`metrics.masks_to_ids`).
    scores: `metrics.segmentation_metric_outputs` of these ids (fg_ari, fg_miou).
    loss: [B] reconstruction MSE with k slots.
    num_true: label ids of the ground truth (max objects + 1).
  """
  ari = metrics.adjusted_rand_index(true_ids, pred_ids, num_true=num_true, num_pred=k)
  return {f"sweep_fg_ari_k{k}": scores["fg_ari"], f"sweep_ari_k{k}": ari,
          f"sweep_fg_miou_k{k}": scores["fg_miou"], f"sweep_loss_k{k}": loss}


def is_sweep_key(name: str) -> bool:
  return name.startswith("sweep_")


def collect(eval_results: Mapping[str, float], slot_counts: Sequence[int],
            object_counts: Iterable[int], **info: Any) -> dict[str, Any]:
  """The sweep table from the reduced metrics (fields of `metric_fields`).

  Returns:
    {**info, "slot_counts", "object_counts" (present ones only), "num_scenes",
     "cells": [{"slots", "objects" (int or "all"), "num_scenes", "num_scenes_fg" (with
     foreground), fg_ari, ari, fg_miou, loss}]}
    with fractions as fractions (not %); a metric without any scene in a cell (FG-mIoU of a
    bin without foreground) is left out of that cell.
  """
  counts = {n: int(eval_results[f"sweep_count_n{n}"]) for n in object_counts}
  fg_counts = {n: int(eval_results[f"sweep_count_fg_n{n}"]) for n in object_counts}
  present = [n for n in sorted(counts) if counts[n] > 0]
  cells = []
  for k in slot_counts:
    for n in [*present, None]:
      c = {"slots": int(k), "objects": "all" if n is None else n,
           "num_scenes": sum(counts[m] for m in present) if n is None else counts[n]}
      fg = sum(fg_counts[m] for m in present) if n is None else fg_counts[n]
      c["num_scenes_fg"] = fg
      for metric in METRICS:
        if metric in _FG_ONLY and fg == 0:
          continue
        c[metric] = float(eval_results[_name(metric, k, n)])
      cells.append(c)
  return {**info, "slot_counts": [int(k) for k in slot_counts], "object_counts": present,
          "num_scenes": sum(counts[n] for n in present), "cells": cells}


def cell(table: Mapping[str, Any], k: int, n: int | str) -> dict[str, Any]:
  """The cell of `k` slots and `n` objects ("all": every scene) of a sweep table."""
  for c in table["cells"]:
    if c["slots"] == k and c["objects"] == n:
      return c
  raise KeyError((k, n))


def pooled(table: Mapping[str, Any], metric: str, k: int, max_objects: int | None = None
           ) -> float | None:
  """`metric` with `k` slots over scenes with at most `max_objects` objects (None: all).

  Exact: the cell means weighted by their scene counts (FG-mIoU: by their scenes with
  foreground). None if no scene qualifies.
  """
  if max_objects is None:
    return cell(table, k, "all").get(metric)
  total = weight = 0.0
  for n in table["object_counts"]:
    c = cell(table, k, n)
    if n <= max_objects and metric in c:
      w = c["num_scenes_fg" if metric in _FG_ONLY else "num_scenes"]
      total += c[metric] * w
      weight += w
  return total / weight if weight else None


def markdown(table: Mapping[str, Any], percent: bool = True) -> str:
  """One markdown table per metric: rows = slot counts, columns = object counts + all."""
  ns = [*table["object_counts"], "all"]
  lines = []
  for metric in METRICS:
    scale = 100.0 if (percent and metric != "loss") else 1.0
    unit = " (%)" if scale == 100.0 else ""
    lines += [f"{TITLES[metric]}{unit}, by slot count (rows) and object count (columns):", "",
              "| slots | " + " | ".join(str(n) for n in ns) + " |",
              "| --- |" + " --- |" * len(ns)]
    for k in table["slot_counts"]:
      row = []
      for n in ns:
        value = cell(table, k, n).get(metric)
        row.append("-" if value is None else
                   (f"{scale * value:.1f}" if scale == 100.0 else f"{value:.4f}"))
      lines.append(f"| {k} | " + " | ".join(row) + " |")
    lines.append("")
  counts = ", ".join(f"{n}: {cell(table, table['slot_counts'][0], n)['num_scenes']}"
                     for n in table["object_counts"])
  lines.append(f"Scenes per object count: {counts} (total {table['num_scenes']}).")
  return "\n".join(lines)


def plot_sweeps(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str, *,
                train_max_objects: int | None, eval_slots: int,
                metric_names: Sequence[str] = METRICS, title: str = "") -> np.ndarray:
  """003 Figs. 1-6 layout: one row per metric; columns: score against the slot count on
  scenes with <= `train_max_objects` objects (003: CLEVR6), against the slot count on all
  scenes (CLEVR10), and against the object count with `eval_slots` slots.

  Args:
    runs: label -> sweep tables of that variant (e.g. one per seed): the mean is drawn as a
      line, the min-max range over the tables as a band.
    path: PNG file to write.

  Returns:
    The figure as uint8 [H, W, 3] (for TensorBoard).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top,unused-import
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = len(metric_names)
  fig, axes = plt.subplots(rows, 3, figsize=(12, 2.6 * rows + 0.6), squeeze=False)
  columns = [f"scenes with <= {train_max_objects} objects", "all scenes",
             f"{eval_slots} slots"]
  for label, tables in runs.items():
    first = tables[0]
    ks = first["slot_counts"]
    ns = first["object_counts"]
    for r, metric in enumerate(metric_names):
      curves = [
          (ks, [[pooled(t, metric, k, train_max_objects) for k in ks] for t in tables]),
          (ks, [[pooled(t, metric, k) for k in ks] for t in tables]),
          (ns, [[cell(t, eval_slots, n).get(metric) if n in t["object_counts"] else None
                 for n in ns] for t in tables])]
      for c, (xs, values) in enumerate(curves):
        if c == 0 and train_max_objects is None:
          continue
        v = np.array([[np.nan if x is None else x for x in row] for row in values], float)
        scale = 1.0 if metric == "loss" else 100.0
        mean = np.nanmean(v, axis=0) * scale
        ax = axes[r, c]
        line, = ax.plot(xs, mean, marker="o", ms=3, label=label)
        if len(tables) > 1:
          ax.fill_between(xs, np.nanmin(v, 0) * scale, np.nanmax(v, 0) * scale,
                          color=line.get_color(), alpha=0.15, lw=0)
  for r, metric in enumerate(metric_names):
    for c in range(3):
      ax = axes[r, c]
      ax.grid(alpha=0.3)
      ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
      ax.set_xlabel("number of objects" if c == 2 else "number of slots")
      unit = "" if metric == "loss" else " (%)"
      ax.set_ylabel(TITLES[metric] + unit)
      if r == 0:
        ax.set_title(columns[c], fontsize=10)
  axes[0, -1].legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=90)
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return image


def write_sweep(table: Mapping[str, Any], directory: str, *, writer=None, step: int = 0,
                train_max_objects: int | None = None, eval_slots: int | None = None,
                label: str = "model") -> dict[str, str]:
  """Writes <directory>/sweep.json, sweep.md and sweep.png (+ TensorBoard image
  "cardinality/sweep" when `writer` is given). Returns {kind: path}."""
  os.makedirs(directory, exist_ok=True)
  paths = {ext: os.path.join(directory, f"sweep.{ext}") for ext in ("json", "md", "png")}
  with open(paths["json"], "w") as f:
    json.dump(table, f, indent=2)
  header = [f"# Cardinality sweep ({label}, step {step})", ""] + [
      f"- {key}: {table[key]}" for key in table if key not in ("cells",)] + [""]
  with open(paths["md"], "w") as f:
    f.write("\n".join(header) + "\n" + markdown(table) + "\n")
  slots = eval_slots if eval_slots in table["slot_counts"] else table["slot_counts"][-1]
  image = plot_sweeps({label: [table]}, paths["png"], train_max_objects=train_max_objects,
                      eval_slots=slots, title=f"{label}, step {step}")
  if writer is not None:
    writer.write_images(step, {"cardinality/sweep": image[None]})
  return paths

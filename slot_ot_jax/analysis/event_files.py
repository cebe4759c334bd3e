"""Reading the scalars a run logged (TensorBoard event files in its workdir) and drawing
learning curves over seeds.

The trainer logs through `clu.metric_writers`, which writes TensorBoard event files into the
workdir (one per process start: a resumed run has several). `read_scalars` merges them, so a
learning curve can be drawn after the fact without parsing text logs:

  steps, values = read_scalars("workdirs/run0", "eval/rmse_over_sigma")
"""
from __future__ import annotations

import glob
import os
from typing import Mapping, Sequence

import numpy as np


def read_scalars(workdir: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (steps [T] int64, values [T] float64) of one scalar tag, sorted by step.

  Reads every `events.out.tfevents.*` file in `workdir` (not its subfolders). A step written
  twice (a run resumed from a checkpoint before that step) keeps the value of the newest file.
  Raises FileNotFoundError when the workdir holds no event file, and KeyError (naming the tags
  that exist) when none of them holds `tag`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top

  files = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")),
                 key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f"No TensorBoard event file (events.out.tfevents.*) in {workdir}.")
  by_step: dict[int, float] = {}
  seen_tags: set[str] = set()
  for path in files:
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        seen_tags.add(value.tag)
        if value.tag != tag:
          continue
        if value.HasField("tensor"):  # TF2 summaries (what clu writes).
          by_step[int(event.step)] = float(tf.make_ndarray(value.tensor))
        else:                          # TF1 simple_value summaries.
          by_step[int(event.step)] = float(value.simple_value)
  if not by_step:
    raise KeyError(f"No scalar {tag!r} in the event files of {workdir}; tags there: "
                   f"{sorted(seen_tags)}.")
  steps = np.array(sorted(by_step), dtype=np.int64)
  return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def curves_over_seeds(workdirs: Sequence[str], tag: str
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Returns (steps [T], values [S, T]) of `tag` for S runs, on the steps that all S logged.

  Raises ValueError when the runs share no logged step.
  """
  curves = [read_scalars(w, tag) for w in workdirs]
  common = curves[0][0]
  for steps, _ in curves[1:]:
    common = np.intersect1d(common, steps)
  if common.size == 0:
    raise ValueError(f"The runs {list(workdirs)} share no logged step of {tag!r}.")
  values = np.stack([vals[np.searchsorted(steps, common)] for steps, vals in curves])
  return common, values


def plot_curves(groups: Mapping[str, Sequence[str]], tag: str, path: str, *,
                title: str = "", ylabel: str | None = None, log_y: bool = False,
                panels: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> None:
  """Draws mean +- sample std over seeds of `tag` against the step, one line per group.

  `groups` maps a legend label to the workdirs of its seeds. With `panels` (title -> groups)
  one subplot is drawn per panel and `groups` is ignored. Writes a PNG to `path`.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = dict(panels) if panels else {title: groups}
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
  for ax, (panel_title, panel_groups) in zip(axes[0], panels.items()):
    for label, workdirs in panel_groups.items():
      steps, values = curves_over_seeds(workdirs, tag)
      mean = values.mean(axis=0)
      line, = ax.plot(steps, mean, marker="o", markersize=3,
                      label=f"{label} (n={len(workdirs)})")
      if len(workdirs) > 1:
        std = values.std(axis=0, ddof=1)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_title(panel_title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel or tag)
    if log_y:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.88, wspace=0.3)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)

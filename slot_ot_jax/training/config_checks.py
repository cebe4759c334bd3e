"""Range checks of an experiment config, in one place, before anything is built.

`validate_config(config, task)` raises one `ConfigError` listing every field out of range,
each with its valid range, e.g.

  config.num_train_steps=-5: must be an integer >= 1.

What is checked:
  * the trainer's fields (`TRAINER_RANGES`): step counts, intervals, batch sizes, the
    optimizer's numbers;
  * the Slot Attention fields of `model.slot_attention` and `evaluation.num_slots`, where a
    config has them (`MODEL_RANGES`);
  * counts a task declares through `Task.config_ranges()` (e.g. objects per example);
  * every other integer field whose name says it is a count (`num_*`, `*_steps`,
    `*_size`, `*_iters`, `*_slots`, `*_objects`, `*_epochs`, `*_examples`): >= 0;
    limits (`max_*`): >= -1, where -1 means no limit;
  * fields computed by a reference (e.g. steps from epochs) that cannot be computed;
  * the choices of the best checkpoint (`checkpoint_best_metric`, `checkpoint_best_mode`,
    `evaluation.checkpoint`): a known mode, a metric the task evaluates, and "best" only with
    a metric to pick it by.
A field that a config leaves at None (a placeholder meaning "the default") is not checked.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

import ml_collections

# Dotted field -> (kind, minimum, maximum, minimum excluded, maximum excluded).
# kind: "int" (a count; bool is not an int here) or "float" (finite number).
Range = tuple[str, float | None, float | None, bool, bool]


def _int(minimum: int) -> Range:
  return ("int", minimum, None, False, False)


def _float(minimum=None, maximum=None, open_min=False, open_max=False) -> Range:
  return ("float", minimum, maximum, open_min, open_max)


TRAINER_RANGES: dict[str, Range] = {
    "num_train_steps": _int(1),
    "batch_size": _int(1),
    "eval_batch_size": _int(1),
    "log_every_steps": _int(1),
    "eval_every_steps": _int(1),
    "checkpoint_every_steps": _int(1),
    "checkpoints_to_keep": _int(1),
    "optimizer.learning_rate": _float(0.0, open_min=True),
    "optimizer.warmup_steps": _int(0),
    "optimizer.decay_rate": _float(0.0, open_min=True),
    "optimizer.decay_steps": _int(0),
    "optimizer.b1": _float(0.0, 1.0, open_max=True),
    "optimizer.b2": _float(0.0, 1.0, open_max=True),
    "optimizer.eps": _float(0.0),
    "optimizer.grad_clip_norm": _float(0.0),
}

MODEL_RANGES: dict[str, Range] = {
    "model.slot_attention.num_slots": _int(1),
    "model.slot_attention.slot_size": _int(1),
    "model.slot_attention.mlp_size": _int(1),
    "model.slot_attention.num_iters": _int(1),
    "model.slot_attention.num_iters_eval": _int(1),
    "model.slot_attention.sinkhorn_iters": _int(1),
    "model.slot_attention.mesh_steps": _int(0),
    "model.slot_attention.temperature": _float(0.0, open_min=True),
    "model.slot_attention.mesh_temperature": _float(0.0, open_min=True),
    "model.slot_attention.epsilon": _float(0.0),
    "model.slot_attention.marginal_scale": _float(0.0, open_min=True),
    "evaluation.num_slots": _int(1),
}

# Which way the metric of the best checkpoint improves, and what mode=eval evaluates.
BEST_MODES = ("min", "max")
EVAL_CHECKPOINTS = ("latest", "best")

_COUNT_NAME = re.compile(r"^num_|_(steps|size|iters|slots|objects|epochs|examples)$")


class ConfigError(ValueError):
  """One or more config fields are out of range; the message lists each with its range."""


def _describe(rng: Range) -> str:
  kind, lo, hi, open_lo, open_hi = rng
  what = "an integer" if kind == "int" else "a finite number"
  parts = []
  if lo is not None:
    parts.append(f"{'>' if open_lo else '>='} {lo:g}")
  if hi is not None:
    parts.append(f"{'<' if open_hi else '<='} {hi:g}")
  return f"must be {what} {' and '.join(parts)}".strip() + "."


def _problem(value: Any, rng: Range) -> bool:
  """True if `value` is outside `rng` (or of the wrong kind)."""
  kind, lo, hi, open_lo, open_hi = rng
  if isinstance(value, bool):
    return True
  if kind == "int":
    if not isinstance(value, int):
      return True
  elif not isinstance(value, (int, float)) or not math.isfinite(value):
    return True
  if lo is not None and (value <= lo if open_lo else value < lo):
    return True
  if hi is not None and (value >= hi if open_hi else value > hi):
    return True
  return False


class _Unreadable:
  """A field whose value (a field reference) cannot be computed, e.g. a division by zero."""

  def __init__(self, error: Exception):
    self.error = error


def _get(node, key):
  try:
    return node[key]
  except (ArithmeticError, TypeError, ValueError) as e:
    return _Unreadable(e)


def _lookup(config: Mapping[str, Any], path: str) -> tuple[bool, Any]:
  node: Any = config
  for part in path.split("."):
    if not isinstance(node, (Mapping, ml_collections.ConfigDict)) or part not in node:
      return False, None
    node = _get(node, part)
  return True, node


def _leaves(config, prefix: str = ""):
  for key in config.keys():
    value = _get(config, key)
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def eval_metric_names(task: Any) -> list[str] | None:
  """Names of the task's evaluation metrics (the fields of its `eval_metrics` Collection),
  or None if they cannot be read without running it."""
  metrics = getattr(task, "eval_metrics", None)
  if metrics is None or not dataclasses.is_dataclass(metrics):
    return None
  # clu's own bookkeeping fields (`_reduction_counter`) are not metrics.
  return sorted(field.name for field in dataclasses.fields(metrics)
                if not field.name.startswith("_"))


def _best_checkpoint_problems(config, task) -> list[str]:
  """Problems of the fields that choose and use the best checkpoint (see checkpointing.py)."""
  problems = []
  _, metric = _lookup(config, "checkpoint_best_metric")
  metric = "" if metric is None else metric
  present, mode = _lookup(config, "checkpoint_best_mode")
  if present and mode not in BEST_MODES:
    problems.append(f"config.checkpoint_best_mode={mode!r}: must be one of "
                    f"{', '.join(map(repr, BEST_MODES))}.")
  if not isinstance(metric, str):
    problems.append(f"config.checkpoint_best_metric={metric!r}: must be a metric name (a "
                    "string), or \"\" for no best checkpoint.")
  elif metric and task is not None:
    names = eval_metric_names(task)
    if names is not None and metric not in names:
      problems.append(f"config.checkpoint_best_metric={metric!r}: not an evaluation metric of "
                      f"task {config.get('task')!r}; valid metrics: {', '.join(names)}.")
  present, which = _lookup(config, "evaluation.checkpoint")
  if present:
    if which not in EVAL_CHECKPOINTS:
      problems.append(f"config.evaluation.checkpoint={which!r}: must be one of "
                      f"{', '.join(map(repr, EVAL_CHECKPOINTS))}.")
    elif which == "best" and not metric:
      problems.append("config.evaluation.checkpoint='best' needs config.checkpoint_best_metric "
                      "(the evaluation metric that picks the best checkpoint during training, "
                      "e.g. \"loss\"); set it, or evaluate the latest checkpoint with "
                      "config.evaluation.checkpoint='latest'.")
  return problems


def validate_config(config: ml_collections.ConfigDict, task: Any = None) -> None:
  """Checks every count and step field of `config` and the best-checkpoint choices (see the
  module docstring).

  Args:
    config: the experiment config.
    task: the `Task` of the config; its `config_ranges()` adds task-specific counts, its
      `eval_metrics` the metrics `checkpoint_best_metric` may name.

  Raises:
    ConfigError: listing every field out of range with its valid range (and every invalid
      choice with the valid ones).
  """
  ranges: dict[str, Range] = {**TRAINER_RANGES, **MODEL_RANGES}
  if task is not None and hasattr(task, "config_ranges"):
    for path, (lo, hi) in dict(task.config_ranges()).items():
      ranges[path] = ("int", lo, hi, False, False)
  problems = []
  for path, rng in ranges.items():
    present, value = _lookup(config, path)
    if present and value is not None and not isinstance(value, _Unreadable) and _problem(
        value, rng):
      problems.append(f"config.{path}={value!r}: {_describe(rng)}")
  for path, value in _leaves(config):
    if isinstance(value, _Unreadable):
      problems.append(f"config.{path} cannot be computed from the fields it refers to "
                      f"({type(value.error).__name__}: {value.error}); check them.")
      continue
    if path in ranges or value is None or isinstance(value, bool):
      continue
    name = path.rsplit(".", 1)[-1]
    if not isinstance(value, int):
      continue
    if name.startswith("max_"):  # A limit: -1 means none.
      if value < -1:
        problems.append(f"config.{path}={value!r}: {_describe(_int(-1))[:-1]} (-1: no limit).")
    elif _COUNT_NAME.search(name) and value < 0:
      problems.append(f"config.{path}={value!r}: {_describe(_int(0))}")
  problems.extend(_best_checkpoint_problems(config, task))
  if problems:
    raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))

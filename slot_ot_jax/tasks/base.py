"""The Task interface between the generic trainer and an experiment.

The trainer (`slot_ot_jax/training/train.py`) knows nothing about data or models; everything
experiment-specific comes from a `Task` selected by `config.task`:

  task = get_task(config)                  # registry lookup, unknown names list the valid ones
  task.check_ready()                       # fail fast (e.g. data not prepared)
  model = task.build_model()               # a Flax Linen module
  variables = task.init_variables(model, rngs)          # {"params": ..., other collections}
  for batch in task.train_batches(start_step, process_index, process_count): ...
  loss, aux, new_model_state = task.loss_fn(model, variables, batch, rngs)
  for batch in task.eval_batches(process_index, process_count): ...
  outputs = task.eval_outputs(model, variables, batch, rngs)
  metrics = task.eval_metrics.single_from_model_output(**outputs)   # a clu Collection
  images = task.image_summaries(model, variables, batch, rngs)      # optional
  line = task.report(eval_results)         # a human-readable summary at the end of a run
  results = task.write_eval_artifacts(eval_results, step=..., workdir=..., writer=...)
                                           # config.mode="eval" only: extra files (optional)

Contracts:
  * Batches are dicts of numpy arrays holding this process's slice of the global batch
    (`config.batch_size // process_count` rows, `config.eval_batch_size // process_count` in
    evaluation); the trainer shards them over the local devices.
  * `train_batches(start_step, ...)` yields the batches of steps start_step, start_step + 1, ...
    and must be a pure function of the config and `start_step`, so that a run resumed from a
    checkpoint at step s sees exactly the batches an uninterrupted run would.
  * `loss_fn` and `eval_outputs` are traced inside `jax.jit`: jnp only, no Python side effects.
    `rngs` maps each name in `task.rng_streams` to a key derived from the step (training) or
    the batch index (evaluation). `variables` holds "params" and the model's other
    collections (e.g. "batch_stats"); `loss_fn` returns the updated non-params collections
    (use `apply_model`, which makes them mutable in training) and a dict of scalar metrics.
  * `eval_outputs` returns per-example arrays, the keyword arguments of
    `task.eval_metrics.single_from_model_output`; the collection is reduced over the whole
    evaluation set.

A new experiment subclasses `Task` and registers itself with `@register_task("name")`;
built-in tasks are listed in `_BUILTIN_TASKS` and imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Iterator, Mapping

from clu import metrics as clu_metrics
import flax.linen as nn
import jax
import ml_collections
import numpy as np

Array = jax.Array
Batch = Mapping[str, np.ndarray]
Variables = Mapping[str, Any]

# Task name -> module that registers it when imported.
_BUILTIN_TASKS = {
    "random_objects": "slot_ot_jax.tasks.random_objects",
    "object_discovery": "slot_ot_jax.tasks.object_discovery",
    "dinosaur": "slot_ot_jax.tasks.dinosaur",
    "video": "slot_ot_jax.tasks.video",
    "property_prediction": "slot_ot_jax.tasks.property_prediction",
}
_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], "Task"]] = {}


class Task:
  """Base class of an experiment; see the module docstring for the contract."""

  #: PRNG streams the model draws from, besides "params" (used only at init).
  rng_streams: tuple[str, ...] = ()
  #: clu metrics Collection built from `eval_outputs`; subclasses must set it.
  eval_metrics: type[clu_metrics.Collection]

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def check_ready(self) -> None:
    """Called by the trainer before anything is built: raise early (e.g. data missing)."""

  def config_ranges(self) -> Mapping[str, tuple[int, int | None]]:
    """Task-specific count fields of the config and their valid ranges, checked by the
    trainer before anything is built: {"data.num_objects": (1, None)}, a dotted field ->
    (minimum, maximum or None). The trainer's own fields are checked anyway."""
    return {}

  def build_model(self) -> nn.Module:
    raise NotImplementedError

  def dummy_batch(self, batch_size: int) -> Batch:
    """A batch of the right shapes and dtypes (zeros), for init and shape checks."""
    raise NotImplementedError

  def init_variables(self, model: nn.Module, rngs: Mapping[str, Array]) -> Variables:
    """Initial variables; default: `model.init(rngs, batch["inputs"], train=False)`."""
    inputs = self.dummy_batch(1)["inputs"]
    return model.init(dict(rngs), inputs, train=False)

  def train_batches(self, start_step: int, process_index: int = 0,
                    process_count: int = 1) -> Iterator[Batch]:
    raise NotImplementedError

  def eval_batches(self, process_index: int = 0, process_count: int = 1) -> Iterable[Batch]:
    raise NotImplementedError

  def loss_fn(self, model: nn.Module, variables: Variables, batch: Batch,
              rngs: Mapping[str, Array]) -> tuple[Array, dict[str, Array], dict[str, Any]]:
    """Training loss: (scalar loss, {name: scalar metric}, updated non-params collections)."""
    raise NotImplementedError

  def eval_outputs(self, model: nn.Module, variables: Variables, batch: Batch,
                   rngs: Mapping[str, Array]) -> dict[str, Array]:
    raise NotImplementedError

  def image_summaries(self, model: nn.Module, variables: Variables, batch: Batch,
                      rngs: Mapping[str, Array]) -> dict[str, np.ndarray] | None:
    """Optional images [n, H, W, C] for TensorBoard, computed on the first eval batch."""
    del model, variables, batch, rngs
    return None

  def write_eval_artifacts(self, eval_results: Mapping[str, float], *, step: int,
                           workdir: str, writer: Any) -> dict[str, float]:
    """Optional, after an evaluation-only run (`config.mode="eval"`): derived outputs.

    Called on every process with the reduced evaluation metrics, before they are recorded;
    process 0 may write files under `workdir` (e.g. a sweep's tables and figures) and
    images through the clu `writer`. Returns the metrics to record in eval_metrics.json and
    TensorBoard (e.g. without per-cell metrics kept in the task's own files). Default: no
    files, the metrics unchanged.
    """
    del step, workdir, writer
    return dict(eval_results)

  def report(self, eval_results: Mapping[str, float]) -> str:
    """One line summarising the final evaluation (e.g. next to the published number)."""
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(eval_results.items()))


def register_task(name: str):
  """Class decorator adding a Task subclass to the registry under `name`."""
  def decorator(cls):
    _REGISTRY[name] = cls
    return cls
  return decorator


def task_names() -> list[str]:
  return sorted(set(_REGISTRY) | set(_BUILTIN_TASKS))


def get_task(config: ml_collections.ConfigDict) -> Task:
  """Instantiates the task named by `config.task`."""
  name = config.task
  if name not in _REGISTRY and name in _BUILTIN_TASKS:
    importlib.import_module(_BUILTIN_TASKS[name])
  if name not in _REGISTRY:
    raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(task_names())}.")
  return _REGISTRY[name](config)


def apply_model(model: nn.Module, variables: Variables, *args, rngs: Mapping[str, Array],
                train: bool, **kwargs) -> tuple[Any, dict[str, Any]]:
  """`model.apply` that threads the non-params collections.

  In training every collection other than "params" is mutable and its update is returned;
  in evaluation they are read only and returned unchanged. "intermediates" is never
  requested, so sown values cost nothing here.

  Returns:
    (model outputs, {collection: variables} without "params").
  """
  state_names = [name for name in variables if name not in ("params", "intermediates")]
  variables = {name: variables[name] for name in ["params", *state_names] if name in variables}
  if train and state_names:
    outputs, new_state = model.apply(variables, *args, train=True, rngs=dict(rngs),
                                     mutable=state_names, **kwargs)
    return outputs, dict(new_state)
  outputs = model.apply(variables, *args, train=train, rngs=dict(rngs), **kwargs)
  return outputs, {name: variables[name] for name in state_names}

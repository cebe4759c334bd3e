"""Generic trainer: `train_and_evaluate(config, workdir)`.

The experiment comes from the task registry (`slot_ot_jax/tasks/base.py`, selected by
`config.task`); this file holds what every experiment shares:

* `TrainState` (step, params, optimizer state, non-params collections, base PRNG key).
* One jitted `train_step` over all devices, data parallel through a one-axis device mesh
  ("data"): batches are sharded along their leading axis with a `NamedSharding`, the state is
  replicated, and XLA inserts the gradient all-reduce. Several processes (hosts) join through
  `jax.distributed.initialize()` (main.py --distributed); each feeds its slice of the global
  batch, and all of them run the same steps, evaluations and checkpoint saves (orbax writes
  one checkpoint from all of them; only process 0 writes final_metrics.json and PNGs).
* The per-step PRNG key is `fold_in(state.rng, state.step)`, split by purpose into the
  task's streams, so a resumed run draws the same numbers as an uninterrupted one.
* Checkpoints (`slot_ot_jax/training/checkpointing.py`): automatic resume from the newest
  checkpoint of the workdir that restores (damaged newer ones are skipped, named and moved
  aside), saves every `config.checkpoint_every_steps`, at the end and on SIGTERM or SIGINT
  (Ctrl-C; a second one aborts without saving). With `config.checkpoint_best_metric` set (an
  evaluation metric of the task, e.g. "loss"), the state of the best periodic evaluation
  (`config.checkpoint_best_mode`: "min" or "max") is also kept, in
  `<workdir>/checkpoints_best/` (`checkpointing.BestCheckpointer`).
* Reliability (docs/reliability.md): the config is range-checked first
  (`config_checks.validate_config`); one trainer per workdir (`run_guards.WorkdirLock`);
  a resume under a changed config is an error unless `allow_config_change`, and
  config.json keeps the config of the run that started the workdir.
* A non-finite loss, gradient or updated state raises `FloatingPointError` naming the step;
  that state and any after it are never saved (and `Checkpointer.save` refuses non-finite
  states anyway). The flags are fetched one step late, so the check never stalls the device
  queue.
* clu: TensorBoard scalars (`train/...`, `eval/...`), `ReportProgress` (steps/s and ETA in
  the log), evaluation through the task's metrics `Collection`.
* At the end `<workdir>/final_metrics.json` holds the evaluation, the task's report line
  and timings.
* Image summaries of the task go to TensorBoard and to `<workdir>/images/<name>_<step>.png`;
  the task gets the first evaluation batch replicated on every device, so that it can read
  it whole in every process.
* `config.mode == "eval"` (configs that define it): no training; the latest checkpoint of
  the workdir is evaluated, or with `config.evaluation.checkpoint="best"` the best one
  (`evaluate_checkpoint`, results in `<workdir>/eval_metrics.json`;
  `Task.write_eval_artifacts` may add files of the task's own, e.g. a cardinality sweep).
"""
from __future__ import annotations

import functools
import json
import time
from typing import Any, Callable, Sequence

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
from etils import epath
import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import ml_collections
import numpy as np
import optax

from slot_ot_jax import tasks
from slot_ot_jax.evaluation import visualize
from slot_ot_jax.training import checkpointing
from slot_ot_jax.training import config_checks
from slot_ot_jax.training import optim
from slot_ot_jax.training import run_guards

# Errors that explain themselves (what went wrong and what to do): main.py prints their
# message without a traceback and exits with status 1.
USER_ERRORS = (config_checks.ConfigError, run_guards.WorkdirLockedError,
               checkpointing.ConfigChangedError, checkpointing.IncompatibleCheckpointError,
               checkpointing.CheckpointRestoreError, FloatingPointError)

FINAL_METRICS_FILE = "final_metrics.json"
EVAL_METRICS_FILE = "eval_metrics.json"
IMAGES_DIR = "images"
DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 [], number of updates applied.
  params: Any
  opt_state: Any
  model_state: Any         # Non-params collections, e.g. {"batch_stats": ...}; {} if none.
  rng: jax.Array           # uint32 [2], base key of the per-step streams.

  def as_dict(self) -> dict[str, Any]:
    return {name: getattr(self, name) for name in self.__dataclass_fields__}


def stream_rngs(key: jax.Array, names: Sequence[str]) -> dict[str, jax.Array]:
  """One independent key per named stream."""
  return {name: jax.random.fold_in(key, i) for i, name in enumerate(names)}


def create_train_state(task: tasks.Task, model, tx: optax.GradientTransformation,
                       init_rng: jax.Array, train_rng: jax.Array) -> TrainState:
  rngs = stream_rngs(init_rng, ("params", *task.rng_streams))
  variables = dict(task.init_variables(model, rngs))
  variables.pop("intermediates", None)
  params = variables.pop("params")
  return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=variables, rng=train_rng)


def make_train_metrics(task: tasks.Task, model, abstract_state: TrainState,
                       batch: dict[str, Any]) -> type[clu_metrics.Collection]:
  """Collection averaging loss, gradient norm and the task's aux metrics; last learning rate."""
  def aux_of(state, batch):
    variables = {"params": state.params, **state.model_state}
    rngs = stream_rngs(state.rng, task.rng_streams)
    return task.loss_fn(model, variables, batch, rngs)[1]
  aux_names = sorted(jax.eval_shape(aux_of, abstract_state, batch))
  fields = {name: clu_metrics.Average.from_output(name)
            for name in ("loss", "grad_norm", *aux_names)}
  fields["learning_rate"] = clu_metrics.LastValue.from_output("learning_rate")
  return clu_metrics.Collection.create(**fields)


def make_train_step(task: tasks.Task, model, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, metrics_cls) -> Callable:
  """(state, batch) -> (new state, metrics Collection, all-finite flag).

  The flag covers the loss, the gradient and every floating-point leaf of the new state
  (parameters, optimizer state, other collections): an update can overflow to infinity or
  NaN with a finite loss and gradient (say with a huge learning rate)."""
  def train_step(state: TrainState, batch):
    rngs = stream_rngs(jax.random.fold_in(state.rng, state.step), task.rng_streams)

    def loss_of(params):
      variables = {"params": params, **state.model_state}
      loss, aux, model_state = task.loss_fn(model, variables, batch, rngs)
      return loss, (aux, model_state)

    (loss, (aux, model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    metrics = metrics_cls.single_from_model_output(
        loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step), **aux)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    for leaf in jax.tree.leaves((params, opt_state, model_state)):
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        finite = finite & jnp.all(jnp.isfinite(leaf))
    return new_state, metrics, finite
  return train_step


def make_eval_step(task: tasks.Task, model) -> Callable:
  """(state, batch, rng) -> the task's eval metrics Collection for that batch."""
  def eval_step(state: TrainState, batch, rng):
    variables = {"params": state.params, **state.model_state}
    outputs = task.eval_outputs(model, variables, batch, stream_rngs(rng, task.rng_streams))
    return task.eval_metrics.single_from_model_output(**outputs)
  return eval_step


class Trainer:
  """Holds the jitted functions and shardings of one run."""

  def __init__(self, config, task, devices):
    self.config, self.task = config, task
    self.model = task.build_model()
    self.tx, self.schedule = optim.make_optimizer(config)
    self.device_mesh = jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))
    self.replicated = NamedSharding(self.device_mesh, PartitionSpec())
    self.data_sharding = NamedSharding(self.device_mesh, PartitionSpec(DATA_AXIS))
    for name in ("batch_size", "eval_batch_size"):
      size = config[name]
      if size % len(devices) or size % jax.process_count():
        raise ValueError(f"config.{name}={size} must be divisible by the number of devices "
                         f"({len(devices)}) and of processes ({jax.process_count()}).")
    key = jax.random.PRNGKey(config.seed)
    init_rng, train_rng, self.eval_rng = jax.random.split(key, 3)
    create = functools.partial(create_train_state, task, self.model, self.tx, init_rng,
                               train_rng)
    self.abstract_state = jax.eval_shape(create)
    self.create_state = self._under_mesh(jax.jit(create, out_shardings=self.replicated))
    dummy = jax.tree.map(jnp.asarray, task.dummy_batch(config.batch_size))
    metrics_cls = make_train_metrics(task, self.model, self.abstract_state, dummy)
    self.train_step = self._under_mesh(jax.jit(
        make_train_step(task, self.model, self.tx, self.schedule, metrics_cls),
        in_shardings=(self.replicated, self.data_sharding),
        out_shardings=(self.replicated, self.replicated, self.replicated),
        donate_argnums=(0,)))
    self.eval_step = self._under_mesh(jax.jit(
        make_eval_step(task, self.model),
        in_shardings=(self.replicated, self.data_sharding, self.replicated),
        out_shardings=self.replicated))
    # A whole batch on every device: with several processes, a batch sharded over the data
    # axis is not addressable as a whole by any one process.
    self.replicate = self._under_mesh(jax.jit(lambda tree: tree, out_shardings=self.replicated))

  def _under_mesh(self, fn):
    """`fn` traced and run with the device mesh as the context mesh (`jax.set_mesh`), which
    lets mesh-aware code inside the model (the host callback of `transport.emd`) split its
    work over the data axis."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      with jax.set_mesh(self.device_mesh):
        return fn(*args, **kwargs)
    return wrapped

  def abstract_state_dict(self) -> dict[str, Any]:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated),
        self.abstract_state.as_dict())

  def global_batch(self, local_batch):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(x)),
        dict(local_batch))

  def evaluate(self, state: TrainState, writer=None, step: int | None = None,
               image_dir: epath.Path | None = None) -> dict[str, float]:
    """Evaluation metrics over the task's eval batches; images of the first batch to
    `writer` and, as `<image_dir>/<name>_<step>.png`, to disk (process 0)."""
    metrics = None
    for i, local_batch in enumerate(self.task.eval_batches(jax.process_index(),
                                                           jax.process_count())):
      batch = self.global_batch(local_batch)
      rng = jax.random.fold_in(self.eval_rng, i)
      update = self.eval_step(state, batch, rng)
      metrics = update if metrics is None else metrics.merge(update)
      if i == 0 and writer is not None:
        variables = {"params": state.params, **state.model_state}
        images = self._under_mesh(self.task.image_summaries)(
            self.model, variables, self.replicate(batch),
            stream_rngs(rng, self.task.rng_streams))
        if images:
          writer.write_images(step, {f"eval/{k}": v for k, v in images.items()})
          if image_dir is not None and jax.process_index() == 0:
            for name, value in images.items():
              visualize.save_png(str(image_dir / f"{name}_{step}.png"), np.asarray(value)[0])
    if metrics is None:
      raise ValueError(f"Task {self.config.task!r} produced no evaluation batches.")
    return {k: float(v) for k, v in metrics.compute().items()}


def _check_finite(pending, checkpointer: checkpointing.Checkpointer) -> None:
  """Raises FloatingPointError if the lagged all-finite flag of `pending=(step, flag)` is False."""
  if pending is None:
    return
  step, finite = pending
  if not bool(finite):
    checkpointer.wait()
    last = checkpointer.latest_step()
    raise FloatingPointError(
        f"Non-finite loss, gradient or updated state at train step {step} (the update from "
        f"state {step} to {step + 1}); stopping without saving it. Last good checkpoint: "
        f"{'none' if last is None else f'step {last} (a rerun resumes from it)'}. Lower the "
        "learning rate or clip gradients to get past this step.")


def _scalar_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = checkpointing.flatten_dict(json.loads(config.to_json_best_effort()))
  return {k: v for k, v in flat.items() if isinstance(v, (bool, int, float, str))}


def _best_metric(config: ml_collections.ConfigDict) -> str:
  """The evaluation metric that picks the best checkpoint; "" when none is kept."""
  return str(config.get("checkpoint_best_metric", "") or "")


def _eval_checkpoint(config: ml_collections.ConfigDict) -> str:
  """Which checkpoint mode=eval evaluates: "latest" or "best"."""
  evaluation = config.get("evaluation", None)
  return str(evaluation.get("checkpoint", "latest")) if evaluation is not None else "latest"


def _update_best(best: checkpointing.BestCheckpointer, step: int,
                 eval_results: dict[str, float], state: TrainState) -> None:
  """Keeps `state` as the best checkpoint if its evaluation beats the best so far."""
  if best.metric not in eval_results:
    raise config_checks.ConfigError(
        f"config.checkpoint_best_metric={best.metric!r} is not among the evaluation metrics "
        f"of task {best.config_dict.get('task')!r}: {', '.join(sorted(eval_results))}.")
  best.update(step, eval_results[best.metric], state.as_dict())


def _validated_task(config: ml_collections.ConfigDict) -> tasks.Task:
  """The task of `config`, after the range checks of every count (config_checks).

  Raises:
    config_checks.ConfigError: listing every field out of range (also when the task
      cannot even be built because of one).
  """
  try:
    task = tasks.get_task(config)
  except Exception:
    config_checks.validate_config(config)  # A bad count is the better explanation.
    raise
  config_checks.validate_config(config, task)
  return task


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, devices: Sequence[jax.Device] | None = None,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), then evaluates.

  Args:
    config: a locked experiment config (see configs/).
    workdir: directory for checkpoints, TensorBoard events, config.json, final_metrics.json.
    devices: the devices of the data-parallel mesh; default all devices of all processes.
    allow_config_change: resume even if the config differs from the workdir's config.json
      in fields other than `checkpointing.RESUME_SAFE_FIELDS` (config.json is kept; the new
      config is written as config_resumed_at_<step>.json).

  Returns:
    The content of final_metrics.json: {"step", "checkpoint": "latest", "eval": {metric:
    value}, "report", timings}, plus "best_checkpoint" ({"step", "metric", "mode", "value"})
    when `config.checkpoint_best_metric` is set; or {"preempted": True, "step": ...,
    "signal": "SIGTERM" | "SIGINT"} when stopped by a signal (a checkpoint was saved).

  Raises:
    config_checks.ConfigError: a count or step field is out of range (all are listed).
    run_guards.WorkdirLockedError: another live trainer uses the workdir.
    FloatingPointError: on a non-finite loss, gradient or state (naming the step).
    checkpointing.IncompatibleCheckpointError: if the workdir's checkpoint cannot hold the
      state of `config`.
    checkpointing.ConfigChangedError: resuming under a changed config without
      `allow_config_change`.
    checkpointing.CheckpointRestoreError: checkpoints exist but none restores.
  """
  task = _validated_task(config)
  if config.get("mode", "train") == "eval":
    return evaluate_checkpoint(config, workdir, devices=devices)
  with run_guards.WorkdirLock(workdir):
    # Installed first, so that a signal during compilation also ends in a clean save.
    with run_guards.PreemptionGuard() as guard:
      return _train_and_evaluate(config, task, workdir, devices, guard, allow_config_change)


def _train_and_evaluate(config, task, workdir, devices, guard,
                        allow_config_change) -> dict[str, Any]:
  t_start = time.time()
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  task.check_ready()
  trainer = Trainer(config, task, list(devices) if devices is not None else jax.devices())
  checkpointer = checkpointing.Checkpointer(workdir, config)
  best = None
  try:
    found = checkpointer.restore_latest(trainer.abstract_state_dict())
    resumed_from, changed = None, []
    if found is None:
      state = trainer.create_state()
    else:
      resumed_from = found[0]
      # Before anything in the workdir changes: a refused resume leaves it as it was.
      changed = checkpointer.check_resume_config(resumed_from, allow_config_change)
      if found[2]:  # Damaged newer checkpoints: out of the way of the new saves, kept.
        checkpointer.move_damaged([step for step, _ in found[2]])
      logging.info("Resuming from the checkpoint at step %d in %s.", resumed_from, workdir)
      state = TrainState(**found[1])
    checkpointer.write_config(resumed_from, changed=bool(changed))
    if _best_metric(config):
      best = checkpointing.BestCheckpointer(workdir, config)
      best.start(fresh=found is None)
  except BaseException:
    checkpointer.close()
    if best is not None:
      best.close()
    raise
  initial_step = int(state.step)
  num_steps = int(config.num_train_steps)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if initial_step == 0:
    writer.write_hparams(_scalar_hparams(config))
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=config.log_every_steps,
      every_secs=None)
  train_iter = task.train_batches(initial_step, jax.process_index(), jax.process_count())
  train_metrics, pending, eval_results = None, None, None
  t_train = time.time()
  logging.info("Training steps %d..%d on %d device(s).", initial_step, num_steps,
               trainer.device_mesh.size)
  try:
    for step in range(initial_step, num_steps):
      batch = trainer.global_batch(next(train_iter))
      state, update, finite = trainer.train_step(state, batch)
      _check_finite(pending, checkpointer)  # The previous step's flag, ready by now.
      pending = (step, finite)
      done = step + 1
      train_metrics = update if train_metrics is None else train_metrics.merge(update)
      report_progress(done)
      is_last = done == num_steps
      if done % config.log_every_steps == 0 or is_last:
        _check_finite(pending, checkpointer)
        writer.write_scalars(done, {f"train/{k}": float(v)
                                    for k, v in train_metrics.compute().items()})
        train_metrics = None
      if done % config.eval_every_steps == 0 or is_last:
        _check_finite(pending, checkpointer)
        with report_progress.timed("eval"):
          eval_results = trainer.evaluate(state, writer, done, workdir / IMAGES_DIR)
        writer.write_scalars(done, {f"eval/{k}": v for k, v in eval_results.items()})
        if best is not None:
          with report_progress.timed("checkpoint"):
            _update_best(best, done, eval_results, state)
      stop = guard.should_stop(done)
      if done % config.checkpoint_every_steps == 0 or is_last or stop:
        _check_finite(pending, checkpointer)
        with report_progress.timed("checkpoint"):
          checkpointer.save(done, state.as_dict())
      if stop:
        checkpointer.wait()
        logging.warning("Stopped by %s after step %d; checkpoint saved.",
                        guard.signal_name or "preemption", done)
        return {"preempted": True, "step": done, "signal": guard.signal_name}
    _check_finite(pending, checkpointer)
  finally:
    checkpointer.close()
    if best is not None:
      best.close()
    writer.flush()

  if eval_results is None:  # Nothing left to train: evaluate the restored state.
    eval_results = trainer.evaluate(state, writer, int(state.step), workdir / IMAGES_DIR)
  t_end = time.time()
  result = {
      "step": int(state.step),
      "checkpoint": "latest",  # The final state, evaluated on the split used in training.
      "eval": eval_results,
      "report": task.report(eval_results),
      "resumed_from_step": initial_step,
      "train_steps_run": num_steps - initial_step if num_steps > initial_step else 0,
      "train_time_s": round(t_end - t_train, 2),
      "wall_time_s": round(t_end - t_start, 2),
  }
  if best is not None:
    result["best_checkpoint"] = best.best  # {"step", "metric", "mode", "value"} or None.
  logging.info("Final evaluation at step %d: %s", result["step"], result["report"])
  if jax.process_index() == 0:
    (workdir / FINAL_METRICS_FILE).write_text(json.dumps(result, indent=2))
  writer.close()
  return result


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        *, devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
  """Evaluation only: restores a checkpoint of `workdir` and evaluates it.

  What is evaluated is the task's business (e.g. the test split when `config.mode` is
  "eval"). Scalars go to TensorBoard under `eval/`, images to `<workdir>/images/`, and
  `<workdir>/eval_metrics.json` holds {"step", "checkpoint", "eval", "report",
  "wall_time_s"}, with "best" (metric, mode and value of the evaluation that picked it) when
  the best checkpoint was evaluated.

  `config.evaluation.checkpoint` chooses the checkpoint: "latest" (default), the newest one
  of `<workdir>/checkpoints` that restores (damaged newer ones are skipped with a warning and
  left in place: evaluation changes nothing in the checkpoints); "best", the one training
  kept in `<workdir>/checkpoints_best` for its best evaluation of
  `config.checkpoint_best_metric` (as the MESH reference tests the checkpoint of lowest
  validation loss).

  Raises:
    FileNotFoundError: if the workdir holds no checkpoint (of the kind asked for).
    checkpointing.IncompatibleCheckpointError: if it cannot hold the state of `config`.
    checkpointing.CheckpointRestoreError: checkpoints exist but none restores.
  """
  t_start = time.time()
  workdir = epath.Path(workdir)
  task = _validated_task(config)
  task.check_ready()
  which = _eval_checkpoint(config)
  if which == "best":
    checkpointer = checkpointing.open_best(workdir, config)
  else:
    checkpointer = checkpointing.Checkpointer(workdir, config)
  record = None
  try:
    trainer = Trainer(config, task, list(devices) if devices is not None else jax.devices())
    if which == "best":
      found = checkpointer.restore_best(trainer.abstract_state_dict())
      record = found[2]
    else:
      found = checkpointer.restore_latest(trainer.abstract_state_dict())
    if found is None:
      raise FileNotFoundError(
          f"No checkpoint to evaluate in {workdir / checkpointing.CHECKPOINT_DIR}; train "
          "first with the same --workdir (and mode=train).")
    step = found[0]
    state = TrainState(**found[1])
  finally:
    checkpointer.close()
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  eval_results = trainer.evaluate(state, writer, step, workdir / IMAGES_DIR / "eval_only")
  eval_results = task.write_eval_artifacts(eval_results, step=step, workdir=str(workdir),
                                           writer=writer)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_results.items()})
  writer.close()
  result = {"step": step, "checkpoint": which, "eval": eval_results,
            "report": task.report(eval_results),
            "wall_time_s": round(time.time() - t_start, 2)}
  if which == "best":
    result["best"] = ({k: record[k] for k in ("metric", "mode", "value")} if record
                      else None)
  logging.info("Evaluation of the %s checkpoint at step %d: %s", which, step, result["report"])
  if jax.process_index() == 0:
    (workdir / EVAL_METRICS_FILE).write_text(json.dumps(result, indent=2))
  return result

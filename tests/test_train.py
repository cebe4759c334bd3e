"""Tests of the generic trainer (slot_ot_jax/training/train.py, checkpointing.py, optim.py,
tasks/base.py).

Most tests use a toy regression task registered here (a Dense + BatchNorm model that also
draws noise from a PRNG stream), which exercises the Task interface, non-params collections
and per-step RNG at almost no compile cost. The kill-and-resume test runs main.py in
subprocesses on the random-objects task with its small `set_mlp` model.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from clu import metrics as clu_metrics
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import common  # pylint: disable=g-import-not-at-top
from configs import random_objects as ro_config
from slot_ot_jax import tasks
from slot_ot_jax.training import checkpointing
from slot_ot_jax.training import optim
from slot_ot_jax.training import train


class _ToyModel(nn.Module):
  """x [B, 3] -> y [B]: Dense, BatchNorm, noise from the "noise" stream, Dense."""
  width: int = 8

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(self.width, use_bias=False)(x)  # A bias before BatchNorm has no gradient.
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    h = h + 0.01 * jax.random.normal(self.make_rng("noise"), h.shape)
    return nn.Dense(1)(nn.relu(h))[..., 0]


@flax.struct.dataclass
class _ToyEvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")


@tasks.register_task("toy_regression")
class _ToyTask(tasks.Task):
  """y = sum(sin(x)); deterministic batches of step s drawn from seed (data_seed, s)."""
  rng_streams = ("noise",)
  eval_metrics = _ToyEvalMetrics

  def build_model(self):
    return _ToyModel(width=self.config.model.width)

  def _batch(self, seed, size, lo=0, hi=None):
    x = np.random.default_rng([self.config.seed, seed]).normal(size=(size, 3)).astype(np.float32)
    x = x[lo:hi]
    return {"inputs": x, "targets": np.sin(x).sum(-1)}

  def dummy_batch(self, batch_size):
    return self._batch(0, batch_size)

  def train_batches(self, start_step, process_index=0, process_count=1):
    local = self.config.batch_size // process_count
    step = start_step
    while True:
      yield self._batch(step, self.config.batch_size, process_index * local,
                        (process_index + 1) * local)
      step += 1

  def eval_batches(self, process_index=0, process_count=1):
    local = self.config.eval_batch_size // process_count
    for i in range(2):
      yield self._batch(10**6 + i, self.config.eval_batch_size, process_index * local,
                        (process_index + 1) * local)

  def loss_fn(self, model, variables, batch, rngs):
    pred, state = tasks.apply_model(model, variables, batch["inputs"], rngs=rngs, train=True)
    loss = jnp.mean(jnp.square(pred - batch["targets"]))
    return loss, {"abs_error": jnp.mean(jnp.abs(pred - batch["targets"]))}, state

  def eval_outputs(self, model, variables, batch, rngs):
    pred, _ = tasks.apply_model(model, variables, batch["inputs"], rngs=rngs, train=False)
    return {"loss": jnp.square(pred - batch["targets"])}


def toy_config(**overrides):
  config = common.get_base_config()
  config.task = "toy_regression"
  config.model.width = 8
  config.num_train_steps = 12
  config.batch_size = 16
  config.eval_batch_size = 16
  common.set_schedule(config, num_train_steps=12, learning_rate=1e-2, warmup_steps=3,
                      decay_steps=10, grad_clip_norm=1.0)
  common.set_intervals(config, log=4, eval=6, checkpoint=4)
  config = common.lock(config)
  config.update_from_flattened_dict(overrides)
  return config


def _run_steps(config, devices, num_steps):
  """Losses of `num_steps` train steps and the final state, on a mesh of `devices`."""
  task = tasks.get_task(config)
  trainer = train.Trainer(config, task, devices)
  state = trainer.create_state()
  losses = []
  batches = task.train_batches(0)
  for _ in range(num_steps):
    state, metrics, finite = trainer.train_step(state, trainer.global_batch(next(batches)))
    assert bool(finite)
    losses.append(float(metrics.compute()["loss"]))
  return np.array(losses), jax.device_get(state)


class OptimTest(absltest.TestCase):

  def test_schedule(self):
    config = toy_config(**{"optimizer.learning_rate": 1.0, "optimizer.warmup_steps": 10,
                           "optimizer.decay_rate": 0.5, "optimizer.decay_steps": 100})
    schedule = optim.learning_rate_schedule(config)
    for step, expected in [(0, 0.0), (5, 0.5 * 0.5 ** 0.05), (10, 0.5 ** 0.1), (200, 0.25)]:
      self.assertAlmostEqual(float(schedule(step)), expected, places=6)
    config = toy_config(**{"optimizer.warmup_steps": 0, "optimizer.decay_steps": 0})
    self.assertAlmostEqual(float(optim.learning_rate_schedule(config)(1000)), 1e-2, places=7)

  def test_clipping_from_config(self):
    grads = {"w": jnp.full((4,), 10.0)}
    for clip in (1.0, 0.0):
      tx, _ = optim.make_optimizer(toy_config(**{"optimizer.grad_clip_norm": clip}))
      # clip_by_global_norm + adam, or adam alone when clipping is off.
      self.assertLen(tx.init(grads), 2 if clip else 1)


class TaskRegistryTest(absltest.TestCase):

  def test_unknown_task_lists_valid_ones(self):
    with self.assertRaisesRegex(ValueError, "random_objects.*toy_regression"):
      tasks.get_task(toy_config(task="nope"))

  def test_unknown_model_lists_valid_ones(self):
    config = ro_config.get_config("runlocal=1")
    config.model.name = "transformer"
    with self.assertRaisesRegex(ValueError, "set_mlp.*slot_attention"):
      tasks.get_task(config).build_model()


class DataParallelTest(absltest.TestCase):

  def test_four_devices_match_one(self):
    self.assertGreaterEqual(jax.device_count(), 4)
    config = toy_config()
    losses1, state1 = _run_steps(config, jax.devices()[:1], 8)
    losses4, state4 = _run_steps(config, jax.devices()[:4], 8)
    np.testing.assert_allclose(losses4, losses1, rtol=1e-5, atol=1e-6)
    self.assertGreater(losses1[0], losses1[-1])  # It learns.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 state4.params, state1.params)
    # Batch statistics are computed over the global batch, so they agree too.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 state4.model_state, state1.model_state)
    self.assertIn("batch_stats", state1.model_state)

  def test_batch_must_divide_devices(self):
    with self.assertRaisesRegex(ValueError, "batch_size=6 must be divisible"):
      train.Trainer(toy_config(batch_size=6), tasks.get_task(toy_config()), jax.devices()[:4])


class CheckpointTest(absltest.TestCase):

  def test_resume_equals_uninterrupted(self):
    config = toy_config()
    straight = train.train_and_evaluate(config, tempfile.mkdtemp())
    workdir = tempfile.mkdtemp()
    first = train.train_and_evaluate(toy_config(num_train_steps=8), workdir)  # Stops at 8.
    self.assertEqual(first["step"], 8)
    resumed = train.train_and_evaluate(config, workdir)
    self.assertEqual(resumed["resumed_from_step"], 8)
    self.assertEqual(resumed["step"], 12)
    self.assertAlmostEqual(resumed["eval"]["loss"], straight["eval"]["loss"], places=6)
    saved = json.loads(open(os.path.join(workdir, train.FINAL_METRICS_FILE)).read())
    self.assertEqual(saved["step"], 12)
    self.assertEqual(json.loads(open(os.path.join(workdir, "config.json")).read())["task"],
                     "toy_regression")

  def test_relative_workdir(self):
    """A workdir given relative to the current directory trains and checkpoints."""
    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp())
    try:
      result = train.train_and_evaluate(toy_config(num_train_steps=4), "runs/relative")
      self.assertEqual(result["step"], 4)
      self.assertIsNotNone(checkpointing.Checkpointer("runs/relative", toy_config()).latest_step())
    finally:
      os.chdir(cwd)

  def test_incompatible_width_is_a_clear_error(self):
    workdir = tempfile.mkdtemp()
    train.train_and_evaluate(toy_config(num_train_steps=4), workdir)
    with self.assertRaises(checkpointing.IncompatibleCheckpointError) as ctx:
      train.train_and_evaluate(toy_config(**{"model.width": 16}), workdir)
    message = str(ctx.exception)
    self.assertIn("model.width: 8 (checkpoint) -> 16 (now)", message)
    self.assertIn("params['Dense_0']['kernel']: (3, 8) (checkpoint) -> (3, 16) (now)", message)

  def test_incompatible_optimizer_tree_is_a_clear_error(self):
    workdir = tempfile.mkdtemp()
    train.train_and_evaluate(toy_config(num_train_steps=4), workdir)
    with self.assertRaisesRegex(checkpointing.IncompatibleCheckpointError,
                                "optimizer.grad_clip_norm: 1.0 .checkpoint. -> 0.0"):
      train.train_and_evaluate(toy_config(**{"optimizer.grad_clip_norm": 0.0}), workdir)

  def test_non_finite_loss_stops_without_saving_the_bad_state(self):
    workdir = tempfile.mkdtemp()
    config = toy_config(**{"optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 0,
                           "optimizer.grad_clip_norm": 0.0, "checkpoint_every_steps": 1})
    with self.assertRaisesRegex(FloatingPointError, r"at train step (\d+)") as ctx:
      train.train_and_evaluate(config, workdir)
    bad_step = int(ctx.exception.args[0].split("at train step ")[1].split()[0])
    checkpointer = checkpointing.Checkpointer(workdir, config)
    latest = checkpointer.latest_step()
    self.assertIsNotNone(latest)
    self.assertLessEqual(latest, bad_step)
    self.assertIn(f"Last good checkpoint: step {latest}", str(ctx.exception))
    trainer = train.Trainer(config, tasks.get_task(config), jax.devices())
    restored = checkpointer.restore(latest, trainer.abstract_state_dict())
    checkpointer.close()
    for leaf in jax.tree.leaves(restored["params"]):
      self.assertTrue(np.all(np.isfinite(leaf)))


def _checkpoint_steps(workdir):
  path = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _wait_for_checkpoint(proc, workdir, after, timeout=240):
  """Waits until a checkpoint newer than `after` exists; returns its step."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [s for s in _checkpoint_steps(workdir) if s > after]
    if steps:
      return steps[-1]
    if proc.poll() is not None:
      raise AssertionError(f"main.py exited early: {proc.communicate()[1][-3000:]}")
    time.sleep(0.02)
  raise AssertionError("No checkpoint appeared in time.")


class KillAndResumeTest(absltest.TestCase):
  """SIGKILL, then SIGTERM, then a clean finish: the same final metrics as one run."""

  ARG = "attention=softmax,sigma=0.1,runlocal=1"
  OVERRIDES = {"model.name": "set_mlp", "data.num_train": 640, "data.num_eval": 640,
               "num_epochs": 60, "checkpoint_every_steps": 100, "eval_every_steps": 300,
               "log_every_steps": 100}   # 600 steps.

  def _main(self, workdir):
    flags = [f"--config.{k}={v}" for k, v in self.OVERRIDES.items()]
    return subprocess.Popen(
        [sys.executable, "main.py", f"--config=configs/random_objects.py:{self.ARG}",
         f"--workdir={workdir}", *flags],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)

  def test_kill_and_resume(self):
    config = ro_config.get_config(self.ARG)
    for key, value in self.OVERRIDES.items():
      node = config.model if key.startswith("model.") else (
          config.data if key.startswith("data.") else config)
      node[key.split(".")[-1]] = value
    self.assertEqual(config.num_train_steps, 600)
    expected = train.train_and_evaluate(config, tempfile.mkdtemp())

    workdir = tempfile.mkdtemp()
    proc = self._main(workdir)
    first = _wait_for_checkpoint(proc, workdir, after=0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertFalse(os.path.exists(os.path.join(workdir, train.FINAL_METRICS_FILE)))
    killed_at = _checkpoint_steps(workdir)[-1]
    self.assertGreaterEqual(killed_at, first)
    self.assertLess(killed_at, 600)

    proc = self._main(workdir)  # Resumes; stopped by SIGTERM once it has saved again.
    _wait_for_checkpoint(proc, workdir, after=killed_at)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    self.assertEqual(proc.returncode, 0, err[-3000:])
    self.assertIn("Stopped at step", out)
    stopped_at = _checkpoint_steps(workdir)[-1]
    self.assertGreater(stopped_at, killed_at)

    proc = self._main(workdir)  # Finishes.
    out, err = proc.communicate(timeout=240)
    self.assertEqual(proc.returncode, 0, err[-3000:])
    self.assertIn("RMSE/sigma", out)
    final = json.loads(open(os.path.join(workdir, train.FINAL_METRICS_FILE)).read())
    self.assertEqual(final["step"], 600)
    self.assertEqual(final["resumed_from_step"], stopped_at)
    for name, value in expected["eval"].items():
      self.assertAlmostEqual(final["eval"][name], value, delta=1e-6 * max(1.0, abs(value)))


if __name__ == "__main__":
  absltest.main()

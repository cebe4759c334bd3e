"""Faults and bad input (docs/reliability.md): each test holds one promise of that page.

  * a non-finite state is never saved nor reported as the last good checkpoint;
  * a damaged newest checkpoint is skipped (named, with the reason) and moved aside, and the
    run resumes from the newest one that restores;
  * one trainer per workdir (a lock naming the holder; stale locks are taken over);
  * a resume under a changed config is an error unless allowed, and config.json is kept;
  * every count and step field is range-checked, with the valid range in the message;
  * SlotAttention refuses fewer than one slot;
  * a damaged prepared record file fails the start-up check, naming the file and the fix;
  * Ctrl-C (SIGINT) saves a checkpoint like SIGTERM.

Most tests train the toy regression task of test_train.py for a few steps (tiny programs).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_train  # pylint: disable=g-import-not-at-top  (registers "toy_regression")

from configs import random_objects as ro_config  # pylint: disable=g-import-not-at-top
from slot_ot_jax import tasks
from slot_ot_jax.modules import attention
from slot_ot_jax.training import checkpointing
from slot_ot_jax.training import config_checks
from slot_ot_jax.training import run_guards
from slot_ot_jax.training import train

toy_config = test_train.toy_config


def _steps(workdir):
  path = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _abstract_state(config):
  return train.Trainer(config, tasks.get_task(config), jax.devices()).abstract_state_dict()


# ------------------------------------------------------------------------------------------
# 1. Non-finite states.
# ------------------------------------------------------------------------------------------
class NonFiniteStateTest(absltest.TestCase):

  def test_overflowing_update_is_never_saved(self):
    """lr 1e41: the loss and gradient of step 0 are finite, the updated parameters are not."""
    workdir = tempfile.mkdtemp()
    config = toy_config(**{"optimizer.learning_rate": 1e41, "optimizer.warmup_steps": 0,
                           "optimizer.grad_clip_norm": 0.0, "checkpoint_every_steps": 1})
    with self.assertRaisesRegex(FloatingPointError, r"at train step 0 .*Last good "
                                r"checkpoint: none") as ctx:
      train.train_and_evaluate(config, workdir)
    self.assertIn("updated state", str(ctx.exception))
    self.assertEqual(_steps(workdir), [])

  def test_save_refuses_a_non_finite_state(self):
    workdir = tempfile.mkdtemp()
    checkpointer = checkpointing.Checkpointer(workdir, toy_config())
    state = {"params": {"w": jnp.array([1.0, jnp.nan])}, "step": jnp.array(3)}
    with self.assertRaisesRegex(FloatingPointError, r"step 3.*\['params'\]\['w'\]"):
      checkpointer.save(3, state)
    checkpointer.close()
    self.assertEqual(_steps(workdir), [])


# ------------------------------------------------------------------------------------------
# 2. Damaged checkpoints.
# ------------------------------------------------------------------------------------------
def _data_files(step_dir):
  found = []
  for root, _, files in os.walk(step_dir):
    found += [os.path.join(root, f) for f in files if os.path.basename(root) == "d"]
  return sorted(found, key=os.path.getsize)


def _damage(workdir, step, kind):
  step_dir = os.path.join(workdir, checkpointing.CHECKPOINT_DIR, str(step))
  if kind == "empty_folder":
    shutil.rmtree(step_dir)
    os.mkdir(step_dir)
  elif kind == "no_metadata":
    os.remove(os.path.join(step_dir, "default", "_METADATA"))
  else:
    for path in _data_files(step_dir):
      if kind == "deleted_file":
        os.remove(path)
      elif kind == "truncated_file":
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
      elif kind == "garbled_file":
        size = os.path.getsize(path)
        with open(path, "wb") as f:
          f.write(np.random.default_rng(0).bytes(size))


class DamagedCheckpointTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = tempfile.mkdtemp()
    cls.config = toy_config(num_train_steps=8)  # Checkpoints at steps 4 and 8.
    train.train_and_evaluate(cls.config, cls.base)
    cls.abstract = _abstract_state(toy_config())

  def _copy(self):
    workdir = os.path.join(tempfile.mkdtemp(), "w")
    shutil.copytree(self.base, workdir)
    return workdir

  @parameterized.parameters("deleted_file", "truncated_file", "garbled_file", "no_metadata",
                            "empty_folder")
  def test_falls_back_to_the_previous_checkpoint(self, kind):
    workdir = self._copy()
    self.assertEqual(_steps(workdir), [4, 8])
    _damage(workdir, 8, kind)
    checkpointer = checkpointing.Checkpointer(workdir, toy_config())
    with self.assertLogs(level="WARNING") as logs:
      step, state, skipped = checkpointer.restore_latest(self.abstract)
    checkpointer.close()
    self.assertEqual(step, 4)
    self.assertEqual(int(state["step"]), 4)
    self.assertEqual([s for s, _ in skipped], [8])
    self.assertIn("step 8", "\n".join(logs.output))
    self.assertNotIn("fresh --workdir", "\n".join(logs.output))

  def test_training_resumes_past_a_damaged_checkpoint(self):
    workdir = self._copy()
    _damage(workdir, 8, "truncated_file")
    result = train.train_and_evaluate(toy_config(), workdir)
    self.assertEqual(result["resumed_from_step"], 4)
    self.assertEqual(result["step"], 12)
    self.assertIn(12, _steps(workdir))
    self.assertIn(8, _steps(workdir))  # Saved again, healthy.
    damaged = os.path.join(workdir, checkpointing.DAMAGED_DIR, "8")
    self.assertTrue(os.path.isdir(damaged))  # Kept, out of the way.
    self.assertFalse(os.path.exists(os.path.join(workdir, run_guards.LOCK_FILE)))

  def test_no_restorable_checkpoint_is_a_clear_error(self):
    workdir = self._copy()
    _damage(workdir, 8, "no_metadata")
    _damage(workdir, 4, "empty_folder")
    with self.assertRaises(checkpointing.CheckpointRestoreError) as ctx:
      train.train_and_evaluate(toy_config(), workdir)
    message = str(ctx.exception)
    self.assertIn("step 8:", message)
    self.assertIn("step 4:", message)
    self.assertIn("nothing was deleted", message)
    self.assertLess(len(message.splitlines()), 10)
    self.assertEqual(_steps(workdir), [4, 8])


# ------------------------------------------------------------------------------------------
# 3. The workdir lock.
# ------------------------------------------------------------------------------------------
class WorkdirLockTest(absltest.TestCase):

  def _write_lock(self, workdir, pid, host):
    with open(os.path.join(workdir, run_guards.LOCK_FILE), "w") as f:
      json.dump({"pid": pid, "host": host, "started": "earlier", "command": "main.py"}, f)

  def test_second_trainer_is_refused_and_changes_nothing(self):
    workdir = tempfile.mkdtemp()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    self.addCleanup(holder.kill)
    self._write_lock(workdir, holder.pid, socket.gethostname())
    with self.assertRaises(run_guards.WorkdirLockedError) as ctx:
      train.train_and_evaluate(toy_config(seed=1), workdir)
    self.assertIn(f"PID {holder.pid} on host {socket.gethostname()}", str(ctx.exception))
    self.assertEqual(sorted(os.listdir(workdir)), [run_guards.LOCK_FILE])
    holder.kill()
    holder.wait()
    # The holder is gone: its lock is stale and taken over.
    with self.assertLogs(level="WARNING") as logs:
      result = train.train_and_evaluate(toy_config(num_train_steps=4), workdir)
    self.assertIn("stale lock", "\n".join(logs.output))
    self.assertEqual(result["step"], 4)
    self.assertFalse(os.path.exists(os.path.join(workdir, run_guards.LOCK_FILE)))

  def test_lock_held_in_this_process(self):
    workdir = tempfile.mkdtemp()
    with run_guards.WorkdirLock(workdir):
      with self.assertRaisesRegex(run_guards.WorkdirLockedError, f"PID {os.getpid()}"):
        run_guards.WorkdirLock(workdir).acquire()
    run_guards.WorkdirLock(workdir).acquire().release()

  def test_other_host(self):
    workdir = tempfile.mkdtemp()
    self._write_lock(workdir, 12345, "another-host")
    with self.assertRaisesRegex(run_guards.WorkdirLockedError, "another-host"):
      run_guards.WorkdirLock(workdir).acquire()
    old = os.path.getmtime(os.path.join(workdir, run_guards.LOCK_FILE)) - 3600
    os.utime(os.path.join(workdir, run_guards.LOCK_FILE), (old, old))
    lock = run_guards.WorkdirLock(workdir).acquire()  # No heartbeat for an hour: stale.
    self.assertEqual(lock.holder()["pid"], os.getpid())
    lock.release()


# ------------------------------------------------------------------------------------------
# 4. A changed config on resume.
# ------------------------------------------------------------------------------------------
class ConfigChangeTest(absltest.TestCase):

  def test_changed_config_is_an_error_unless_allowed(self):
    workdir = tempfile.mkdtemp()
    train.train_and_evaluate(toy_config(num_train_steps=4), workdir)
    config_path = os.path.join(workdir, checkpointing.CONFIG_FILE)
    original = open(config_path).read()
    changed = toy_config(**{"optimizer.learning_rate": 5e-3})  # Same parameter shapes.
    with self.assertRaises(checkpointing.ConfigChangedError) as ctx:
      train.train_and_evaluate(changed, workdir)
    message = str(ctx.exception)
    self.assertIn("optimizer.learning_rate: 0.01 (checkpoint) -> 0.005 (now)", message)
    self.assertIn("--allow_config_change", message)
    self.assertEqual(open(config_path).read(), original)
    self.assertEqual(_steps(workdir), [4])

    result = train.train_and_evaluate(changed, workdir, allow_config_change=True)
    self.assertEqual(result["step"], 12)
    self.assertEqual(open(config_path).read(), original)
    resumed = json.loads(open(os.path.join(workdir, "config_resumed_at_4.json")).read())
    self.assertEqual(resumed["optimizer"]["learning_rate"], 5e-3)

  def test_fewer_objects_on_a_random_objects_workdir(self):
    """The issue's case: data.num_objects=4 on a 5-object workdir (parameter shapes match)."""
    workdir = tempfile.mkdtemp()
    checkpointing.Checkpointer(workdir, ro_config.get_config("runlocal=1")).write_config()
    config = ro_config.get_config("runlocal=1")
    config.data.num_objects = 4
    checkpointer = checkpointing.Checkpointer(workdir, config)
    with self.assertRaisesRegex(checkpointing.ConfigChangedError, "data.num_objects: 5"):
      checkpointer.check_resume_config(250, allow_config_change=False)
    checkpointer.close()

  def test_bookkeeping_fields_may_change(self):
    workdir = tempfile.mkdtemp()
    checkpointing.Checkpointer(workdir, toy_config()).write_config()
    checkpointer = checkpointing.Checkpointer(
        workdir, toy_config(num_train_steps=100, log_every_steps=1, checkpoint_every_steps=7))
    self.assertLen(checkpointer.check_resume_config(4, allow_config_change=False), 3)
    checkpointer.close()


# ------------------------------------------------------------------------------------------
# 5. Range checks of counts.
# ------------------------------------------------------------------------------------------
class ConfigRangeTest(parameterized.TestCase):

  @parameterized.parameters(
      ("num_train_steps", -5, "config.num_train_steps=-5: must be an integer >= 1"),
      ("num_train_steps", 0, "config.num_train_steps=0: must be an integer >= 1"),
      ("model.slot_attention.num_slots", 0, "num_slots=0: must be an integer >= 1"),
      ("data.num_objects", 0, "config.data.num_objects=0: must be an integer >= 1"),
      ("checkpoint_every_steps", 0, "checkpoint_every_steps=0: must be an integer >= 1"),
      ("batch_size", 0, "config.batch_size=0: must be an integer >= 1"),
      ("optimizer.warmup_steps", -1, "warmup_steps=-1: must be an integer >= 0"),
      ("optimizer.learning_rate", -1.0, "learning_rate=-1.0: must be a finite number > 0"),
      ("model.slot_attention.num_iters", 0, "num_iters=0: must be an integer >= 1"),
  )
  def test_out_of_range_is_an_error_with_the_range(self, field, value, expected):
    config = ro_config.get_config("attention=softmax,runlocal=1")
    config.update_from_flattened_dict({field: value})
    with self.assertRaises(config_checks.ConfigError) as ctx:
      train.train_and_evaluate(config, tempfile.mkdtemp())
    self.assertIn(expected, str(ctx.exception))

  def test_negative_steps_train_nothing_and_write_nothing(self):
    workdir = tempfile.mkdtemp()
    with self.assertRaises(config_checks.ConfigError):
      train.train_and_evaluate(toy_config(num_train_steps=-5), workdir)
    self.assertEqual(os.listdir(workdir), [])

  def test_every_shipped_config_is_valid(self):
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
      if not name.endswith(".py") or name in ("common.py", "__init__.py"):
        continue
      module = __import__(f"configs.{name[:-3]}", fromlist=["get_config"])
      for arg in (None, "runlocal=1"):
        config = module.get_config(arg)
        with self.subTest(config=name, arg=arg):
          config_checks.validate_config(config, tasks.get_task(config))

  def test_all_problems_listed_at_once(self):
    config = toy_config(num_train_steps=-1, log_every_steps=0)
    with self.assertRaisesRegex(config_checks.ConfigError,
                                "num_train_steps=-1.*\n.*log_every_steps=0"):
      config_checks.validate_config(config)


# ------------------------------------------------------------------------------------------
# 6. SlotAttention slot counts.
# ------------------------------------------------------------------------------------------
class SlotCountTest(parameterized.TestCase):

  def _init(self, num_slots, attention_name="softmax", **call):
    module = attention.SlotAttention(num_slots=num_slots, slot_size=4, mlp_size=8,
                                     attention=attention_name)
    rngs = {"params": jax.random.PRNGKey(0), "slots": jax.random.PRNGKey(1)}
    return module, module.init(rngs, jnp.ones((1, 6, 3)), **call), rngs

  @parameterized.parameters(("softmax", 0), ("sinkhorn", 0), ("softmax", -2), ("sinkhorn", -1))
  def test_construction_with_fewer_than_one_slot(self, attention_name, k):
    with self.assertRaisesRegex(ValueError, f"K={k} from the num_slots field.*>= 1"):
      self._init(k, attention_name)

  @parameterized.parameters(0, -3)
  def test_call_with_fewer_than_one_slot(self, k):
    module, variables, rngs = self._init(3)
    self.assertEqual(module.apply(variables, jnp.ones((1, 6, 3)), rngs=rngs,
                                  num_slots=5).shape, (1, 5, 4))
    with self.assertRaisesRegex(ValueError, f"K={k} from the num_slots argument"):
      module.apply(variables, jnp.ones((1, 6, 3)), rngs=rngs, num_slots=k)

  def test_empty_initial_slots(self):
    module, variables, rngs = self._init(3)
    with self.assertRaisesRegex(ValueError, "K=0 from the slot axis of initial_slots"):
      module.apply(variables, jnp.ones((1, 6, 3)), rngs=rngs,
                   initial_slots=jnp.zeros((1, 0, 4)))


# ------------------------------------------------------------------------------------------
# 7. Damaged prepared data.
# ------------------------------------------------------------------------------------------
class DamagedDataTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    cls.ip = input_pipeline
    cls.data_dir = tempfile.mkdtemp()
    cls.ip.get_builder(cls._config(cls.data_dir), prepare=True)  # Builds shapes/tiny.

  @classmethod
  def _config(cls, data_dir):
    config = cls.ip.get_data_config()
    config.name, config.data_dir, config.prepare = "shapes/tiny", data_dir, False
    return config

  def _shards(self, data_dir, split):
    builder = self.ip.get_builder(self._config(data_dir))
    return [str(p) for p in builder.info.splits[split].filepaths]

  @parameterized.parameters(("truncated", "train", -1), ("garbage", "train", 0),
                            ("empty", "validation", 0), ("truncated", "test", 0))
  def test_damaged_shard_names_the_file_and_the_fix(self, kind, split, index):
    data_dir = os.path.join(tempfile.mkdtemp(), "data")
    shutil.copytree(self.data_dir, data_dir)
    self.ip.get_builder(self._config(data_dir))  # Intact: passes.
    path = self._shards(data_dir, split)[index]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      if kind == "truncated":
        f.truncate(size - 7)
      elif kind == "garbage":
        f.write(np.random.default_rng(0).bytes(size))
      else:
        f.truncate(0)
    with self.assertRaises(self.ip.DatasetDamagedError) as ctx:
      self.ip.get_builder(self._config(data_dir))
    message = str(ctx.exception)
    self.assertIn(path, message)
    self.assertIn(f"{split} split", message)
    self.assertIn("python datasets/prepare.py shapes/tiny", message)


# ------------------------------------------------------------------------------------------
# 8. Ctrl-C.
# ------------------------------------------------------------------------------------------
@tasks.register_task("toy_regression_interrupted")
class _InterruptedToyTask(test_train._ToyTask):  # pylint: disable=protected-access
  """The toy task; fetching the batch of step 5 sends this process a SIGINT (Ctrl-C)."""

  def train_batches(self, start_step, process_index=0, process_count=1):
    for step, batch in enumerate(super().train_batches(start_step, process_index,
                                                       process_count), start_step):
      if step == 5:
        os.kill(os.getpid(), signal.SIGINT)
      yield batch


class InterruptTest(absltest.TestCase):

  def test_ctrl_c_saves_like_sigterm(self):
    workdir = tempfile.mkdtemp()
    config = toy_config(task="toy_regression_interrupted")
    result = train.train_and_evaluate(config, workdir)
    self.assertEqual(result, {"preempted": True, "step": 6, "signal": "SIGINT"})
    self.assertEqual(_steps(workdir), [4, 6])
    self.assertFalse(os.path.exists(os.path.join(workdir, run_guards.LOCK_FILE)))
    self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)
    # Rerun: resumes from 6 (the batch of step 5 is not fetched again, so no signal).
    result = train.train_and_evaluate(config, workdir)
    self.assertEqual((result["resumed_from_step"], result["step"]), (6, 12))


if __name__ == "__main__":
  absltest.main()

"""The best checkpoint (checkpointing.BestCheckpointer, docs/reliability.md): training keeps the
state of the best evaluation in <workdir>/checkpoints_best/, a worse later evaluation (also
after a resume) does not replace it, and mode=eval with evaluation.checkpoint="best" evaluates
it; plus the config checks of the three fields.

The runs train the random-objects task with its small `set_mlp` model for a few steps; the
evaluation loss is scripted per step (the real evaluation runs, its "loss" is replaced), so
that which evaluation is best does not depend on the optimisation.
"""
import json
import math
import os
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import random_objects as ro_config  # pylint: disable=g-import-not-at-top
from slot_ot_jax import tasks
from slot_ot_jax.training import checkpointing
from slot_ot_jax.training import config_checks
from slot_ot_jax.training import train

# 64 training examples in batches of 16: 4 steps per epoch; evaluation and a checkpoint
# every 2 steps, all checkpoints kept (to compare the best one with the regular one).
TINY = {"model.name": "set_mlp", "data.num_train": 64, "data.num_eval": 32,
        "batch_size": 16, "eval_batch_size": 32, "num_epochs": 2,
        "optimizer.warmup_steps": 1, "log_every_steps": 2, "eval_every_steps": 2,
        "checkpoint_every_steps": 2, "checkpoints_to_keep": 10}


def _config(**overrides):
  config = ro_config.get_config("attention=softmax,sigma=0.1,runlocal=1")
  config.update_from_flattened_dict({**TINY, **overrides})
  return config


def _best_config(**overrides):
  return _config(**{"checkpoint_best_metric": "loss", **overrides})


def _scripted_loss(losses):
  """Patches the trainer's evaluation so that its "loss" at step s is `losses[s]`."""
  real = train.Trainer.evaluate

  def evaluate(self, state, writer=None, step=None, image_dir=None):
    results = real(self, state, writer, step, image_dir)
    results["loss"] = losses[int(state.step)]
    return results
  return mock.patch.object(train.Trainer, "evaluate", evaluate)


def _best_steps(workdir):
  path = os.path.join(workdir, checkpointing.BEST_CHECKPOINT_DIR)
  return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _best_json(workdir):
  with open(os.path.join(workdir, checkpointing.BEST_CHECKPOINT_DIR,
                         checkpointing.BEST_RECORD_FILE)) as f:
    return json.load(f)


EXPECTED = {"step": 4, "metric": "loss", "mode": "min", "value": 0.2}


class BestCheckpointTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    """8 steps evaluated 0.5, 0.2, 0.4, 0.3; best.json removed; resumed to 12 steps
    evaluated 0.25, 0.21 (worse than 0.2)."""
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp()
    with _scripted_loss({2: 0.5, 4: 0.2, 6: 0.4, 8: 0.3}):
      cls.first = train.train_and_evaluate(_best_config(), cls.workdir)
    cls.first_steps, cls.first_json = _best_steps(cls.workdir), _best_json(cls.workdir)
    os.remove(os.path.join(cls.workdir, checkpointing.BEST_CHECKPOINT_DIR,
                           checkpointing.BEST_RECORD_FILE))
    with _scripted_loss({10: 0.25, 12: 0.21}):
      cls.resumed = train.train_and_evaluate(_best_config(num_train_steps=12), cls.workdir)
    cls.eval_config = _best_config(num_train_steps=12, **{"evaluation.checkpoint": "best"})

  def test_lowest_loss_is_kept_through_worse_evaluations(self):
    self.assertEqual(self.first["step"], 8)
    self.assertEqual(self.first["checkpoint"], "latest")
    self.assertEqual(self.first["best_checkpoint"], EXPECTED)
    self.assertEqual(self.first_steps, [4])
    self.assertEqual(self.first_json, EXPECTED)

  def test_value_to_beat_is_read_back_on_resume(self):
    # From the checkpoint's metadata: best.json was removed before the resume.
    self.assertEqual(self.resumed["resumed_from_step"], 8)
    self.assertEqual(self.resumed["step"], 12)
    self.assertEqual(self.resumed["best_checkpoint"], EXPECTED)
    self.assertEqual(_best_steps(self.workdir), [4])

  def test_eval_mode_evaluates_the_best_step(self):
    result = train.evaluate_checkpoint(self.eval_config, self.workdir)
    self.assertEqual((result["step"], result["checkpoint"]), (4, "best"))
    self.assertEqual(result["best"], {"metric": "loss", "mode": "min", "value": 0.2})
    with open(os.path.join(self.workdir, train.EVAL_METRICS_FILE)) as f:
      saved = json.load(f)
    self.assertEqual((saved["step"], saved["checkpoint"]), (4, "best"))
    self.assertTrue(math.isfinite(saved["eval"]["loss"]))
    latest = train.evaluate_checkpoint(_best_config(num_train_steps=12), self.workdir)
    self.assertEqual((latest["step"], latest["checkpoint"]), (12, "latest"))
    self.assertNotIn("best", latest)
    self.assertNotEqual(latest["eval"]["loss"], result["eval"]["loss"])

  def test_best_checkpoint_holds_the_state_of_its_step(self):
    config = self.eval_config
    abstract = train.Trainer(config, tasks.get_task(config), jax.devices()).abstract_state_dict()
    best = checkpointing.open_best(self.workdir, config)
    regular = checkpointing.Checkpointer(self.workdir, config)
    try:
      step, state, record = best.restore_best(abstract)
      self.assertEqual((step, record), (4, EXPECTED))
      kept = regular.restore(4, abstract)
    finally:
      best.close()
      regular.close()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(kept)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_max_mode_replaces_on_improvement_and_ignores_nan(self):
    workdir = tempfile.mkdtemp()
    config = _best_config(checkpoint_best_mode="max")
    with _scripted_loss({2: float("nan"), 4: 1.0, 6: 3.0, 8: 2.0}):
      result = train.train_and_evaluate(config, workdir)
    self.assertEqual(result["best_checkpoint"],
                     {"step": 6, "metric": "loss", "mode": "max", "value": 3.0})
    self.assertEqual(_best_steps(workdir), [6])  # Step 4's was removed once 6 was saved.
    self.assertEqual(_best_json(workdir)["step"], 6)

  def test_off_by_default_and_eval_of_a_missing_best_is_a_clear_error(self):
    workdir = tempfile.mkdtemp()
    result = train.train_and_evaluate(_config(num_train_steps=2), workdir)
    self.assertNotIn("best_checkpoint", result)
    self.assertEqual(result["checkpoint"], "latest")
    best_dir = os.path.join(workdir, checkpointing.BEST_CHECKPOINT_DIR)
    self.assertFalse(os.path.exists(best_dir))
    with self.assertRaises(FileNotFoundError) as ctx:
      train.evaluate_checkpoint(_best_config(**{"evaluation.checkpoint": "best"}), workdir)
    message = str(ctx.exception)
    for text in (best_dir, "config.evaluation.checkpoint", "checkpoint_best_metric",
                 "--config.evaluation.checkpoint=latest"):
      self.assertIn(text, message)
    self.assertFalse(os.path.exists(best_dir))  # Nothing was created.
    self.assertEqual(train.evaluate_checkpoint(_config(num_train_steps=2), workdir)["step"], 2)


class BestConfigTest(absltest.TestCase):

  def _error(self, **overrides):
    config = _config(**overrides)
    with self.assertRaises(config_checks.ConfigError) as ctx:
      config_checks.validate_config(config, tasks.get_task(config))
    return str(ctx.exception)

  def test_defaults_keep_the_latest_checkpoint(self):
    config = ro_config.get_config()
    self.assertEqual((config.checkpoint_best_metric, config.checkpoint_best_mode,
                      config.evaluation.checkpoint), ("", "min", "latest"))
    config_checks.validate_config(config, tasks.get_task(config))
    config_checks.validate_config(_best_config(**{"evaluation.checkpoint": "best"}))

  def test_unknown_choices_list_the_valid_ones(self):
    self.assertIn("config.checkpoint_best_mode='lowest': must be one of 'min', 'max'",
                  self._error(checkpoint_best_mode="lowest"))
    self.assertIn("config.evaluation.checkpoint='first': must be one of 'latest', 'best'",
                  self._error(**{"evaluation.checkpoint": "first"}))

  def test_best_needs_a_metric(self):
    message = self._error(**{"evaluation.checkpoint": "best"})
    self.assertIn("config.evaluation.checkpoint='best' needs config.checkpoint_best_metric",
                  message)

  def test_metric_must_be_one_the_task_evaluates(self):
    message = self._error(checkpoint_best_metric="fg_ari")
    self.assertIn("config.checkpoint_best_metric='fg_ari': not an evaluation metric", message)
    self.assertIn("valid metrics:", message)
    self.assertIn("loss", message.split("valid metrics:")[1])
    self.assertNotIn("_reduction_counter", message)

  def test_invalid_config_trains_nothing(self):
    workdir = tempfile.mkdtemp()
    with self.assertRaises(config_checks.ConfigError):
      train.train_and_evaluate(_config(checkpoint_best_mode="up"), workdir)
    self.assertEqual(os.listdir(workdir), [])

  def test_fields_may_change_on_resume(self):
    workdir = tempfile.mkdtemp()
    checkpointing.Checkpointer(workdir, _config()).write_config()
    changed = _best_config(checkpoint_best_mode="max", **{"evaluation.checkpoint": "best"})
    checkpointer = checkpointing.Checkpointer(workdir, changed)
    try:
      self.assertLen(checkpointer.check_resume_config(4, allow_config_change=False), 3)
    finally:
      checkpointer.close()
    # A workdir written before these fields existed resumes too.
    path = os.path.join(workdir, checkpointing.CONFIG_FILE)
    with open(path) as f:
      old = json.load(f)
    for key in ("checkpoint_best_metric", "checkpoint_best_mode", "evaluation"):
      old.pop(key)
    with open(path, "w") as f:
      json.dump(old, f)
    checkpointer = checkpointing.Checkpointer(workdir, changed)
    try:
      self.assertLen(checkpointer.check_resume_config(4, allow_config_change=False), 3)
    finally:
      checkpointer.close()


if __name__ == "__main__":
  absltest.main()

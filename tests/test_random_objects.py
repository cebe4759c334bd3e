"""Tests of the random-objects experiment (slot_ot_jax/tasks/random_objects.py)."""
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import random_objects as ro_config  # pylint: disable=g-import-not-at-top
from slot_ot_jax import tasks
from slot_ot_jax.tasks import random_objects as ro
from slot_ot_jax.training import train


def _load_script(name):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _diagnostics():
  """scripts/random_objects_diagnostics.py as a module (scripts/ is not a package)."""
  return _load_script("random_objects_diagnostics")


def tiny_config(**overrides):
  """A random-objects config small enough for a few seconds on CPU."""
  config = ro_config.get_config("attention=softmax,sigma=0.1,runlocal=1")
  config.data.num_train = 256
  config.data.num_eval = 128
  config.eval_batch_size = 64
  config.batch_size = 16
  config.num_epochs = 1
  config.data.dim = 16
  config.model.slot_attention.mlp_size = 16
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 8
  config.update_from_flattened_dict(overrides)
  return config


class DataTest(parameterized.TestCase):

  def test_split_content(self):
    split = ro.make_split(seed=3, stream=0, num_examples=50, num_objects=5,
                          num_background=100, dim=32, sigma=0.1)
    batch = ro.assemble(split, np.arange(50), num_elements=105)
    self.assertEqual(batch["inputs"].shape, (50, 105, 32))
    self.assertEqual(batch["objects"].shape, (50, 5, 32))
    nonzero = np.any(batch["inputs"] != 0, axis=-1)  # [50, 105]
    np.testing.assert_array_equal(nonzero.sum(1), 5)
    for i in range(50):  # The objects sit at their positions, as a multiset.
      found = batch["inputs"][i][nonzero[i]]
      np.testing.assert_array_equal(np.sort(found, 0), np.sort(batch["objects"][i], 0))
    self.assertAlmostEqual(float(split["objects"].std()), 0.1, delta=0.005)
    # Object positions are spread over the whole set, not clustered at the start.
    self.assertGreater(split["positions"].max(), 90)

  def test_splits_are_seeded_and_distinct(self):
    args = dict(num_examples=20, num_objects=5, num_background=10, dim=4, sigma=1.0)
    a = ro.make_split(seed=0, stream=0, **args)
    b = ro.make_split(seed=0, stream=0, **args)
    c = ro.make_split(seed=0, stream=1, **args)
    d = ro.make_split(seed=1, stream=0, **args)
    np.testing.assert_array_equal(a["objects"], b["objects"])
    np.testing.assert_array_equal(a["positions"], b["positions"])
    self.assertFalse(np.allclose(a["objects"], c["objects"]))
    self.assertFalse(np.allclose(a["objects"], d["objects"]))

  def test_train_batches_resume_anywhere(self):
    config = tiny_config()   # 256 examples / batch 16 = 16 steps per epoch.
    task = tasks.get_task(config)
    stream = list(itertools.islice(task.train_batches(0), 40))
    for start in (0, 5, 16, 31):
      resumed = next(task.train_batches(start))
      np.testing.assert_array_equal(resumed["inputs"], stream[start]["inputs"])
    # Each epoch visits every training example once, in a new order.
    epoch0 = np.concatenate([b["objects"] for b in stream[:16]])
    epoch1 = np.concatenate([b["objects"] for b in stream[16:32]])
    key = lambda x: np.sort(x.reshape(len(x), -1)[:, 0])
    np.testing.assert_array_equal(key(epoch0), key(task.train_split["objects"]))
    np.testing.assert_array_equal(key(epoch1), key(epoch0))
    self.assertFalse(np.array_equal(epoch0, epoch1))

  def test_process_slices_tile_the_global_batch(self):
    task = tasks.get_task(tiny_config())
    whole = next(task.train_batches(3))
    parts = [next(task.train_batches(3, i, 4)) for i in range(4)]
    np.testing.assert_array_equal(np.concatenate([p["inputs"] for p in parts]), whole["inputs"])
    whole_eval = list(task.eval_batches())
    parts_eval = [list(task.eval_batches(i, 2)) for i in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([parts_eval[0][0]["objects"], parts_eval[1][0]["objects"]]),
        whole_eval[0]["objects"])

  def test_eval_size_must_divide(self):
    with self.assertRaisesRegex(ValueError, "num_eval"):
      tasks.get_task(tiny_config(**{"data.num_eval": 100}))


class LossAndMetricTest(parameterized.TestCase):

  def test_matched_error_equals_brute_force(self):
    rng = np.random.default_rng(0)
    preds = rng.normal(size=(6, 5, 3)).astype(np.float32)
    targets = rng.normal(size=(6, 5, 3)).astype(np.float32)
    got = np.asarray(jax.jit(ro.matched_squared_error)(preds, targets))
    for b in range(6):
      cost = ((preds[b][:, None] - targets[b][None]) ** 2).mean(-1)
      rows, cols = scipy.optimize.linear_sum_assignment(cost)
      self.assertAlmostEqual(got[b], cost[rows, cols].mean(), places=5)
    # Permuting the predictions changes nothing.
    perm = np.asarray(ro.matched_squared_error(preds[:, ::-1], targets))
    np.testing.assert_allclose(perm, got, rtol=1e-6)
    # A permuted copy of the targets has zero error.
    np.testing.assert_allclose(ro.matched_squared_error(targets[:, [2, 0, 4, 1, 3]], targets),
                               0.0, atol=1e-7)

  def test_gradient_flows_through_matched_pairs(self):
    preds = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3)), jnp.float32)
    grads = jax.grad(lambda p: ro.matched_squared_error(p, jnp.zeros_like(p)).sum())(preds)
    np.testing.assert_allclose(grads, 2 * preds / 15, rtol=1e-5)

  def test_predicting_zeros_scores_one(self):
    config = tiny_config(**{"data.num_eval": 6400, "eval_batch_size": 640})
    task = tasks.get_task(config)
    metrics = None
    matched_error = jax.jit(ro.matched_squared_error)
    for batch in task.eval_batches():
      errors = matched_error(jnp.zeros_like(batch["objects"]), batch["objects"])
      update = task.eval_metrics.single_from_model_output(
          loss=errors, normalised_squared_error=errors / config.data.sigma ** 2)
      metrics = update if metrics is None else metrics.merge(update)
    value = float(metrics.compute()["rmse_over_sigma"])
    self.assertAlmostEqual(value, 1.0, delta=0.01)
    expected = np.sqrt(np.mean(task.eval_split["objects"] ** 2)) / config.data.sigma
    self.assertAlmostEqual(value, expected, places=4)

  def test_report_names_paper_number(self):
    config = ro_config.get_config("attention=mesh,sigma=0.01")
    line = tasks.get_task(config).report({"rmse_over_sigma": 0.3})
    self.assertIn("0.300", line)
    self.assertIn("0.31", line)
    self.assertIn("SA-MESH", line)
    self.assertEqual(len(ro.PAPER_TABLE1), 12)


class ReproduceTableTest(absltest.TestCase):

  def test_collect_only_writes_median_and_spread_and_starts_nothing(self):
    script = _load_script("reproduce_random_objects")
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    for attention, sigma, seed, value in [("softmax", 0.01, 0, 0.6), ("softmax", 0.01, 1, 0.9),
                                          ("softmax", 0.01, 2, 0.8), ("mesh", 1.0, 0, 0.25)]:
      workdir = os.path.join(root, f"{attention}_sigma{sigma:g}_seed{seed}")
      os.makedirs(workdir)
      with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
        json.dump({"eval": {"rmse_over_sigma": value}, "step": 20000, "wall_time_s": 60.0}, f)
    output = os.path.join(root, "table.md")
    argv = ["reproduce_random_objects.py", "--collect_only", "--attentions=softmax,mesh",
            "--sigmas=1,0.01", "--seeds=3", f"--workdir_root={root}", f"--output={output}"]
    with mock.patch.object(sys, "argv", argv), \
         mock.patch.object(script.sweep.subprocess, "Popen", side_effect=AssertionError("started")):
      script.main()
    with open(output) as f:
      table = f.read()
    self.assertIn("| SA | — (paper 0.44) | 0.80 [0.60-0.90] (paper 0.65, n=3) † |", table)
    self.assertIn("| SA-MESH | 0.25 (paper 0.24, n=1) | — (paper 0.31) |", table)
    self.assertIn("--collect_only", table)
    self.assertFalse(os.path.exists(os.path.join(root, "mesh_sigma0.01_seed0")))


class PlanStatisticsTest(absltest.TestCase):

  def test_hand_worked_plans(self):
    plan_statistics = _diagnostics().plan_statistics
    is_object = np.array([[True, True, False]])
    # Independent coupling of its marginals: entropy ratio 1; object rows split 1/2 : 1/2.
    blurry = np.outer([0.25, 0.25, 0.5], [0.5, 0.5])[None]
    hardness, ratio = plan_statistics(blurry, is_object)
    self.assertAlmostEqual(hardness, 0.5)
    self.assertAlmostEqual(ratio, 1.0)
    # Hard assignment of the two objects, the zero vector split 3 : 1 between the slots.
    hard = np.array([[[0.5, 0.0], [0.0, 0.5], [0.75, 0.25]]]) / 2
    hardness, ratio = plan_statistics(hard, is_object)
    self.assertAlmostEqual(hardness, 1.0)
    p = hard[0] / hard[0].sum()
    h = lambda q: -np.sum(q[q > 0] * np.log(q[q > 0]))
    self.assertAlmostEqual(ratio, h(p) / (h(p.sum(1)) + h(p.sum(0))))
    self.assertLess(ratio, 0.9)


class TrainRandomObjectsTest(parameterized.TestCase):
  """A few real steps of every attention on four fake CPU devices, with a checkpoint round trip."""

  @parameterized.parameters("softmax", "sinkhorn", "emd", "mesh")
  def test_train_steps(self, attention):
    self.assertGreaterEqual(jax.device_count(), 4)
    config = tiny_config(**{"model.slot_attention.attention": attention, "num_epochs": 1,
                            "data.num_train": 64, "checkpoint_every_steps": 2,
                            "eval_every_steps": 4, "model.slot_attention.num_iters": 2})
    workdir = tempfile.mkdtemp()
    result = train.train_and_evaluate(config, workdir)
    self.assertEqual(result["step"], 4)
    self.assertTrue(np.isfinite(result["eval"]["rmse_over_sigma"]))
    self.assertIn(ro.PAPER_NAMES[attention], result["report"])
    # The diagnostics script reads the trained workdir: shares and masses in range.
    diag = _diagnostics().diagnose(workdir, num_batches=1)
    self.assertEqual((diag["step"], diag["attention"]), (4, attention))
    self.assertBetween(diag["object_share"], 0.0, 1.0)
    k = config.model.slot_attention.num_slots
    self.assertBetween(diag["object_row_hardness"], 1.0 / k - 1e-6, 1.0 + 1e-6)
    self.assertBetween(diag["plan_entropy_ratio"], 0.0, 1.0 + 1e-5)
    self.assertTrue(np.isfinite(diag["rmse_over_sigma"]))
    if attention == "softmax":
      self.assertIsNone(diag["input_mass_on_zeros"])
    else:
      self.assertBetween(diag["input_mass_on_zeros"], 0.0, diag["total_mass"] * (1 + 1e-5))
    if attention == "softmax":
      # Rerunning the finished workdir restores the last checkpoint and re-evaluates it.
      again = train.train_and_evaluate(config, workdir)
      self.assertEqual(again["resumed_from_step"], 4)
      self.assertAlmostEqual(again["eval"]["rmse_over_sigma"],
                             result["eval"]["rmse_over_sigma"], places=6)


if __name__ == "__main__":
  absltest.main()

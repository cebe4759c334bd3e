"""Tests of the cardinality sweep (slot_ot_jax/evaluation/cardinality.py) and its configs.

* The clu fields reduce per-example outputs to the right per-(slots, objects) means and
  scene counts (checked against numpy on random outputs, over two merged batches).
* `collect` leaves empty object-count bins out (no NaN anywhere in the JSON), pools cells
  exactly, and the markdown / figure writers produce their files.
* End to end: from a checkpoint of configs/cardinality_shapes.py (runlocal, shapes/tiny in a
  temporary data dir), `--config.mode=eval` through `train.train_and_evaluate` (what
  main.py calls) writes cardinality/sweep.{json,md,png}, TensorBoard events and an
  eval_metrics.json without the per-cell fields.
* The CLEVR (6, 7) / (6, 11) configs of every normalisation follow 003's protocol, and bad
  arguments list the valid values.
"""
import glob
import json
import math
import os
import shutil
import sys
import tempfile

from absl.testing import absltest
from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import cardinality_shapes  # pylint: disable=g-import-not-at-top
from configs import clevr_cardinality
from slot_ot_jax.evaluation import cardinality


def _fake_outputs(rng, slot_counts, object_counts, batch):
  num_objects = rng.integers(1, 4, batch)  # Objects 1..3 only: bin 4 stays empty.
  has_fg = rng.uniform(size=batch) > 0.2
  out = {"mask": np.ones(batch, bool), "has_foreground": has_fg,
         **{k: np.asarray(v) for k, v in cardinality.object_count_outputs(
             jnp.asarray(num_objects), jnp.asarray(has_fg), object_counts).items()}}
  for k in slot_counts:
    for metric in cardinality.METRICS:
      out[f"sweep_{metric}_k{k}"] = rng.uniform(size=batch).astype(np.float32)
  out["mask"][-1] = False  # A padding example counts nowhere.
  return out, num_objects, has_fg


class SweepMetricsTest(absltest.TestCase):

  def test_fields_reduce_to_cell_means_and_counts(self):
    slot_counts, object_counts = (3, 5), range(1, 5)
    collection = clu_metrics.Collection.create(
        **cardinality.metric_fields(slot_counts, object_counts))
    rng = np.random.default_rng(0)
    batches = [_fake_outputs(rng, slot_counts, object_counts, 16) for _ in range(2)]
    reduced = None
    for out, _, _ in batches:
      update = collection.single_from_model_output(**out)
      reduced = update if reduced is None else reduced.merge(update)
    results = {k: float(v) for k, v in reduced.compute().items()}
    cat = lambda key: np.concatenate([b[0][key] for b in batches])
    valid = cat("mask")
    n_obj = np.concatenate([b[1] for b in batches])
    fg = np.concatenate([b[2] for b in batches])
    for n in (1, 2, 3):
      self.assertEqual(results[f"sweep_count_n{n}"], np.sum(valid & (n_obj == n)))
      self.assertEqual(results[f"sweep_count_fg_n{n}"], np.sum(valid & (n_obj == n) & fg))
      for k in slot_counts:
        keep = valid & (n_obj == n)
        np.testing.assert_allclose(results[f"sweep_ari_k{k}_n{n}"],
                                   cat(f"sweep_ari_k{k}")[keep].mean(), rtol=1e-5)
        np.testing.assert_allclose(results[f"sweep_fg_miou_k{k}_n{n}"],
                                   cat(f"sweep_fg_miou_k{k}")[keep & fg].mean(), rtol=1e-5)
    np.testing.assert_allclose(results["sweep_loss_k5_all"], cat("sweep_loss_k5")[valid].mean(),
                               rtol=1e-5)
    self.assertEqual(results["sweep_count_n4"], 0)

    table = cardinality.collect(results, slot_counts, object_counts, step=7)
    self.assertEqual(table["object_counts"], [1, 2, 3])  # The empty bin 4 is left out.
    self.assertEqual(table["num_scenes"], int(valid.sum()))
    self.assertEqual(len(table["cells"]), len(slot_counts) * 4)  # 3 bins + "all" per K.
    text = json.dumps(table)
    self.assertNotIn("NaN", text)
    for c in table["cells"]:
      for metric in cardinality.METRICS:
        self.assertTrue(math.isfinite(c[metric]), (c, metric))
    # Pooling the cells by their counts gives back the all-scene means.
    for metric in cardinality.METRICS:
      np.testing.assert_allclose(cardinality.pooled(table, metric, 3, max_objects=3),
                                 cardinality.cell(table, 3, "all")[metric], rtol=1e-5)
    keep = valid & (n_obj <= 2)
    np.testing.assert_allclose(cardinality.pooled(table, "fg_ari", 5, max_objects=2),
                               cat("sweep_fg_ari_k5")[keep].mean(), rtol=1e-5)
    self.assertIsNone(cardinality.pooled(table, "fg_ari", 5, max_objects=0))
    md = cardinality.markdown(table)
    self.assertIn("| slots | 1 | 2 | 3 | all |", md)
    self.assertNotIn("nan", md.lower())

  def test_bin_without_foreground_has_no_fg_miou(self):
    results = {"sweep_count_n1": 2, "sweep_count_fg_n1": 0, "sweep_count_n2": 3,
               "sweep_count_fg_n2": 3}
    for metric in cardinality.METRICS:
      for n in ("n1", "n2", "all"):
        results[f"sweep_{metric}_k4_{n}"] = float("nan") if (
            metric == "fg_miou" and n == "n1") else 0.5
    table = cardinality.collect(results, (4,), (1, 2))
    self.assertNotIn("fg_miou", cardinality.cell(table, 4, 1))
    self.assertEqual(cardinality.cell(table, 4, "all")["num_scenes_fg"], 3)
    self.assertNotIn("NaN", json.dumps(table))
    self.assertIn("| 4 | - | 50.0 | 50.0 |", cardinality.markdown(table))


class EndToEndTest(absltest.TestCase):

  def test_sweep_from_eval_mode(self):
    import jax  # pylint: disable=g-import-not-at-top

    from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp, True)
    workdir = os.path.join(tmp, "run")
    config = cardinality_shapes.get_config("update_norm=weighted_sum,runlocal=1")
    with config.unlocked():
      config.mode = "eval"
      config.data.data_dir = os.path.join(tmp, "data")
      config.images.num_examples = 0
      config.eval_batch_size = 16  # shapes/tiny's 16 test scenes in one batch.
    # A checkpoint of the initial state stands for a trained one (no train step compiled).
    task = tasks.get_task(config)
    state = train.Trainer(config, task, jax.devices()).create_state()
    checkpointer = checkpointing.Checkpointer(workdir, config)
    checkpointer.save(0, state.as_dict())
    checkpointer.close()
    result = train.train_and_evaluate(config, workdir)
    self.assertFalse([k for k in result["eval"] if k.startswith("sweep_")])
    self.assertIn("fg_ari", result["eval"])
    table = json.load(open(os.path.join(workdir, "cardinality", "sweep.json")))
    self.assertEqual(table["slot_counts"], [3, 5])
    self.assertEqual((table["num_iters"], table["num_iters_eval"]), (3, 5))
    self.assertEqual(table["update_norm"], "weighted_sum")
    self.assertEqual(table["num_scenes"], 16)
    self.assertTrue(set(table["object_counts"]) <= {1, 2, 3} and table["object_counts"])
    for c in table["cells"]:
      for metric in ("fg_ari", "ari", "loss"):
        self.assertTrue(math.isfinite(c[metric]))
      self.assertBetween(c["ari"], -1.0, 1.0)
    self.assertGreater(os.path.getsize(os.path.join(workdir, "cardinality", "sweep.png")), 1000)
    self.assertIn("ARI (%), by slot count",
                  open(os.path.join(workdir, "cardinality", "sweep.md")).read())
    saved = json.load(open(os.path.join(workdir, "eval_metrics.json")))
    self.assertFalse([k for k in saved["eval"] if k.startswith("sweep_")])
    self.assertTrue(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))


class ConfigTest(absltest.TestCase):

  def test_clevr_configs_follow_krimmel(self):
    for norm in clevr_cardinality.NORMS:
      for slots in clevr_cardinality.SLOTS:
        config = clevr_cardinality.get_config(f"norm={norm},slots={slots}")
        sa = config.model.slot_attention
        self.assertEqual((sa.update_norm, sa.num_slots, sa.num_iters, sa.num_iters_eval),
                         (norm, slots, 3, 5))
        self.assertEqual(config.data.name, "multi_object_datasets/clevr6")
        self.assertTrue(config.data.flip)
        self.assertEqual(config.evaluation.dataset, "multi_object_datasets/clevr10_krimmel")
        self.assertEqual(config.evaluation.num_slots, 11)
        self.assertEqual(config.evaluation.sweep_slot_counts, "7,8,9,10,11,12,13")
    with self.assertRaisesRegex(ValueError, "valid values: weighted_mean, layer_norm"):
      clevr_cardinality.get_config("norm=sum")
    with self.assertRaisesRegex(ValueError, "valid values: 7, 11"):
      clevr_cardinality.get_config("slots=9")
    small = clevr_cardinality.get_config("runlocal=1")
    self.assertEqual(small.data.name, "shapes/tiny")
    self.assertEqual(small.evaluation.sweep_slot_counts, "3,5")

  def test_krimmel_test_split_has_1280_scenes(self):
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    builder = input_pipeline.builder_class("multi_object_datasets")
    for name in ("clevr6_krimmel", "clevr10_krimmel"):
      (split,) = builder.builder_configs[name].splits
      self.assertEqual((split.name, split.start, split.limit), ("test", 70_000, 1_280))
    shapes = input_pipeline.builder_class("shapes").builder_configs
    self.assertEqual(dict(shapes["16x16_6"].num_examples)["test"], 1_280)
    self.assertEqual((shapes["16x16"].max_objects, shapes["16x16_6"].max_objects), (3, 6))

  def test_shapes_config(self):
    config = cardinality_shapes.get_config("update_norm=batch_norm,seed=2")
    sa = config.model.slot_attention
    self.assertEqual((sa.update_norm, sa.num_slots, sa.num_iters, sa.num_iters_eval),
                     ("batch_norm", 4, 3, 5))
    self.assertEqual((config.data.name, config.evaluation.dataset, config.seed),
                     ("shapes/16x16", "shapes/16x16_6", 2))
    self.assertEqual((config.num_train_steps, config.optimizer.learning_rate,
                      config.model.kernel_size), (3000, 1e-3, 3))
    with self.assertRaisesRegex(ValueError, "valid values: weighted_mean"):
      cardinality_shapes.get_config("update_norm=auto")


if __name__ == "__main__":
  absltest.main()

"""Tests of the object-discovery task (slot_ot_jax/tasks/object_discovery.py) and its configs.

Every setting x attention builds its model (jax.eval_shape, no compilation); the papers'
hyper-parameters are pinned; one short run on `shapes/tiny` (in a temporary data dir) goes
through training, evaluation, image summaries and evaluation-only mode on 4 fake CPU devices;
the headline command fails fast without ClevrTex.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import clevr10 as clevr10_config  # pylint: disable=g-import-not-at-top
from configs import clevrtex_mesh as clevrtex_mesh_config
from configs import object_discovery as od_config
from slot_ot_jax import tasks
from slot_ot_jax.training import train


def _abstract_model(config):
  """(task, abstract variables, abstract eval outputs) without compiling anything."""
  task = tasks.get_task(config)
  model = task.build_model()
  key = jax.random.PRNGKey(0)
  rngs = {name: key for name in ("params", *task.rng_streams)}
  variables = jax.eval_shape(lambda: task.init_variables(model, rngs))
  batch = task.dummy_batch(2)
  outputs = jax.eval_shape(
      lambda v: model.apply(v, batch["image"], train=False, rngs=rngs,
                            num_slots=task.eval_num_slots), variables)
  return task, variables, outputs


class ConfigTest(parameterized.TestCase):

  @parameterized.product(setting=tuple(od_config.SETTINGS), attention=od_config.OD_ATTENTIONS)
  def test_every_setting_and_attention_builds(self, setting, attention):
    config = od_config.build(setting, f"attention={attention}")
    self.assertTrue(config.is_locked)
    task, variables, outputs = _abstract_model(config)
    res = config.data.resolution
    k = task.eval_num_slots
    self.assertEqual(outputs["reconstruction"].shape, (2, res, res, 3))
    self.assertEqual(outputs["masks"].shape, (2, k, res, res, 1))
    self.assertGreater(sum(x.size for x in jax.tree.leaves(variables["params"])), 0)
    small = od_config.build(setting, f"attention={attention},runlocal=1")
    self.assertEqual(small.data.name, "shapes/tiny")
    self.assertLessEqual(small.num_train_steps, 1000)
    if attention == "softmax":  # The small architecture does not depend on the attention.
      _abstract_model(small)

  def test_paper_hyper_parameters(self):
    mds = od_config.build("multi_dsprites")
    sa = mds.model.slot_attention
    self.assertEqual((sa.num_slots, sa.slot_size, sa.mlp_size, sa.num_iters), (6, 64, 128, 3))
    self.assertEqual((mds.data.resolution, mds.num_train_steps), (64, 530 * 60_000 // 64))
    opt = mds.optimizer
    self.assertEqual((mds.batch_size, opt.learning_rate, opt.warmup_steps, opt.decay_rate,
                      opt.decay_steps, opt.grad_clip_norm), (64, 4e-4, 10_000, 0.5, 100_000, 0.1))
    tex = clevrtex_mesh_config.get_config()
    sa = tex.model.slot_attention
    self.assertEqual((sa.attention, sa.num_slots, sa.slot_size, sa.mlp_size),
                     ("mesh", 11, 128, 256))
    self.assertEqual((tex.data.name, tex.data.resolution, tex.num_train_steps),
                     ("clevrtex/full", 64, 331_250))
    task = tasks.get_task(tex)
    self.assertEqual(task.build_model().encoder.channels, (64,) * 4)
    c6 = od_config.build("clevr6")
    self.assertEqual((c6.model.slot_attention.num_slots, c6.data.resolution), (7, 128))
    self.assertEqual(tasks.get_task(c6).build_model().decoder.broadcast_resolution, (8, 8))
    tet = od_config.build("tetrominoes")
    self.assertEqual((tet.model.slot_attention.num_slots, tet.data.resolution), (4, 35))
    self.assertEqual(tasks.get_task(tet).build_model().encoder.channels, (32,) * 4)

  def test_clevr10_evaluates_more_slots_on_clevr10(self):
    config = clevr10_config.get_config("update_norm=weighted_sum")
    self.assertEqual(config.model.slot_attention.update_norm, "weighted_sum")
    self.assertEqual(config.model.slot_attention.num_slots, 7)
    self.assertEqual(config.evaluation.num_slots, 11)
    self.assertEqual(config.evaluation.dataset, "multi_object_datasets/clevr10")
    task = tasks.get_task(config)
    self.assertEqual(task.num_true, 11)
    names = set(task.eval_metrics.__annotations__)
    self.assertIn("fg_ari_objects10", names)
    self.assertIn("fg_miou_slots13", names)

  def test_data_fields_match_the_pipeline(self):
    from slot_ot_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    self.assertEqual(set(od_config._data_config()), set(input_pipeline.get_data_config()))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "softmax, sinkhorn, mesh"):
      od_config.build("shapes", "attention=emd")
    with self.assertRaisesRegex(ValueError, "valid arguments"):
      od_config.build("clevr6", "steps=3")


class TrainAndEvalTest(absltest.TestCase):

  def _tempdir(self):
    path = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path

  def test_train_images_and_eval_only(self):
    tmp = self._tempdir()
    config = od_config.build("shapes", "runlocal=1,attention=softmax")
    config.data.data_dir = os.path.join(tmp, "data")
    config.num_train_steps = 3
    config.eval_every_steps = config.checkpoint_every_steps = 3
    workdir = os.path.join(tmp, "work")
    result = train.train_and_evaluate(config, workdir, devices=jax.devices()[:4])
    self.assertEqual(result["step"], 3)
    for name in ("fg_ari", "fg_miou", "loss"):
      self.assertTrue(np.isfinite(result["eval"][name]), name)
    self.assertBetween(result["eval"]["fg_miou"], 0.0, 1.0)
    self.assertIn("FG-ARI", result["report"])
    png = os.path.join(workdir, "images", "slots_3.png")
    self.assertTrue(os.path.exists(png))

    config.unlock()
    config.mode = "eval"
    config.evaluation.per_object_count = True
    config.evaluation.slot_counts = "3,5"
    config.lock()
    result = train.train_and_evaluate(config, workdir, devices=jax.devices()[:4])
    saved = json.loads(open(os.path.join(workdir, train.EVAL_METRICS_FILE)).read())
    self.assertEqual(saved["step"], 3)
    for name in ("fg_ari", "fg_miou", "fg_ari_objects1", "fg_miou_objects3", "fg_ari_slots5",
                 "fg_miou_slots3"):
      self.assertIn(name, saved["eval"])
      self.assertTrue(np.isfinite(saved["eval"][name]), name)
    self.assertTrue(os.path.exists(os.path.join(workdir, "images", "eval_only", "slots_3.png")))

  def test_eval_only_without_checkpoint_is_a_clear_error(self):
    tmp = self._tempdir()
    config = od_config.build("shapes", "runlocal=1")
    config.data.data_dir = os.path.join(tmp, "data")
    config.mode = "eval"
    with self.assertRaisesRegex(FileNotFoundError, "No checkpoint to evaluate"):
      train.train_and_evaluate(config, os.path.join(tmp, "work"))


class MissionCommandTest(absltest.TestCase):

  def test_clevrtex_mesh_without_data_fails_fast_with_instructions(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "main.py", "--config=configs/clevrtex_mesh.py",
         f"--workdir={tmp}/work", f"--config.data.data_dir={tmp}/data"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.time() - start
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("DatasetNotFoundError", proc.stderr)
    self.assertIn("clevrtex_full_part1.tar.gz", proc.stderr)
    self.assertIn("python datasets/prepare.py clevrtex/full", proc.stderr)
    self.assertLess(elapsed, 60)  # A few seconds of imports; nothing is compiled.
    self.assertFalse(os.path.exists(os.path.join(tmp, "work", "checkpoints")))


if __name__ == "__main__":
  absltest.main()

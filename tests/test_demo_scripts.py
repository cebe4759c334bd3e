"""Tests of the CPU demonstration scripts' config overrides (no training: runs are faked)."""
import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

MESH_STEP = ["--override=model.slot_attention.mesh_lr_per_entry=True",
             "--override=model.slot_attention.mesh_lr=0.05"]


def _load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _write(path, metrics):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(metrics, f)


class DemoOverrideTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def _main(self, script, argv):
    """Runs script.main() with argv; any attempt to start a run fails the test."""
    with mock.patch.object(sys, "argv", argv), \
         mock.patch.object(sweep.subprocess, "Popen", side_effect=AssertionError("started")):
      script.main()

  def _table(self, script, argv, name):
    """Runs main() with argv (starting nothing) and returns the table <out>/<name>."""
    self._main(script, argv)
    with open(os.path.join(self.root, "out", name)) as f:
      return f.read()

  def _rejects(self, script, argv, message):
    err = io.StringIO()
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stderr(err), \
         self.assertRaises(SystemExit):
      script.main()
    self.assertIn(message, err.getvalue())

  def test_property_prediction_overrides_reach_every_run_and_the_table(self):
    script = _load_script("property_prediction_demo")
    workdir, out = os.path.join(self.root, "runs"), os.path.join(self.root, "out")
    for seed, ap in [(0, 0.4), (1, 0.2)]:
      _write(os.path.join(workdir, f"mesh_{seed}", "final_metrics.json"),
             {"eval": {**{k: ap for k in script.RULE_KEYS["official"]},
                       **{k: ap + 0.1 for k in script.RULE_KEYS["lenient"]}, "loss": 0.1},
              "train_time_s": 10.0, "wall_time_s": 12.0})
    argv = ["property_prediction_demo.py", "--attentions=mesh", "--seeds=0,1", "--tag=_entry",
            f"--workdir={workdir}", f"--out={out}", *MESH_STEP]
    table = self._table(script, argv, "property_prediction_shapes_entry.md")
    self.assertIn("`model.slot_attention.mesh_lr=0.05`", table)
    # Both AP rules from the same runs, each with its own tables.
    official, lenient = table.split("## Lenient rule")
    self.assertIn("## Official rule", official)
    self.assertIn("| SA-MESH | 30.0 ± 14.1 |", official)
    self.assertIn("| SA-MESH | 40.0 ± 14.1 |", lenient)
    self.assertIn("--override=model.slot_attention.mesh_lr_per_entry=True", table)
    self.assertFalse(os.path.exists(os.path.join(out, "property_prediction_shapes.md")))
    # The flags of one run end with the overrides, after the script's own.
    args = script.config_args("mesh", 0, script_args(script, argv), "w")
    self.assertEqual(args[-2:], ["--config.model.slot_attention.mesh_lr_per_entry=True",
                                 "--config.model.slot_attention.mesh_lr=0.05"])

  def test_property_prediction_rejects_bad_overrides(self):
    script = _load_script("property_prediction_demo")
    self._rejects(script, ["x.py", "--override=mesh_lr", "--tag=_t", "--workdir=w"],
                  "is not KEY=VALUE")
    self._rejects(script, ["x.py", *MESH_STEP, "--workdir=w"], "own --workdir and --tag")
    self._rejects(script, ["x.py", *MESH_STEP, "--tag=_t"], "own --workdir and --tag")

  def test_video_overrides_reach_every_run_and_the_tagged_table(self):
    script = _load_script("video_demo")
    workdir, out = os.path.join(self.root, "runs"), os.path.join(self.root, "out")
    _write(os.path.join(workdir, "sa_mesh_0", "final_metrics.json"),
           {"eval": {"fg_ari": 0.5, "fg_miou": 0.4, "temporal_consistency": 0.6, "loss": 0.04},
            "wall_time_s": 30.0})
    argv = ["video_demo.py", "--variants=sa_mesh", "--seeds=0,1", "--tag=_entry",
            f"--workdir={workdir}", f"--out={out}", "--report_only", *MESH_STEP]
    table = self._table(script, argv, "video_shapes_entry.md")
    self.assertIn("| SA-MESH | 0 | 50.0 | 40.0 | 60.0 | 0.0400 | 30 |", table)
    self.assertIn("| SA-MESH | 1 | not run |", table)
    self.assertIn("`model.slot_attention.mesh_lr_per_entry=True`", table)
    self.assertIn("--override=model.slot_attention.mesh_lr=0.05 --tag=_entry", table)
    self.assertFalse(os.path.exists(os.path.join(out, "video_shapes.md")))
    self._rejects(script, ["x.py", *MESH_STEP, "--workdir=w"], "own --workdir and --tag")
    self._rejects(script, ["x.py", "--override==1", "--tag=_t", "--workdir=w"],
                  "is not KEY=VALUE")


class LaunchThroughSweepTest(absltest.TestCase):
  """Every study script hands its runs to the sweep runner (captured here, nothing runs)."""

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def _runs(self, script, argv, finish=None):
    """(runs, keyword arguments) that script.main() gives sweep.run_all; `finish(run)`
    writes the results the script's analysis reads, as a finished run would."""
    seen = {}

    def run_all(runs, **kwargs):
      seen.update(runs=list(runs), kwargs=kwargs)
      for run in runs:
        if finish:
          finish(run)
      return [sweep.Outcome(run, "done", 0, 1.0) for run in runs]

    with mock.patch.object(sys, "argv", argv), mock.patch.object(sweep, "run_all", run_all), \
         contextlib.redirect_stdout(io.StringIO()):
      script.main()
    return seen["runs"], seen["kwargs"]

  def test_object_discovery(self):
    script = _load_script("object_discovery_demo")
    finish = lambda run: _write(os.path.join(run.workdir, "final_metrics.json"), {
        "eval": {"fg_ari": 0.5, "fg_miou": 0.4, "loss": 0.01}, "report": "r",
        "train_time_s": 1.0, "wall_time_s": 2.0})
    runs, kwargs = self._runs(script, [
        "x.py", "--seeds=0,1", "--attentions=softmax,mesh", "--jobs=2", "--steps=10",
        f"--workdir={self.root}/w", f"--out={self.root}/out"], finish)
    self.assertEqual([r.name for r in runs], ["softmax_0", "softmax_1", "mesh_0", "mesh_1"])
    self.assertEqual(runs[3].workdir, f"{self.root}/w/mesh_1")
    self.assertIn("configs/shapes.py:attention=mesh,seed=1,steps=10", " ".join(runs[3].cmd))
    self.assertEqual((kwargs["jobs"], kwargs["nice"]), (2, 10))
    with open(f"{self.root}/out/object_discovery_shapes.md") as f:
      self.assertIn("| SA-MESH | 1 | 50.0 | 40.0 | 0.0100 | 1 | 2 |", f.read())

  def test_property_prediction(self):
    script = _load_script("property_prediction_demo")
    finish = lambda run: _write(os.path.join(run.workdir, "final_metrics.json"), {
        "eval": {**{k: 0.5 for k in script.KEYS}, "loss": 0.1}, "train_time_s": 1.0,
        "wall_time_s": 2.0})
    runs, kwargs = self._runs(script, [
        "x.py", "--seeds=0,1", "--attentions=softmax,mesh", "--compilation_cache=c",
        f"--workdir={self.root}/w", f"--out={self.root}/out"], finish)
    self.assertEqual([r.name for r in runs], ["mesh_0", "mesh_1", "softmax_0", "softmax_1"])
    self.assertEqual((kwargs["jobs"], kwargs["compilation_cache"]), (2, "c"))

  def test_video(self):
    script = _load_script("video_demo")
    finish = lambda run: _write(os.path.join(run.workdir, "final_metrics.json"), {
        "eval": {"fg_ari": 0.5, "fg_miou": 0.4, "temporal_consistency": 0.9, "loss": 0.01},
        "wall_time_s": 2.0})
    runs, kwargs = self._runs(script, [
        "x.py", "--seeds=0,1", "--variants=sa,sa_mesh", f"--workdir={self.root}/w",
        f"--out={self.root}/out"], finish)
    self.assertEqual([r.name for r in runs], ["sa_0", "sa_mesh_0", "sa_1", "sa_mesh_1"])
    self.assertIn(f"--workdir={self.root}/w/sa_mesh_1", runs[3].cmd)
    self.assertEqual(kwargs["jobs"], 2)

  def test_cardinality(self):
    script = _load_script("cardinality_study")
    runs, kwargs = self._runs(script, [
        "x.py", "--seeds=0,1", "--norms=layer_norm", "--stage=train", "--jobs=2",
        f"--workdir={self.root}/w"])
    self.assertEqual([r.name for r in runs], ["layer_norm_0", "layer_norm_1"])
    self.assertIn("--worker=layer_norm:1", runs[1].cmd)
    self.assertEqual(runs[1].done_file, "final_metrics.json")
    self.assertEqual(kwargs["jobs"], 2)
    a = mock.Mock(stage="all", workdir="w", steps=5, data_dir=None)
    self.assertEqual(script.study_runs(["layer_norm"], [0], a)[0].done_file,
                     os.path.join("cardinality", "sweep.json"))

  def test_reproduce_random_objects(self):
    script = _load_script("reproduce_random_objects")
    finish = lambda run: _write(os.path.join(run.workdir, "final_metrics.json"), {
        "eval": {"rmse_over_sigma": 0.3}, "step": 20000, "wall_time_s": 60.0})
    runs, kwargs = self._runs(script, [
        "x.py", "--attentions=softmax,mesh", "--sigmas=1", "--seeds=2", "--jobs=2",
        f"--workdir_root={self.root}/w", f"--output={self.root}/t.md",
        "--override=eval_every_steps=2000"], finish)
    self.assertEqual([r.name for r in runs], ["mesh_sigma1_seed0", "mesh_sigma1_seed1",
                                             "softmax_sigma1_seed0", "softmax_sigma1_seed1"])
    self.assertEqual(runs[0].cmd[-1], "--config.eval_every_steps=2000")
    self.assertIn("random_objects.py:attention=mesh,sigma=1,seed=0", runs[0].cmd[2])
    self.assertEqual(kwargs["env"]["JAX_PLATFORMS"], "cpu")
    with open(f"{self.root}/t.md") as f:
      self.assertIn("| SA-MESH | 0.30 [0.30-0.30] (paper 0.24, n=2) † |", f.read())


class OneThreadEnvTest(absltest.TestCase):

  def test_keeps_flags_and_limits_threads(self):
    from slot_ot_jax.training import launch  # pylint: disable=g-import-not-at-top
    env = launch.one_thread_env({"XLA_FLAGS": "--xla_foo=1", "PATH": "/bin"})
    self.assertEqual(env["XLA_FLAGS"], "--xla_foo=1 --xla_cpu_multi_thread_eigen=false "
                     "intra_op_parallelism_threads=1")
    self.assertEqual((env["OMP_NUM_THREADS"], env["PATH"]), ("1", "/bin"))


def script_args(script, argv):
  """The parsed arguments main() sees for argv (stops main() before any run)."""
  seen = {}

  def stop(runs, a):
    seen["a"] = a
    raise StopIteration

  with mock.patch.object(sys, "argv", argv), mock.patch.object(script, "run_all", stop):
    try:
      script.main()
    except StopIteration:
      pass
  return seen["a"]


if __name__ == "__main__":
  absltest.main()

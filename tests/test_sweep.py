"""Tests of the sweep runner (slot_ot_jax/training/sweep.py).

The scheduling, resume, failure and table tests run a fake trainer (a few lines of Python
standing in for main.py through `--main`), so they take seconds; one test trains a tiny
random-objects model through the real main.py.
"""
import contextlib
import io
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import textwrap

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import host
from slot_ot_jax.training import sweep

# Takes main.py's flags; logs its start and end times to <root>/events.jsonl; fails for
# attention=bad; else writes final_metrics.json with score = 10 * a + seed (a: 1 or 2) and
# the thread settings it saw to env.json.
FAKE_MAIN = textwrap.dedent("""
    import json, os, sys, time
    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    config, workdir = flags.pop("config"), flags.pop("workdir")
    arg = dict(item.split("=", 1) for item in config.partition(":")[2].split(","))
    root = os.path.dirname(os.path.dirname(os.path.abspath(workdir)))
    def event(kind):
      with open(os.path.join(root, "events.jsonl"), "a") as f:
        f.write(json.dumps({"run": os.path.basename(workdir), "kind": kind,
                            "t": time.time()}) + "\\n")
    event("start")
    print("training", config, flush=True)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0.3")))
    if arg.get("attention") == "bad":
      print("Traceback: something broke (boom)", flush=True)
      sys.exit(3)
    os.makedirs(workdir, exist_ok=True)
    seed = int(arg.get("seed", flags.get("config.seed", 0)))
    score = {"a": 1, "b": 2}.get(arg.get("attention"), 0) * 10 + seed
    with open(os.path.join(workdir, "env.json"), "w") as f:
      json.dump({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "XLA_FLAGS",
                                                "JAX_COMPILATION_CACHE_DIR")}, f)
    with open(os.path.join(workdir, "flags.json"), "w") as f:
      json.dump({"config": config, **flags}, f)
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump({"step": 10, "eval": {"score": score, "loss": 0.5}, "report": "ok",
                 "train_time_s": 0.1}, f)
    event("end")
""")


class SweepCommandLineTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    self.fake = os.path.join(self.root, "fake_main.py")
    with open(self.fake, "w") as f:
      f.write(FAKE_MAIN)
    self.workdir = os.path.join(self.root, "runs")
    self.out = os.path.join(self.root, "tables")

  def _argv(self, *flags):
    return ["--config=configs/random_objects.py:sigma=1", f"--workdir={self.workdir}",
            f"--out={self.out}", f"--main={shlex.quote(sys.executable)} {self.fake}", *flags]

  def _sweep(self, *flags):
    """Runs the command line's main(); returns (exit status, stdout, stderr)."""
    argv = self._argv(*flags)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      status = sweep.main(argv)
    return status, out.getvalue(), err.getvalue()

  def _events(self):
    with open(os.path.join(self.root, "events.jsonl")) as f:
      return [json.loads(line) for line in f]

  def test_schedules_tabulates_and_resumes(self):
    status, out, _ = self._sweep("--grid", "attention=a,b", "--seeds=0,1,2", "--jobs=2",
                                 "--metrics=score", "--compilation_cache=" +
                                 os.path.join(self.root, "cache"))
    self.assertEqual(status, 0, out)
    names = [f"attention-{a}_seed-{s}" for a in "ab" for s in range(3)]
    self.assertCountEqual(os.listdir(self.workdir), names)
    # Never more than --jobs processes at a time, and the two slots were both used.
    events = sorted(self._events(), key=lambda e: e["t"])
    running, most = 0, 0
    for e in events:
      running += 1 if e["kind"] == "start" else -1
      most = max(most, running)
    self.assertEqual(most, 2)
    self.assertLen([e for e in events if e["kind"] == "start"], 6)
    # Each run: its grid point and seed in the config argument, one thread, the cache.
    workdir = os.path.join(self.workdir, "attention-b_seed-2")
    flags = sweep.read_json(os.path.join(workdir, "flags.json"))
    self.assertEqual(flags["config"], "configs/random_objects.py:sigma=1,attention=b,seed=2")
    env = sweep.read_json(os.path.join(workdir, "env.json"))
    self.assertEqual(env["OMP_NUM_THREADS"], "1")
    self.assertIn("intra_op_parallelism_threads=1", env["XLA_FLAGS"])
    self.assertEqual(env["JAX_COMPILATION_CACHE_DIR"], os.path.join(self.root, "cache"))
    info = sweep.read_json(os.path.join(workdir, "run_info.json"))
    self.assertEqual(info["returncode"], 0)
    self.assertGreater(info["wall_time_s"], 0.2)
    # The host each run ran on is recorded and named in the tables.
    self.assertEqual(info["host"], host.host_info())
    with open(os.path.join(workdir, "log.txt")) as f:
      self.assertIn("training configs/random_objects.py", f.read())
    # Tables: mean ± sample std (ddof 1) with the per-seed values.
    with open(os.path.join(self.out, "sweep.md")) as f:
      table = f.read()
    self.assertIn("| attention=a | 3 (0,1,2) | 11 ± 1 [10, 11, 12] |", table)
    self.assertIn("| attention=b | 3 (0,1,2) | 21 ± 1 [20, 21, 22] |", table)
    self.assertIn("| attention-a_seed-1 | 1 | finished |", table)
    self.assertIn(f"Host: {host.describe()}.", table)
    summary = sweep.read_json(os.path.join(self.out, "sweep.json"))
    self.assertEqual(summary["metrics"], ["eval.score"])
    group = summary["groups"][1]
    self.assertEqual(group["point"], {"attention": "b"})
    self.assertEqual(group["metrics"]["eval.score"],
                     {"mean": 21.0, "std": 1.0, "values": [20.0, 21.0, 22.0]})
    self.assertLen(summary["runs"], 6)
    # Rerunning starts nothing and writes the same numbers; all metrics by default.
    status, out, _ = self._sweep("--grid", "attention=a,b", "--seeds=0,1,2", "--jobs=2")
    self.assertEqual(status, 0)
    self.assertIn("0 run(s) to do (6 finished before)", out)
    self.assertLen(self._events(), 12)
    summary = sweep.read_json(os.path.join(self.out, "sweep.json"))
    self.assertEqual(summary["metrics"], ["step", "eval.score", "eval.loss", "train_time_s"])
    # A run whose result is gone is run again, and only that one.
    os.remove(os.path.join(workdir, "final_metrics.json"))
    status, out, _ = self._sweep("--grid", "attention=a,b", "--seeds=0,1,2", "--jobs=2")
    self.assertIn("1 run(s) to do (5 finished before)", out)
    self.assertLen(self._events(), 14)

  def test_failed_run_is_reported_and_the_others_finish(self):
    status, out, err = self._sweep("--grid", "attention=bad,a", "--seeds=0,1", "--jobs=2",
                                   "--metrics=score")
    self.assertEqual(status, 1)
    self.assertIn("FAILED attention-bad_seed-0 (exit 3)", out)
    self.assertIn("something broke (boom)", out)  # The tail of its log.
    self.assertIn("2 run(s) failed", err)
    for seed in (0, 1):
      self.assertTrue(os.path.exists(
          os.path.join(self.workdir, f"attention-a_seed-{seed}", "final_metrics.json")))
    summary = sweep.read_json(os.path.join(self.out, "sweep.json"))
    statuses = {r["name"]: r["status"] for r in summary["runs"]}
    self.assertEqual(statuses["attention-bad_seed-1"], "failed")
    self.assertEqual(statuses["attention-a_seed-1"], "finished")
    self.assertEqual(summary["groups"][0]["n"], 0)
    self.assertEqual(summary["groups"][1]["metrics"]["eval.score"]["mean"], 10.5)

  def test_overrides_seed_flag_and_single_seed(self):
    status, _, _ = self._sweep("--seeds=4", "--seed_in=override", "--override=foo.bar=2",
                               "--jobs=1")
    self.assertEqual(status, 0)
    flags = sweep.read_json(os.path.join(self.workdir, "seed-4", "flags.json"))
    self.assertEqual(flags, {"config": "configs/random_objects.py:sigma=1", "config.foo.bar": "2",
                             "config.seed": "4"})
    env = sweep.read_json(os.path.join(self.workdir, "seed-4", "env.json"))
    self.assertEqual(env["JAX_COMPILATION_CACHE_DIR"], os.environ.get("JAX_COMPILATION_CACHE_DIR"))
    self.assertEqual(env["OMP_NUM_THREADS"], os.environ.get("OMP_NUM_THREADS"))  # One job.
    summary = sweep.read_json(os.path.join(self.out, "sweep.json"))
    self.assertIsNone(summary["groups"][0]["metrics"]["eval.score"]["std"])  # One seed.

  def test_bad_arguments(self):
    for flags, message in [(["--grid", "attention"], "is not KEY=V1,V2"),
                           (["--override=nokey"], "is not KEY=VALUE"),
                           (["--grid", "a=1", "--grid", "a=2"], "given twice")]:
      err = io.StringIO()
      with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
        sweep.main(self._argv(*flags))
      self.assertIn(message, err.getvalue())
    self.assertFalse(os.path.exists(self.workdir))  # Nothing started.


class SweepApiTest(absltest.TestCase):

  def test_grid_names_and_statistics(self):
    self.assertEqual(sweep.parse_grid(["a=1,2", "b=x"]), [{"a": "1", "b": "x"},
                                                          {"a": "2", "b": "x"}])
    self.assertEqual(sweep.run_name({"attention": "mesh", "sigma": "0.1"}, 2),
                     "attention-mesh_sigma-0.1_seed-2")
    mean, std = sweep.mean_std([0.2, 0.4, 0.6])
    self.assertAlmostEqual(mean, 0.4)
    self.assertAlmostEqual(std, 0.2)  # Sample std (ddof 1), not 0.163.
    self.assertEqual(sweep.flatten({"eval": {"x": 1, "ok": True}, "report": "s", "step": 3}),
                     {"eval.x": 1.0, "step": 3.0})

  def test_wall_time_prefers_the_runner_record(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    with open(os.path.join(root, "final_metrics.json"), "w") as f:
      json.dump({"wall_time_s": 5.0, "process_wall_s": 7.0}, f)
    self.assertEqual(sweep.wall_time(root), 7.0)  # Written by an older launcher.
    with open(os.path.join(root, "run_info.json"), "w") as f:
      json.dump({"wall_time_s": 9.0}, f)
    self.assertEqual(sweep.wall_time(root), 9.0)
    self.assertIsNone(sweep.wall_time(os.path.join(root, "missing")))

  def test_exit_zero_without_result_is_a_failure(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    run = sweep.Run(name="r", cmd=[sys.executable, "-c", "print('stopped early')"],
                    workdir=os.path.join(root, "r"))
    [outcome] = sweep.run_all([run], poll_s=0.05, echo=lambda s: None)
    self.assertEqual((outcome.status, outcome.returncode), ("failed", 0))
    self.assertIn("stopped early", outcome.log_tail)
    with self.assertRaisesRegex(SystemExit, "r: exit 0"):
      sweep.require_success([outcome])


class SweepRealRunTest(absltest.TestCase):

  def test_tiny_random_objects_run_through_main(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    tiny = ["data.num_train=64", "data.num_eval=64", "eval_batch_size=64", "batch_size=16",
            "num_epochs=1", "data.dim=8", "model.slot_attention.mlp_size=8",
            "model.slot_attention.num_iters=1", "log_every_steps=2", "eval_every_steps=4",
            "checkpoint_every_steps=4"]
    argv = [f"--config={os.path.join(REPO, 'configs', 'random_objects.py')}:sigma=1,runlocal=1",
            "--grid", "attention=softmax", "--seeds=0", f"--workdir={root}", "--jobs=1",
            "--metrics=rmse_over_sigma,step"] + [f"--override={o}" for o in tiny]
    with contextlib.redirect_stdout(io.StringIO()) as out:
      status = sweep.main(argv)
    self.assertEqual(status, 0, out.getvalue())
    summary = sweep.read_json(os.path.join(root, "sweep.json"))
    [row] = summary["runs"]
    self.assertEqual(row["metrics"]["step"], 4.0)
    self.assertTrue(math.isfinite(row["metrics"]["eval.rmse_over_sigma"]))
    self.assertGreater(row["wall_s"], 0.0)
    info = sweep.read_json(os.path.join(root, row["name"], "run_info.json"))
    self.assertGreater(info["cpu_time_s"], 0.0)


if __name__ == "__main__":
  absltest.main()

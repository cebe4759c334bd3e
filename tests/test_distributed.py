"""Multi-process data parallelism (slot_ot_jax/training/train.py, main.py --distributed).

Two `main.py --distributed` processes on localhost (a loopback coordinator on a free port,
two CPU devices each, cross-process collectives through gloo) train the random-objects task
with its small `set_mlp` model; the test process trains the same config on four devices of
one process meanwhile. Both must end with the same parameters, optimizer state and evaluation
metrics. Every subprocess runs under a timeout, so a hung collective fails the test instead
of stalling the suite.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import random_objects as ro_config  # pylint: disable=g-import-not-at-top
from slot_ot_jax import tasks
from slot_ot_jax.training import checkpointing
from slot_ot_jax.training import train

ARG = "attention=softmax,sigma=0.1,runlocal=1"
# 384 / 64 = 6 steps; evaluation on 2 batches of 64.
OVERRIDES = {"model.name": "set_mlp", "data.num_train": 384, "data.num_eval": 128,
             "num_epochs": 1, "eval_batch_size": 64, "log_every_steps": 3,
             "eval_every_steps": 6, "checkpoint_every_steps": 6}
NUM_STEPS = 6
TIMEOUT_S = 300


def _config():
  config = ro_config.get_config(ARG)
  config.update_from_flattened_dict(OVERRIDES)
  assert config.num_train_steps == NUM_STEPS
  return config


def _free_loopback_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _subprocess_env(devices_per_process: int) -> dict[str, str]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags += [f"--xla_force_host_platform_device_count={devices_per_process}",
            "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
  env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1",
             PYTHONPATH=os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
  return env


def _skip_reason() -> str | None:
  """Why this platform cannot run two JAX processes on loopback, or None if it can."""
  try:
    _free_loopback_port()
  except OSError as e:
    return f"cannot bind a TCP port on 127.0.0.1 ({e})"
  from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  if not hasattr(_jax, "make_gloo_tcp_collectives"):
    return "this jaxlib has no gloo CPU collectives"
  return None


def _restore_state(config, workdir):
  task = tasks.get_task(config)
  trainer = train.Trainer(config, task, jax.devices()[:1])
  checkpointer = checkpointing.Checkpointer(workdir, config)
  try:
    return jax.device_get(checkpointer.restore(NUM_STEPS, trainer.abstract_state_dict()))
  finally:
    checkpointer.close()


class TwoProcessTest(absltest.TestCase):

  def test_two_processes_match_one(self):
    reason = _skip_reason()
    if reason:
      self.skipTest(f"two-process loopback run impossible here: {reason}")
    self.assertGreaterEqual(jax.device_count(), 4)
    config = _config()
    dist_dir, ref_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    port = _free_loopback_port()
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    procs = [subprocess.Popen(
        [sys.executable, "main.py", f"--config=configs/random_objects.py:{ARG}", *flags,
         f"--workdir={dist_dir}", "--distributed", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=_subprocess_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    try:
      # One process with the same global batch over as many devices, meanwhile.
      expected = train.train_and_evaluate(config, ref_dir, devices=jax.devices()[:4])
      outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait()
    for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
      self.assertEqual(p.returncode, 0, f"process {i}:\n{err[-4000:]}")
      self.assertIn(f"JAX process {i}/2", err)
    self.assertIn(f"Step {NUM_STEPS}: RMSE/sigma", outputs[0][0])
    self.assertNotIn("Step", outputs[1][0])  # Only process 0 prints the result.

    with open(os.path.join(dist_dir, train.FINAL_METRICS_FILE)) as f:
      got = json.load(f)
    self.assertEqual(got["step"], NUM_STEPS)
    self.assertEqual(set(got["eval"]), set(expected["eval"]))
    for name, value in expected["eval"].items():
      self.assertAlmostEqual(got["eval"][name], value, delta=1e-5 * abs(value) + 1e-7,
                             msg=name)

    dist_state, ref_state = _restore_state(config, dist_dir), _restore_state(config, ref_dir)
    self.assertEqual(int(dist_state["step"]), NUM_STEPS)
    initial = jax.device_get(train.Trainer(config, tasks.get_task(config),
                                           jax.devices()[:1]).create_state().params)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                         ref_state["params"], initial))
    self.assertGreater(max(moved), 1e-4)  # Training changed the parameters.
    for key in ("params", "opt_state"):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                   dist_state[key], ref_state[key])


if __name__ == "__main__":
  absltest.main()

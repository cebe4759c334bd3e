"""Random-objects training step: SA beside SA-MESH with and without differentiated MESH steps
(not a test).

  python benchmarks/random_objects_mesh_paths.py [--repeats=20] [--sigma=0.01]

The trainer's jitted step of configs/random_objects.py for SA, SA-MESH as configured
(mesh_differentiate_steps=True: the outer gradient goes through each MESH step's entropy
gradient) and SA-MESH straight through (False: the released reference's path), one device,
one XLA thread, 3 warm-up steps each, then one step of each per round on a fixed batch;
medians and the ratio to SA. Prints the host.
"""
import argparse
import os
import statistics
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                           " intra_op_parallelism_threads=1").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs import random_objects as ro  # noqa: E402
from slot_ot_jax import tasks  # noqa: E402
from slot_ot_jax.training import host  # noqa: E402
from slot_ot_jax.training import train  # noqa: E402

MODELS = (("SA", "softmax", None), ("SA-MESH, differentiated steps (default)", "mesh", True),
          ("SA-MESH, straight through", "mesh", False))


def warm_run(attention: str, differentiate, sigma: float) -> list:
  """[trainer, state, batch] of configs/random_objects.py after 3 warm-up steps (compiled);
  `differentiate` sets mesh_differentiate_steps unless None."""
  config = ro.get_config(f"attention={attention},sigma={sigma:g}")
  if differentiate is not None:
    config.model.slot_attention.mesh_differentiate_steps = differentiate
  task = tasks.get_task(config)
  trainer = train.Trainer(config, task, jax.devices()[:1])
  state = trainer.create_state()
  batch = trainer.global_batch(next(task.train_batches(0)))
  for _ in range(3):
    state, _, finite = trainer.train_step(state, batch)
  finite.block_until_ready()
  return [trainer, state, batch]


def interleaved_times(runs: dict, repeats: int) -> dict:
  """Seconds of each run's step, one step of each run per round, `repeats` rounds."""
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      run[1], _, finite = run[0].train_step(run[1], run[2])
      finite.block_until_ready()
      times[name].append(time.perf_counter() - start)
  return times


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--sigma", type=float, default=0.01)
  a = p.parse_args()
  runs = {name: warm_run(attention, differentiate, a.sigma)
          for name, attention, differentiate in MODELS}
  times = interleaved_times(runs, a.repeats)
  base = statistics.median(times["SA"])
  print("\n".join(host.host_lines()))
  print(f"# sigma {a.sigma:g}, medians of {a.repeats} interleaved steps")
  print("| model | step ms | ratio to SA |\n| --- | --- | --- |")
  for name, t in times.items():
    print(f"| {name} | {1e3 * statistics.median(t):.2f} | {statistics.median(t) / base:.2f}x |")


if __name__ == "__main__":
  main()

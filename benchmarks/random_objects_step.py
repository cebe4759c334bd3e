"""Training-step time of the random-objects model (MESH Table 1 setup) for SA, SA-SH and
SA-MESH, side by side (not a test).

  python benchmarks/random_objects_step.py [--attentions softmax,sinkhorn,mesh]
      [--repeats 30] [--sigma 0.01] [--threads 1] [--baseline GIT_REVISION]

Builds the real trainer (`train.Trainer`) from `configs/random_objects.py` for each
attention (same config otherwise: batch 64, 105 inputs of 32 dims, 5 slots, 3 iterations),
jits its train step on one device, warms each up with 3 steps, then runs the attentions in
turn, one step each per round, for `--repeats` rounds on the same pre-fetched batches, and
prints the median step time and its ratio to the first attention. `--threads 1` (default):
single-threaded XLA, as the training grid runs. `--baseline REV` adds one more model,
SA-MESH with `slot_ot_jax/transport/sinkhorn_ot.py` (and `mesh_ot.py`, where it exists) taken from
that git revision, in the same rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slot_ot_jax.training import host  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--attentions", default="softmax,sinkhorn,mesh")
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--sigma", type=float, default=0.01)
  parser.add_argument("--threads", type=int, default=1)
  parser.add_argument("--baseline", default="", help="git revision of transport.py for an "
                      "extra SA-MESH run")
  args = parser.parse_args()
  if args.threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
  sys.path.insert(0, ROOT)
  import jax  # pylint: disable=g-import-not-at-top

  from configs import random_objects as ro_config  # pylint: disable=g-import-not-at-top
  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.modules import attention as attention_lib  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top

  attentions = args.attentions.split(",")
  variants = [(name, name, None) for name in attentions]
  if args.baseline:
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from transport_profile import module_at  # pylint: disable=g-import-not-at-top
    variants.append((f"mesh@{args.baseline}", "mesh", module_at(args.baseline)))
  runs = {}
  current = attention_lib.transport, attention_lib.mesh_ot
  for label, attention, baseline in variants:
    if baseline is not None:  # traced (compiled) with the baseline's Sinkhorn and MESH
      attention_lib.transport = attention_lib.mesh_ot = baseline
    config = ro_config.get_config(f"attention={attention},sigma={args.sigma}")
    task = tasks.get_task(config)
    trainer = train.Trainer(config, task, jax.devices()[:1])
    batches = task.train_batches(0)
    batch_list = [trainer.global_batch(next(batches)) for _ in range(4)]
    state = trainer.create_state()
    t0 = time.perf_counter()
    for i in range(3):  # compile and warm up
      state, _, finite = trainer.train_step(state, batch_list[i % 4])
    finite.block_until_ready()
    attention_lib.transport, attention_lib.mesh_ot = current
    runs[label] = dict(trainer=trainer, state=state, batches=batch_list, times=[],
                       compile_s=time.perf_counter() - t0)
  host.print_host()
  print(f"# jax {jax.__version__}, single-threaded: {args.threads == 1}, sigma {args.sigma}, "
        f"median of {args.repeats} interleaved steps; load average at start {os.getloadavg()}")
  for r in range(args.repeats):
    for run in runs.values():
      t0 = time.perf_counter()
      run["state"], _, finite = run["trainer"].train_step(run["state"], run["batches"][r % 4])
      finite.block_until_ready()
      run["times"].append(time.perf_counter() - t0)
  base = statistics.median(runs[attentions[0]]["times"])
  print(f"| attention | step ms (median) | ratio to {attentions[0]} | compile + 3 warm-up s |")
  print("| --- | --- | --- | --- |")
  for attention, run in runs.items():
    ms = statistics.median(run["times"]) * 1e3
    print(f"| {attention} | {ms:.2f} | {ms / 1e3 / base:.2f}x | {run['compile_s']:.1f} |")
  print(f"# load average at end {os.getloadavg()}")


if __name__ == "__main__":
  main()

r"""CPU demonstration: property prediction on shapes/properties32, SA vs SA-SH vs SA-MESH.

  python scripts/property_prediction_demo.py [--steps=3000 --batch_size=32 --seeds=0,1,2 \
      --jobs=2 --data_dir=DATA_DIR --workdir=workdirs/pp_demo --out=benchmarks/results]

Each run is `main.py --config=configs/shapes_properties.py:attention=A,seed=S,...` in its own
process under `nice -n 10` (--nice), launched by the sweep runner `slot_ot_jax.training.sweep`
(--jobs at a time, one CPU thread each when more than one; log in <run>/log.txt), with
the final evaluation on the test split (320 images). Then writes
<out>/property_prediction_shapes<tag>.md: the budget, per-run AP at every threshold with the
train and wall times, and mean +- std over seeds per variant. A run whose workdir already
holds final_metrics.json is not repeated.

`--override KEY=VALUE` (repeatable) passes `--config.KEY=VALUE` to every run, e.g. the MESH step
per cost entry:

  python scripts/property_prediction_demo.py --attentions=mesh --tag=_mesh_per_entry \
      --workdir=workdirs/pp_demo_mesh_per_entry \
      --override=model.slot_attention.mesh_lr_per_entry=True \
      --override=model.slot_attention.mesh_lr=0.05

It needs its own --workdir and --tag, so that the default runs and table stay as they are.
"""
import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import launch  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "emd": "SA-EMD", "mesh": "SA-MESH"}
THRESHOLDS = ("inf", "1", "0.5", "0.25", "0.125", "0.0625")
# AP under the official evaluator's claim rule (the default metric) and under the lenient one
# (slot_ot_jax/evaluation/set_prediction.py; docs/evaluation.md).
RULE_KEYS = {"official": tuple(f"ap_{t}" for t in THRESHOLDS),
             "lenient": tuple(f"ap_lenient_{t}" for t in THRESHOLDS)}
KEYS = RULE_KEYS["official"]


def config_args(attention: str, seed: int, a, workdir: str) -> list[str]:
  """main.py arguments of one run."""
  args = [f"--config={sweep.repo_path('configs/shapes_properties.py')}:attention={attention},"
          f"seed={seed},steps={a.steps},batch_size={a.batch_size},width={a.width}",
          f"--workdir={workdir}", f"--config.eval_every_steps={a.steps}",
          f"--config.checkpoint_every_steps={a.steps}", "--config.data.eval_split=test"]
  args += [f"--config.data.data_dir={a.data_dir}"] if a.data_dir else []
  return args + launch.override_flags(a.override)


def run_all(runs, a) -> None:
  """Runs the missing ones through the sweep runner (--jobs processes at a time, slowest
  attention first so that the last slots are not left idle); exits if any failed."""
  cost = {"emd": 0, "mesh": 1, "sinkhorn": 2, "softmax": 3}
  todo = sorted(runs, key=lambda r: cost.get(r[0], 0))
  outcomes = sweep.run_all(
      [sweep.Run(name=f"{v}_{s}",
                 cmd=[sys.executable, sweep.repo_path("main.py"), *config_args(v, s, a, w)],
                 workdir=w, point={"attention": v}, seed=s) for v, s, w in todo],
      jobs=a.jobs, nice=a.nice, compilation_cache=a.compilation_cache or None)
  sweep.require_success(outcomes)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--width", type=int, default=32, help="encoder conv channels")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--attentions", default="softmax,sinkhorn,mesh")
  p.add_argument("--jobs", type=int, default=2)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--workdir", default="workdirs/pp_demo")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--tag", default="")
  p.add_argument("--nice", type=int, default=10, help="niceness of the runs")
  p.add_argument("--compilation_cache", default="",
                 help="JAX persistent compilation cache dir shared by the runs ('' = none)")
  launch.add_override_argument(p)
  a = p.parse_args()
  launch.check_overrides(p, a.override, bool(a.tag) and a.workdir != p.get_default("workdir"),
                         "--workdir and --tag")
  seeds = [int(s) for s in a.seeds.split(",")]
  attentions = a.attentions.split(",")
  runs = [(v, s, os.path.join(a.workdir, f"{v}_{s}")) for v in attentions for s in seeds]
  run_all(runs, a)
  results = {(v, s): json.load(open(os.path.join(w, "final_metrics.json"))) for v, s, w in runs}

  header = "| " + " | ".join(f"AP {t}" for t in THRESHOLDS)
  lines = [
      "# Property prediction on shapes/properties32 (CPU, one small fixed budget)", "",
      f"Budget per run: {a.steps} steps at batch {a.batch_size} "
      f"({a.steps * a.batch_size / 5000:.1f} epochs of the 5,000 training images); encoder "
      f"4 x 3x3 convs of {a.width} channels (strides 2,1,1,1: 16x16 tokens), 4 slots of size 64, "
      "3 iterations, detached slots, per-slot head 64 -> 14 with a sigmoid; Hungarian Huber "
      "loss; Adam 1e-3, lr halved every third of the run. AP in % on the test split (320 images); "
      "positions in units where the image side is 6 (threshold 1 = 1/6 of the side). "
      f"{a.jobs} run(s) at a time on a 2-core machine"
      + (", one CPU thread each" if a.jobs > 1 else "") + f", under `nice -n {a.nice}`; wall time "
      "includes start-up, compilation and evaluation.", "",
      "AP under the official evaluator's claim rule (the default; a prediction whose nearest "
      "same-attribute object is already claimed is a false positive) and under the lenient rule "
      "(nearest unclaimed object), from the same runs.", "",
      *[f"Host: {h}." for h in sweep.run_hosts(
          [sweep.Run(name=f"{v}_{s}", cmd=[], workdir=w) for v, s, w in runs])], ""]
  if a.override:
    lines += ["Config changes in every run: " + ", ".join(f"`{o}`" for o in a.override) + ".",
              ""]
  for rule, keys in RULE_KEYS.items():
    if any(k not in results[v, s]["eval"] for v, s, _ in runs for k in keys):
      lines += [f"({rule} rule: not in these runs' final metrics)", ""]
      continue
    lines += [
        f"## {rule.capitalize()} rule", "",
        f"| variant | seed {header} | test loss | train time (s) | wall time (s) |",
        "| --- | --- |" + " --- |" * (len(keys) + 3)]
    for v, s, _ in runs:
      r = results[v, s]
      aps = " | ".join(f"{100 * r['eval'][k]:.1f}" for k in keys)
      lines.append(f"| {NAMES[v]} | {s} | {aps} | {r['eval']['loss']:.4f} | "
                   f"{r['train_time_s']:.0f} | "
                   f"{sweep.wall_time(os.path.join(a.workdir, f'{v}_{s}')):.0f} |")
    lines += ["", f"Mean ± std over seeds {a.seeds} (std with ddof=1), {rule} rule:", "",
              f"| variant {header} | wall time per run (s) |",
              "| --- |" + " --- |" * (len(keys) + 1)]
    for v in attentions:
      cells = []
      for k in keys:
        values = np.array([100 * results[v, s]["eval"][k] for s in seeds])
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        cells.append(f"{values.mean():.1f} ± {std:.1f}")
      walls = [sweep.wall_time(os.path.join(a.workdir, f"{v}_{s}")) for s in seeds]
      lines.append(f"| {NAMES[v]} | {' | '.join(cells)} | {min(walls):.0f}-{max(walls):.0f} |")
    lines.append("")
  lines += ["", "Reproduce:", "", "```",
            f"python scripts/property_prediction_demo.py --steps={a.steps} "
            f"--batch_size={a.batch_size} --width={a.width} --seeds={a.seeds} --jobs={a.jobs} "
            f"--nice={a.nice}" + (f" --tag={a.tag}" if a.tag else "")
            + (f" --attentions={a.attentions}" if a.attentions != p.get_default("attentions")
               else "")
            + "".join(f" --override={o}" for o in a.override)
            + (f" --workdir={a.workdir}" if a.override else "")
            + (" --compilation_cache=CACHE_DIR" if a.compilation_cache else ""), "```", ""]
  if a.compilation_cache:
    lines += ["With the compilation cache, the runs after the first of each variant "
                    "reuse its compiled programs, so their train and wall times are lower.", ""]
  os.makedirs(a.out, exist_ok=True)
  path = os.path.join(a.out, f"property_prediction_shapes{a.tag}.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))
  print(f"Wrote {path}")


if __name__ == "__main__":
  main()

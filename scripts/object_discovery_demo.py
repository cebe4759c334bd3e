r"""CPU demonstration: SA vs SA-SH vs SA-MESH on shapes/32x32 at one fixed small budget.

  python scripts/object_discovery_demo.py [--steps=600 --batch_size=16 --seeds=0,1 \
      --data_dir=DATA_DIR --workdir=workdirs/od_demo --out=benchmarks/results]

Runs `main.py --config=configs/shapes.py:attention=A,seed=S,...` through the sweep runner
`slot_ot_jax.training.sweep` (each under `nice -n 10`; one at a time, or --jobs at a time with
one CPU thread each; log in <run>/log.txt), with the final evaluation on the
test split (320 images), then writes <out>/object_discovery_shapes<tag>.md (budget, per-run
FG-ARI / FG-mIoU, means, wall times, the command) and one mask grid per variant,
<out>/object_discovery_shapes<tag>_<attention>.png (seed 0; rows: input, reconstruction,
segmentation, 4 alpha masks, 4 last-iteration attention maps). A run whose workdir already
holds final_metrics.json is not repeated.
"""
import argparse
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "mesh": "SA-MESH"}


def run_args(attention, seed, a, with_data_dir=True, workdir=None):
  """The main.py arguments of one run."""
  return [
      f"--config={sweep.repo_path('configs/shapes.py')}:attention={attention},seed={seed},"
      f"steps={a.steps},"
      f"width={a.width},batch_size={a.batch_size}",
      f"--workdir={os.path.join(workdir or a.workdir, f'{attention}_{seed}')}",
      f"--config.model.slot_attention.slot_size={a.slot_size}",
      f"--config.model.slot_attention.mlp_size={2 * a.slot_size}",
      f"--config.optimizer.warmup_steps={a.steps // 10}",
      f"--config.optimizer.decay_steps={a.steps}",
      f"--config.eval_every_steps={a.steps}", f"--config.checkpoint_every_steps={a.steps}",
      "--config.data.eval_split=test",
  ] + ([f"--config.data.data_dir={a.data_dir}"] if a.data_dir and with_data_dir
        else [])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--width", type=int, default=16, help="conv channels")
  p.add_argument("--slot_size", type=int, default=32, help="slot MLP is twice this")
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--attentions", default="softmax,sinkhorn,mesh")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--workdir", default="workdirs/od_demo")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each if > 1)")
  p.add_argument("--tag", default="", help="suffix of the output file names")
  a = p.parse_args()
  seeds = [int(s) for s in a.seeds.split(",")]
  attentions = a.attentions.split(",")
  runs = [(attention, seed) for attention in attentions for seed in seeds]
  workdir_of = lambda r: os.path.join(a.workdir, f"{r[0]}_{r[1]}")
  outcomes = sweep.run_all(
      [sweep.Run(name=f"{v}_{s}", workdir=workdir_of((v, s)), point={"attention": v}, seed=s,
                 cmd=[sys.executable, sweep.repo_path("main.py"), *run_args(v, s, a)])
       for v, s in runs], jobs=a.jobs, nice=10)
  sweep.require_success(outcomes)
  rows = {}
  for run in runs:
    rows[run] = r = sweep.read_json(os.path.join(workdir_of(run), "final_metrics.json"))
    r["process_wall_s"] = sweep.wall_time(workdir_of(run))
    print(f"{run[0]} seed {run[1]}: {r['report']} ({r['process_wall_s']} s)", flush=True)

  os.makedirs(a.out, exist_ok=True)
  lines = [
      "# Object discovery on shapes/32x32 (CPU, one small fixed budget)", "",
      f"Budget per run: {a.steps} steps at batch {a.batch_size} "
      f"({a.steps * a.batch_size / 5000:.1f} epochs of the 5,000 training images); model: "
      f"5x5 convs of {a.width} channels, full-resolution broadcast decoder, 4 slots, slot "
      f"size {a.slot_size}, slot MLP {2 * a.slot_size}, 3 iterations; Adam 4e-4, warm-up "
      f"{a.steps // 10} steps, lr halved once over the run, clipping 0.1. Metrics on the "
      f"test split (320 images), 4 slots. Seeds: {', '.join(map(str, seeds))}. "
      + ("Each run is one process under `nice -n 10` on a 2-core machine, one run at a time"
         if a.jobs == 1 else f"{a.jobs} runs at a time on a 2-core machine, one CPU thread "
         "each, under `nice -n 10`")
      + "; wall time includes start-up, compilation and evaluation.", "",
      "| variant | seed | FG-ARI (%) | FG-mIoU (%) | test MSE | train time (s) | wall time (s) |",
      "| --- | --- | --- | --- | --- | --- | --- |"]
  for attention in attentions:
    for seed in seeds:
      r = rows[attention, seed]
      e = r["eval"]
      lines.append(f"| {NAMES[attention]} | {seed} | {100 * e['fg_ari']:.1f} | "
                   f"{100 * e['fg_miou']:.1f} | {e['loss']:.4f} | {r['train_time_s']:.0f} | "
                   f"{r['process_wall_s']:.0f} |")
  means = {m: [sum(100 * rows[v, s]["eval"][m] for s in seeds) / len(seeds) for v in attentions]
           for m in ("fg_ari", "fg_miou")}
  lines += ["", "| variant | mean FG-ARI (%) | mean FG-mIoU (%) |", "| --- | --- | --- |"]
  for i, attention in enumerate(attentions):
    lines.append(f"| {NAMES[attention]} | {means['fg_ari'][i]:.1f} | {means['fg_miou'][i]:.1f} |")
  spread = {m: max(max(100 * rows[v, s]["eval"][m] for s in seeds) -
                   min(100 * rows[v, s]["eval"][m] for s in seeds) for v in attentions)
            for m in ("fg_ari", "fg_miou")}
  gap = {m: max(v) - min(v) for m, v in means.items()}
  lines += ["", f"Largest gap between variant means: FG-ARI {gap['fg_ari']:.1f}"
            f" points, FG-mIoU {gap['fg_miou']:.1f} points; "
            f"largest gap between the seeds of one variant: FG-ARI {spread['fg_ari']:.1f}, "
            f"FG-mIoU {spread['fg_miou']:.1f} points."]
  lines += ["", "Mask grids (seed 0, first 4 test images; columns: input, reconstruction, "
            "segmentation, 4 alpha masks, 4 attention maps of the last iteration):", ""]
  for attention in attentions:
    src = os.path.join(a.workdir, f"{attention}_{seeds[0]}", "images", f"slots_{a.steps}.png")
    dst = os.path.join(a.out, f"object_discovery_shapes{a.tag}_{attention}.png")
    if os.path.exists(src):
      shutil.copyfile(src, dst)
      lines.append(f"- {NAMES[attention]}: `{os.path.basename(dst)}`")
  lines += ["", "Reproduce:", "", "```",
            f"python scripts/object_discovery_demo.py --steps={a.steps} "
            f"--batch_size={a.batch_size} --width={a.width} --slot_size={a.slot_size} "
            f"--seeds={a.seeds}" + (f" --jobs={a.jobs}" if a.jobs > 1 else "")
            + (f" --tag={a.tag}" if a.tag else ""), "```", "", "One run by hand:", "", "```",
            "python main.py " + " ".join(run_args(attentions[0], seeds[0], a, with_data_dir=False,
                                              workdir="workdirs/od_demo")), "```", ""]
  path = os.path.join(a.out, f"object_discovery_shapes{a.tag}.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  print(f"Wrote {path}")


if __name__ == "__main__":
  main()

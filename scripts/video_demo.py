r"""CPU demonstration of MESH Table 5 offline: SA vs SA fixed noise vs SA-MESH on shapes_video.

  python scripts/video_demo.py [--steps=3000 --batch_size=16 --seeds=0,1,2 --jobs=2 \
      --eval_split=test --data_dir=DATA_DIR --workdir=workdirs/video_demo --out=benchmarks/results]

Runs `main.py --config=configs/shapes_video.py:...` once per (variant, seed) through the sweep
runner `slot_ot_jax.training.sweep`, --jobs processes at a time with one CPU thread each (log
in <run>/log.txt), seed by seed (so that every variant has its first seeds
first), then writes <out>/video_shapes.md (budget, per-run FG-ARI / FG-mIoU / TC / MSE and wall
times, mean +- std over seeds, the commands) and one mask grid per variant,
<out>/video_shapes_<variant>.png (seed 0; two rows per test video, frame 0 then frame 1:
input, reconstruction, segmentation, per-slot alpha masks). A run whose workdir already holds
final_metrics.json is not repeated.

`--override KEY=VALUE` (repeatable) passes `--config.KEY=VALUE` to every run; it needs its own
--workdir and --tag (the files become video_shapes<tag>.md and video_shapes<tag>_<variant>.png),
so that the default runs and table stay as they are. E.g. SA-MESH with the step per cost entry:

  python scripts/video_demo.py --variants=sa_mesh --tag=_mesh_per_entry \
      --workdir=workdirs/video_demo_mesh_per_entry \
      --override=model.slot_attention.mesh_lr_per_entry=True \
      --override=model.slot_attention.mesh_lr=0.05
"""
import argparse
import os
import shutil
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import launch  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

# name -> (table name, config arguments)
VARIANTS = {"sa": ("SA", "attention=softmax"),
            "sa_fixed": ("SA fixed noise", "attention=softmax,noise=fixed"),
            "sa_learned": ("SA learned noise", "attention=softmax,noise=learned"),
            "sa_sh": ("SA-SH", "attention=sinkhorn"),
            "sa_mesh": ("SA-MESH", "attention=mesh")}
METRICS = (("fg_ari", "FG-ARI"), ("fg_miou", "FG-mIoU"), ("temporal_consistency", "TC"))


def main_args(variant, seed, a, workdir):
  """The main.py arguments of one run."""
  return [f"--config={sweep.repo_path('configs/shapes_video.py')}:{VARIANTS[variant][1]},"
          f"seed={seed},"
          f"steps={a.steps},batch_size={a.batch_size},width={a.width},slot_size={a.slot_size},"
          f"resolution={a.resolution},kernel_size={a.kernel_size},"
          f"learning_rate={a.learning_rate}",
          f"--workdir={os.path.join(workdir, f'{variant}_{seed}')}",
          f"--config.model.encoder_stride={a.encoder_stride}",
          f"--config.model.decoder_broadcast={a.decoder_broadcast}",
          f"--config.data.eval_split={a.eval_split}"] + launch.override_flags(a.override)


def _launch(runs, a):
  """Runs the missing (variant, seed) runs through the sweep runner, in the given order;
  exits if any failed. Returns {run: final metrics}, each with its process wall time."""
  extra = [f"--config.data.data_dir={a.data_dir}"] if a.data_dir else []
  workdir = lambda r: os.path.join(a.workdir, f"{r[0]}_{r[1]}")
  outcomes = sweep.run_all(
      [sweep.Run(name=f"{v}_{s}", workdir=workdir((v, s)), point={"variant": v}, seed=s,
                 cmd=[sys.executable, sweep.repo_path("main.py"),
                      *main_args(v, s, a, a.workdir), *extra]) for v, s in runs],
      jobs=a.jobs)
  sweep.require_success(outcomes)
  return {r: _result(workdir(r)) for r in runs}


def _result(workdir):
  """final_metrics.json of a run, with its process wall time as `process_wall_s`."""
  result = sweep.read_json(os.path.join(workdir, "final_metrics.json"))
  result["process_wall_s"] = sweep.wall_time(workdir)
  return result


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--resolution", type=int, default=16, help="16 or 32 (shapes_video/RxR)")
  p.add_argument("--width", type=int, default=16, help="conv channels")
  p.add_argument("--kernel_size", type=int, default=3, help="hidden conv kernels")
  p.add_argument("--learning_rate", type=float, default=1e-3)
  p.add_argument("--slot_size", type=int, default=32, help="slot MLP is twice this")
  p.add_argument("--encoder_stride", type=int, default=1)
  p.add_argument("--decoder_broadcast", type=int, default=0,
                 help="side of the broadcast grid; 0 = the full resolution")
  p.add_argument("--eval_split", default="test")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--variants", default="sa,sa_fixed,sa_mesh")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--workdir", default="workdirs/video_demo")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
  p.add_argument("--report_only", action="store_true",
                 help="write the table from the finished runs only, launching nothing")
  launch.add_override_argument(p)
  p.add_argument("--tag", default="", help="suffix of the table and mask-grid file names")
  a = p.parse_args()
  launch.check_overrides(p, a.override, bool(a.tag) and a.workdir != p.get_default("workdir"),
                         "--workdir and --tag")
  seeds = [int(s) for s in a.seeds.split(",")]
  variants = a.variants.split(",")
  for v in variants:
    if v not in VARIANTS:
      raise SystemExit(f"Unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
  os.makedirs(a.workdir, exist_ok=True)
  runs = [(v, s) for s in seeds for v in variants]
  if a.report_only:  # Table of the runs that finished; the others are listed as not run.
    done = lambda r: os.path.exists(os.path.join(a.workdir, f"{r[0]}_{r[1]}", "final_metrics.json"))
    missing = [r for r in runs if not done(r)]
    rows = {r: _result(os.path.join(a.workdir, f"{r[0]}_{r[1]}")) for r in runs if done(r)}
  else:
    missing, rows = [], _launch(runs, a)

  res, k = a.resolution, a.kernel_size
  b = a.decoder_broadcast or res
  lines = [
      f"# Two-frame video object discovery on shapes_video/{res}x{res} (CPU, one small fixed "
      "budget)",
      "", f"Budget per run: {a.steps} steps at batch {a.batch_size} "
      f"({a.steps * a.batch_size / 5000:.2f} epochs of the 5,000 training videos). Model: "
      f"{k}x{k} convs of {a.width} channels (first with stride {a.encoder_stride}), broadcast "
      f"decoder from {b}x{b} up to {res}x{res}, 5 slots of size "
      f"{a.slot_size} (slot MLP {2 * a.slot_size}), 3 iterations, slots of frame 0 initialise "
      f"frame 1; SA-MESH with the cosine cost; fixed noise sigma 0.1. Adam {a.learning_rate:g}, "
      "warm-up over "
      "the first tenth, lr halved once over the run, clipping 0.1. Metrics on the "
      f"`{a.eval_split}` split: FG-ARI and FG-mIoU per frame averaged over the two frames, TC "
      "(share of the objects present in both frames whose matched slot is the same, averaged "
      f"over videos). Seeds {a.seeds}; {a.jobs} runs at a time on a shared 2-core machine, one "
      "CPU thread each; wall time includes start-up, compilation and evaluation.", ""]
  if a.override:
    lines += ["Config changes in every run: " + ", ".join(f"`{o}`" for o in a.override) + ".",
              ""]
  lines += [
      "| variant | seed | FG-ARI (%) | FG-mIoU (%) | TC (%) | test MSE | wall time (s) |",
      "| --- | --- | --- | --- | --- | --- | --- |"]
  for v in variants:
    for s in seeds:
      if (v, s) not in rows:
        lines.append(f"| {VARIANTS[v][0]} | {s} | not run | | | | |")
        continue
      r = rows[v, s]
      e = r["eval"]
      lines.append(f"| {VARIANTS[v][0]} | {s} | {100 * e['fg_ari']:.1f} | "
                   f"{100 * e['fg_miou']:.1f} | {100 * e['temporal_consistency']:.1f} | "
                   f"{e['loss']:.4f} | {r['process_wall_s']:.0f} |")
  lines += ["", "| variant | " + " | ".join(f"{n} (%) mean +- std" for _, n in METRICS) + " |",
            "| --- |" + " --- |" * len(METRICS)]
  for v in variants:
    cells = []
    for key, _ in METRICS:
      values = [100 * rows[v, s]["eval"][key] for s in seeds if (v, s) in rows]
      if not values:
        cells.append("not run")
        continue
      std = statistics.stdev(values) if len(values) > 1 else 0.0
      cells.append(f"{statistics.mean(values):.1f} +- {std:.1f}")
    lines.append(f"| {VARIANTS[v][0]} | " + " | ".join(cells) + " |")
  lines += ["", "(std: sample standard deviation over the seeds that ran; 0.0 with one seed.)"]
  if missing:
    lines += ["", "Not run (the time available ran out): " + ", ".join(
        f"{VARIANTS[v][0]} seed {s}" for v, s in missing) + "."]
  lines += ["",
            f"Mask grids (seed {seeds[0]}, first 4 videos of the evaluation split; two rows per "
            "video, frame 0 then frame 1; columns: input, reconstruction, segmentation, one "
            "alpha mask per slot; a slot keeps its colour in both frames):", ""]
  os.makedirs(a.out, exist_ok=True)
  for v in variants:
    src = os.path.join(a.workdir, f"{v}_{seeds[0]}", "images", f"frames_{a.steps}.png")
    dst = os.path.join(a.out, f"video_shapes{a.tag}_{v}.png")
    if os.path.exists(src):
      shutil.copyfile(src, dst)
      lines.append(f"- {VARIANTS[v][0]}: `{os.path.basename(dst)}`")
  lines += ["", "Reproduce:", "", "```",
            f"python scripts/video_demo.py --steps={a.steps} --batch_size={a.batch_size} "
            f"--resolution={a.resolution} --width={a.width} --kernel_size={a.kernel_size} "
            f"--learning_rate={a.learning_rate:g} "
            f"--slot_size={a.slot_size} --encoder_stride={a.encoder_stride} "
            f"--decoder_broadcast={a.decoder_broadcast} --eval_split={a.eval_split} "
            f"--seeds={a.seeds} --variants={a.variants} --jobs={a.jobs}"
            + "".join(f" --override={o}" for o in a.override)
            + (f" --tag={a.tag} --workdir={a.workdir}" if a.tag else ""), "```", "",
            "One run by hand:", "", "```",
            "python main.py " + " ".join(main_args(variants[0], seeds[0], a,
                                                   "workdirs/video_demo")), "```", ""]
  path = os.path.join(a.out, f"video_shapes{a.tag}.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  print(f"Wrote {path}")


if __name__ == "__main__":
  main()

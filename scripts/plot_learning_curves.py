r"""Learning curves (mean +- sample std over seeds) of one logged scalar from finished runs.

Each --curve is "PANEL|LABEL|GLOB": the runs whose workdirs match GLOB are the seeds of one
line called LABEL in the subplot PANEL (panels and lines keep the order given). Example, the
MESH step size at two noise levels of the random-objects task:

  python scripts/plot_learning_curves.py --tag=eval/rmse_over_sigma --log_y \
      --curve="sigma = 0.1|mesh_lr 8|workdirs/ro_lr8/mesh_sigma0.1_seed*" \
      --curve="sigma = 0.1|per entry 0.05|workdirs/ro_entry/mesh_sigma0.1_seed*" \
      --output=benchmarks/results/random_objects_curves.png
"""
import argparse
import collections
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slot_ot_jax.analysis import event_files  # pylint: disable=g-import-not-at-top


def parse_curves(specs):
  """Returns {panel: {label: [workdirs]}} from "PANEL|LABEL|GLOB" strings."""
  panels = collections.OrderedDict()
  for spec in specs:
    parts = spec.split("|")
    if len(parts) != 3:
      raise ValueError(f"--curve {spec!r} is not PANEL|LABEL|GLOB.")
    panel, label, pattern = parts
    workdirs = sorted(glob.glob(pattern))
    if not workdirs:
      raise ValueError(f"--curve {spec!r}: no workdir matches {pattern!r}.")
    panels.setdefault(panel, collections.OrderedDict())[label] = workdirs
  return panels


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--curve", action="append", required=True, help="PANEL|LABEL|GLOB")
  parser.add_argument("--tag", required=True, help="scalar tag, e.g. eval/rmse_over_sigma")
  parser.add_argument("--output", required=True, help="PNG path")
  parser.add_argument("--ylabel", default=None)
  parser.add_argument("--log_y", action="store_true")
  args = parser.parse_args(argv)
  try:
    panels = parse_curves(args.curve)
  except ValueError as e:
    parser.error(str(e))
  event_files.plot_curves({}, args.tag, args.output, ylabel=args.ylabel, log_y=args.log_y,
                          panels=panels)
  for panel, groups in panels.items():
    for label, workdirs in groups.items():
      steps, values = event_files.curves_over_seeds(workdirs, args.tag)
      row = ", ".join(f"{s}: {m:.3f}" for s, m in zip(steps, values.mean(axis=0)))
      print(f"{panel} | {label} (n={len(workdirs)}) mean: {row}")
  print(f"Wrote {args.output}")


if __name__ == "__main__":
  main()

r"""XLA:CPU options against the object-discovery step, each in its own process (not a test).

  python benchmarks/xla_flag_study.py --official=PATH_TO_MESH_CLONE [--models=shapes]
      [--attentions=softmax] [--repeats=5] [--sets=default,onednn,...]
      [--out=benchmarks/results/xla_flags.md]

XLA reads its flags once per process, so every flag set runs `benchmarks/step_profile.py` in a
fresh process with XLA_FLAGS set. The official PyTorch step runs in the same process and
rounds, so the ratio official / ours of each row is measured side by side and comparable
across rows even when the load changes between them; the absolute times are not.
Flag sets (FLAG_SETS): XLA's oneDNN and XNNPACK paths and its library-fusion passes for
convolutions. A flag only becomes the trainer's CPU default if it is at least as fast on
both host kinds this project runs on (with and without AVX-512); see docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

FLAG_SETS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_conv_fusion":
        "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
    "xnn_conv_fusion":
        "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
    "ynn_conv_fusion":
        "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
}
_ROW = re.compile(r"^\| (step|encoder|slot attention|decoder fwd|decoder|composite\+loss|"
                  r"optimizer) \| ([\d.]+) \| ([\d.]+) \|$")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--official", required=True, help="local clone of github.com/davzha/MESH")
  p.add_argument("--models", default="shapes")
  p.add_argument("--attentions", default="softmax")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--sets", default=",".join(FLAG_SETS))
  p.add_argument("--out", default=None)
  a = p.parse_args()
  sets = a.sets.split(",")
  for s in sets:
    if s not in FLAG_SETS:
      p.error(f"unknown flag set {s!r}; valid: {', '.join(FLAG_SETS)}")
  import train_speed

  from slot_ot_jax.training import host
  lines = host.host_lines() + [
      train_speed.command_line("xla_flag_study.py"),
      "Each row: its own process (XLA_FLAGS below, plus one thread); medians of "
      f"{a.repeats} rounds; ratio = official / ours in the same rounds.", ""]
  for model in a.models.split(","):
    for attention in a.attentions.split(","):
      lines += [f"### {model}, {attention}", "",
                "| flags | ours step ms | official step ms | official / ours | ours encoder | "
                "ours decoder (fwd + bwd) | official decoder |", "|---" * 7 + "|"]
      for name in sets:
        env = dict(os.environ, XLA_FLAGS=FLAG_SETS[name])
        cmd = [sys.executable, os.path.join(HERE, "step_profile.py"), f"--models={model}",
               f"--attentions={attention}", "--variants=fold", f"--repeats={a.repeats}",
               f"--official={a.official}"]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
                for m in map(_ROW.match, run.stdout.splitlines()) if m}
        if run.returncode or "step" not in rows:
          tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
          lines.append(f"| {name} | failed: {tail[0][:80]} | | | | | |")
        else:
          ours, official = rows["step"]
          lines.append(f"| {name} `{FLAG_SETS[name] or '(none)'}` | {ours:.1f} | "
                       f"{official:.1f} | {official / ours:.2f}x | {rows['encoder'][0]:.1f} | "
                       f"{rows['decoder'][0]:.1f} | {rows['decoder'][1]:.1f} |")
        print(lines[-1], flush=True)
      lines.append("")
  train_speed.emit(lines, a.out)


if __name__ == "__main__":
  main()

r"""Object-discovery training-step speed: ours (JAX) beside the official PyTorch code (not a test).

  python benchmarks/train_speed.py --official=PATH_TO_MESH_CLONE [--models=multi_dsprites,shapes]
      [--attentions=softmax,sinkhorn,mesh] [--repeats=10] [--warmup=2] [--threads=1]
      [--batch=N] [--out=benchmarks/results/train_speed.md]

PATH_TO_MESH_CLONE is a local clone of the official MESH repository
(https://github.com/davzha/MESH; its slot_attention.py holds the Slot Attention
object-discovery model with the softmax, Sinkhorn and MESH attentions, mesh.py the OT code);
it is imported from there, never copied here. The official column needs PyTorch and einops
(`pip install -e .[bench]`); without them, or without --official, only our column is timed
and the reason is printed.

Models (random images in [-1, 1], one CPU device, float32):
  multi_dsprites  configs/multi_dsprites.py: 64x64, batch 64, 4 x 5x5 convs of 32 channels,
                  full-resolution broadcast decoder, 6 slots of 64, slot MLP 128, 3 iterations.
  shapes          the model of scripts/object_discovery_demo.py (configs/shapes.py with its
                  defaults): 32x32, batch 16, 16 channels, 4 slots of 32, slot MLP 64.
Attentions: softmax (SA; official "original_slot_attention", dot product), sinkhorn (SA-SH;
5 iterations, Euclidean cost, learned marginals scaled by K) and mesh (SA-MESH; 4 MESH steps of
5 Sinkhorn iterations, lr 8).

One training step is what each side does per batch: forward, MSE reconstruction loss,
backward, global-norm gradient clipping at 0.1 and an Adam update. Ours is the trainer's
jitted `train_step` (`slot_ot_jax/training/train.py`); the official step is the body of its
Lightning `training_step` without the training-time ARI metric and logging, i.e. net(x), F.mse_loss,
backward, clip_grad_norm_(0.1), Adam.step. Timing: `--warmup` untimed steps each, then
`--repeats` rounds in which both sides run one step, the order alternating between rounds
(interleaved, so load changes on a shared machine hit both); medians and the ratio
official / ours. Both sides use `--threads` CPU threads (XLA intra-op threads and
torch.set_num_threads). The load average is printed before and after.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slot_ot_jax.training import host  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_URL = "https://github.com/davzha/MESH"
OFFICIAL_FILES = ("slot_attention.py", "mesh.py")
MODELS = ("multi_dsprites", "shapes")
ATTENTIONS = ("softmax", "sinkhorn", "mesh")
PAPER_NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "mesh": "SA-MESH"}
OFFICIAL_ATTENTION = {"softmax": "original_slot_attention", "sinkhorn": "sinkhorn",
                      "mesh": "mesh"}


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--official", default=None,
                 help=f"local clone of {OFFICIAL_URL} (holding {', '.join(OFFICIAL_FILES)})")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--attentions", default=",".join(ATTENTIONS))
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--threads", type=int, default=1, help="CPU threads of each side")
  p.add_argument("--out", default=None, help="also write the table (markdown) here")
  p.add_argument("--batch", type=int, default=0,
                 help="batch size of every model (default: each model's own, 64 / 16)")
  add_allocator_argument(p)
  a = p.parse_args()
  for name, value, valid in (("model", a.models, MODELS), ("attention", a.attentions, ATTENTIONS)):
    for item in value.split(","):
      if item not in valid:
        p.error(f"unknown {name} {item!r}; valid: {', '.join(valid)}")
  if a.repeats < 1 or a.warmup < 0 or a.threads < 1 or a.batch < 0:
    p.error("--repeats and --threads must be >= 1, --warmup and --batch >= 0")
  return a


def add_allocator_argument(p: argparse.ArgumentParser) -> None:
  p.add_argument("--retain_freed_memory", action=argparse.BooleanOptionalAction, default=True,
                 help="keep freed heap memory in the process, as main.py does on CPU "
                      "(slot_ot_jax/training/allocator.py); process-wide, so both sides")


def apply_allocator(a) -> str:
  """Applies --retain_freed_memory; returns the line saying what the process does."""
  from slot_ot_jax.training import allocator  # pylint: disable=g-import-not-at-top
  retained = a.retain_freed_memory and allocator.retain_freed_memory()
  return ("Freed heap memory: " + ("kept in the process (both sides)" if retained else
                                   "returned to the kernel (glibc defaults)"))


def _limit_threads(threads: int) -> None:
  """Before jax is imported: XLA's CPU client with `threads` intra-op threads."""
  flags = os.environ.get("XLA_FLAGS", "")
  if threads == 1:
    flags += " --xla_cpu_multi_thread_eigen=false"
  os.environ["XLA_FLAGS"] = f"{flags} intra_op_parallelism_threads={threads}".strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ["OMP_NUM_THREADS"] = str(threads)


# ------------------------------------------------------------------------------ model setups
def model_setup(model: str, attention: str, batch: int = 0) -> dict:
  """Our locked config and the matching official hyper-parameters (batch > 0 overrides)."""
  sys.path.insert(0, REPO)
  from configs import multi_dsprites  # pylint: disable=g-import-not-at-top
  from configs import shapes  # pylint: disable=g-import-not-at-top
  if model == "multi_dsprites":
    config = multi_dsprites.get_config(f"attention={attention}")
  else:  # scripts/object_discovery_demo.py defaults: width 16, slot 32 (MLP 64), batch 16.
    config = shapes.get_config(f"attention={attention},width=16,batch_size=16")
    config.model.slot_attention.slot_size = 32
    config.model.slot_attention.mlp_size = 64
  if batch:
    config.batch_size = batch
  sa = config.model.slot_attention
  width = int(config.model.width) or 32  # Multi-dSprites: the paper's 32 channels.
  return dict(config=config, resolution=int(config.data.resolution), width=width,
              batch=int(config.batch_size), slots=int(sa.num_slots),
              slot_size=int(sa.slot_size), mlp_size=int(sa.mlp_size),
              iters=int(sa.num_iters), sinkhorn_iters=int(sa.sinkhorn_iters),
              mesh_steps=int(sa.mesh_steps), mesh_lr=float(sa.mesh_lr))


class Ours:
  """The trainer's jitted train step on one device."""

  def __init__(self, setup: dict, seed: int = 0):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top
    config = setup["config"]
    self._jax = jax
    self.trainer = train.Trainer(config, tasks.get_task(config), jax.devices()[:1])
    self.state = self.trainer.create_state()
    res = setup["resolution"]
    image = np.random.default_rng(seed).uniform(-1, 1, (setup["batch"], res, res, 3))
    self.batch = self.trainer.global_batch({"image": image.astype(np.float32)})

  def step(self) -> float:
    self.state, metrics, _ = self.trainer.train_step(self.state, self.batch)
    return float(metrics.loss.compute())  # Waits for the step.


class _AttrDict(dict):
  """The official model reads `mesh_args` both as a mapping and by attribute."""
  __getattr__ = dict.__getitem__


def load_official(path: str):
  """Imports the official slot_attention module from `path`; raises with the reason."""
  missing = [f for f in OFFICIAL_FILES if not os.path.isfile(os.path.join(path, f))]
  if missing:
    raise FileNotFoundError(
        f"{path} lacks {', '.join(missing)}: --official must be a local clone of "
        f"{OFFICIAL_URL} (git clone {OFFICIAL_URL}).")
  sys.path.insert(0, os.path.abspath(path))
  import slot_attention  # pylint: disable=g-import-not-at-top,import-error
  return slot_attention


class Official:
  """SlotAttentionObjectDiscovery of the official code with its config's hyper-parameters."""

  def __init__(self, module, setup: dict, attention: str, seed: int = 0):
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    self._torch, self._F = torch, F
    torch.manual_seed(seed)
    res, width = setup["resolution"], setup["width"]
    slot_attention = dict(
        d_in=width, d_slot=setup["slot_size"], n_slots=setup["slots"],
        d_mlp=setup["mlp_size"], attention_type=OFFICIAL_ATTENTION[attention],
        n_sa_iters=setup["iters"],
        pairwise_distance="dot_prod" if attention == "softmax" else "l2",
        temperature=1.0, scale_marginals=setup["slots"], scale_cost=1.0,
        n_sh_iters=setup["sinkhorn_iters"], learn_mesh_lr=False, mesh_lr=setup["mesh_lr"],
        init_slot_method="learned_random", detach_slots=False,
        mesh_args=_AttrDict(n_sh_iters=setup["sinkhorn_iters"], reuse_u_v=True,
                            n_mesh_iters=setup["mesh_steps"]))
    self.net = module.SlotAttentionObjectDiscovery(
        encoder=dict(d_hid=width, d_out=width, resolution=[res, res]),
        decoder=dict(broadcast_resolution=[res, res], d_slot=setup["slot_size"], d_hid=width),
        slot_attention=slot_attention)
    self.net.train()
    self.opt = torch.optim.Adam(self.net.parameters(), lr=4e-4)
    gen = torch.Generator().manual_seed(seed)
    self.image = torch.rand((setup["batch"], 3, res, res), generator=gen) * 2 - 1

  def step(self) -> float:
    self.opt.zero_grad(set_to_none=True)
    reconstruction = self.net(self.image)[0]
    loss = self._F.mse_loss(reconstruction, self.image)
    loss.backward()
    self._torch.nn.utils.clip_grad_norm_(self.net.parameters(), 0.1)
    self.opt.step()
    return float(loss.item())


def official_status(a) -> tuple[object | None, str]:
  """(official module or None, a line saying which official code runs or why none)."""
  if not a.official:
    return None, (f"official column skipped: no --official path (a local clone of "
                  f"{OFFICIAL_URL})")
  try:
    import einops  # noqa: F401  (the official code needs it)
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return None, (f"official column skipped: {e.name} is not installed (pip install -e "
                  f".[bench] installs PyTorch and einops)")
  torch.set_num_threads(a.threads)
  torch.set_num_interop_threads(a.threads)
  module = load_official(a.official)
  return module, f"official: the clone given by --official, torch {torch.__version__}"


def _time(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(ours: Ours, official: Official | None, warmup: int, repeats: int):
  """Median seconds per step of each side, interleaved; None for a missing side."""
  for _ in range(warmup):
    ours.step()
    if official is not None:
      official.step()
  times = {"ours": [], "official": []}
  for r in range(repeats):
    order = ["ours", "official"] if r % 2 == 0 else ["official", "ours"]
    for side in order:
      if side == "ours":
        times["ours"].append(_time(ours.step))
      elif official is not None:
        times["official"].append(_time(official.step))
  return {k: (statistics.median(v) if v else None) for k, v in times.items()}


def command_line(script: str) -> str:
  """"Command: python benchmarks/SCRIPT ARGS" with local paths (--official, --out) as PATH."""
  return f"Command: python benchmarks/{script} " + " ".join(
      arg.split("=")[0] + "=PATH" if arg.startswith(("--official=", "--out=")) else arg
      for arg in sys.argv[1:])


def emit(lines: list[str], out: str | None) -> None:
  """Prints the report and, with `out`, writes it there too."""
  text = "\n".join(lines)
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text + "\n")


def main():
  a = _parse()
  _limit_threads(a.threads)
  allocation = apply_allocator(a)
  import jax  # pylint: disable=g-import-not-at-top
  module, status = official_status(a)
  load_before = os.getloadavg()
  header = host.host_lines() + [
      f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
      f"jax {jax.__version__}; {a.threads} thread(s) per side; load average before: "
      + ", ".join(f"{x:.2f}" for x in load_before),
      status,
      allocation,
  ]
  print("\n".join(header), flush=True)
  rows = []
  for model in a.models.split(","):
    for attention in a.attentions.split(","):
      setup = model_setup(model, attention, a.batch)
      t0 = time.perf_counter()
      ours = Ours(setup)
      official = Official(module, setup, attention) if module is not None else None
      result = measure(ours, official, a.warmup, a.repeats)
      ratio = (result["official"] / result["ours"]) if result["official"] else None
      row = (model, PAPER_NAMES[attention], setup, result, ratio, os.getloadavg()[0])
      rows.append(row)
      print(f"{model} {PAPER_NAMES[attention]}: ours {1e3 * result['ours']:.1f} ms, official "
            + (f"{1e3 * result['official']:.1f} ms, ratio {ratio:.2f}x"
               if ratio else "-") + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
      del ours, official
  load_after = os.getloadavg()
  lines = header + [
      command_line("train_speed.py"),  # Local paths left out.
      f"Medians of {a.repeats} interleaved steps after {a.warmup} warm-up steps each; "
      "ratio = official / ours (> 1: ours faster).", "",
      "| model (image, batch) | attention | ours (JAX) | official (PyTorch) | ratio |"
      " load (1 min) |",
      "| --- | --- | --- | --- | --- | --- |"]
  for model, name, setup, result, ratio, load in rows:
    res = setup["resolution"]
    lines.append(
        f"| {model} ({res}x{res}, {setup['batch']}) | {name} | {1e3 * result['ours']:.1f} ms | "
        + (f"{1e3 * result['official']:.1f} ms | {ratio:.2f}x" if ratio else "- | -")
        + f" | {load:.1f} |")
  lines.append("")
  lines.append("Load average after: " + ", ".join(f"{x:.2f}" for x in load_after))
  emit(lines, a.out)


if __name__ == "__main__":
  main()

r"""Records outputs of the official PyTorch MESH code for parity tests (needs PyTorch + einops).

  python scripts/record_official.py --official=PATH_TO_MESH_CLONE \
      --out=tests/data/official_mesh_outputs.npz

PATH_TO_MESH_CLONE is a local clone of https://github.com/davzha/MESH; its `slot_attention.py`
(and the `mesh.py` it imports) is imported from there, never copied here. PyTorch and einops
come with `pip install -e .[bench]`.

Two kinds of cases are recorded, each under its own key prefix (see tests/data/README.md):

* `sa_<variant>/`: the official `SlotAttentionVariant` on random set inputs, for the variants
  softmax (SA, "original_slot_attention" with dot-product logits), sinkhorn (SA-SH, l2 cost),
  mesh (SA-MESH, l2 cost, fixed step 8 as in the official config) and mesh_learned_lr (SA-MESH
  with the learned step, initialised by the official code), at input scales 1 and 0.01
  (`x1/`, `x0.01/`; mesh_learned_lr at scale 1 only).
* `ae_<variant>/`: the official `SlotAttentionObjectDiscovery` autoencoder (Multi-dSprites
  architecture, narrowed) on random 8x8 images, for softmax and mesh.

Parameters come from PyTorch's default initialisation under a fixed torch seed. The random
draws of the official forward (slot initialisation noise, then MESH noise) are the tensors
that `torch.manual_seed(NOISE_SEED)` followed by the forward would draw; they are fed through a
stand-in for the module's `torch` global so that the exact tensors are known, and the script
checks that a plain forward under that seed gives bit-identical slots. Intermediate values
come from forward hooks and thin recording wrappers around the official functions; nothing of
the official computation is re-implemented here.

The official Sinkhorn and distances are TorchScript functions. TorchScript's optimising
executor switches, after the first call, to its own autodiff for the gradient that MESH takes
inside the forward, which moves SA-MESH slots by about 1e-6 from call to call; everything here
runs under `torch.jit.optimized_execution(False)`, which gives the first-call (= eager
PyTorch, as with PYTORCH_JIT=0) numerics on every call.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys

import numpy as np

OFFICIAL_URL = "https://github.com/davzha/MESH"
OFFICIAL_FILES = ("slot_attention.py", "mesh.py")

PARAM_SEED = 0  # torch.manual_seed right before each module is built.
NOISE_SEED = 1  # torch.manual_seed whose first draws are the forward's noise.
DATA_SEED = 2  # torch.Generator for inputs, images and loss weights.

# Set-input cases: d_in differs from d_slot and d_mlp so that a transposed weight shows.
SA_SHAPES = dict(batch=2, num_inputs=16, d_in=12, d_slot=16, d_mlp=32, n_slots=4, iters=3)
SA_SCALES = (1.0, 0.01)
# Autoencoder cases: 8x8 RGB images (64 inputs, more than 25: torch.cdist takes its matmul
# path as at full size), 4 CNN channels, 4 slots of 8, slot MLP 16.
AE_SHAPES = dict(batch=2, resolution=8, width=4, d_slot=8, d_mlp=16, n_slots=4, iters=3)

SINKHORN_ITERS = 5  # Official config: n_sh_iters 5.
MESH_STEPS = 4  # Official config: mesh_args.n_mesh_iters 4.
MESH_LR = 8.0  # Official config: mesh_lr 8, learn_mesh_lr False.

OFFICIAL_ATTENTION = {"softmax": "original_slot_attention", "sinkhorn": "sinkhorn",
                      "mesh": "mesh", "mesh_learned_lr": "mesh"}


class _AttrDict(dict):
  """The official model reads `mesh_args` both as a mapping and by attribute."""
  __getattr__ = dict.__getitem__


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--official", required=True,
                 help=f"local clone of {OFFICIAL_URL} (holding {', '.join(OFFICIAL_FILES)})")
  p.add_argument("--out", default="tests/data/official_mesh_outputs.npz")
  return p.parse_args(argv)


def load_official(path: str):
  missing = [f for f in OFFICIAL_FILES if not os.path.isfile(os.path.join(path, f))]
  if missing:
    raise FileNotFoundError(f"{path} lacks {', '.join(missing)}: --official must be a local "
                            f"clone of {OFFICIAL_URL}.")
  sys.path.insert(0, os.path.abspath(path))
  import slot_attention  # pylint: disable=g-import-not-at-top,import-error
  return slot_attention


def git_commit(path: str) -> str:
  try:
    out = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=True,
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", path, "status", "--porcelain"], check=True,
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def sa_kwargs(variant: str, d_in: int, d_slot: int, d_mlp: int, n_slots: int,
              iters: int) -> dict:
  """Constructor kwargs of the official SlotAttentionVariant (all of them are required)."""
  return dict(
      d_in=d_in, d_slot=d_slot, n_slots=n_slots, d_mlp=d_mlp,
      attention_type=OFFICIAL_ATTENTION[variant], n_sa_iters=iters,
      pairwise_distance="dot_prod" if variant == "softmax" else "l2",
      temperature=1.0, scale_marginals=float(n_slots), scale_cost=1.0,
      n_sh_iters=SINKHORN_ITERS, learn_mesh_lr=variant == "mesh_learned_lr", mesh_lr=MESH_LR,
      init_slot_method="learned_random", detach_slots=False,
      mesh_args=_AttrDict(n_sh_iters=SINKHORN_ITERS, reuse_u_v=True, n_mesh_iters=MESH_STEPS))


# ---------------------------------------------------------------------------------- recording
class _TorchStandIn:
  """Stands in for the `torch` global of the official module during one forward.

  `randn` hands out the prepared noise tensors in order (checking their shapes) and `matmul`
  (called once per iteration, on the transposed attention) records the attention.
  Everything else is the real torch.
  """

  def __init__(self, torch, noises, record):
    self._torch, self._noises, self._record = torch, list(noises), record

  def __getattr__(self, name):
    return getattr(self._torch, name)

  def randn(self, *size, **kwargs):
    shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    if not self._noises:
      raise RuntimeError(f"unexpected extra torch.randn{shape} in the official forward")
    noise = self._noises.pop(0)
    if tuple(noise.shape) != tuple(shape):
      raise RuntimeError(f"official forward drew {shape}, prepared {tuple(noise.shape)}")
    dtype = kwargs.get("dtype")
    return noise.clone() if dtype is None else noise.clone().to(dtype)

  def matmul(self, a, b):
    self._record.setdefault("attn", []).append(a.transpose(1, 2))
    return self._torch.matmul(a, b)


@contextlib.contextmanager
def recording(module, sa, noises):
  """Hooks the official SlotAttentionVariant `sa`; yields the dict the records go into."""
  import torch  # pylint: disable=g-import-not-at-top
  rec: dict = {}

  def add(name, value):
    rec.setdefault(name, []).append(value)

  stand_in = _TorchStandIn(torch, noises, rec)
  handles = [
      sa.norm_slots.register_forward_pre_hook(lambda m, i: add("slots_in", i[0])),
      sa.gru.register_forward_pre_hook(lambda m, i: add("updates", i[0])),
  ]
  saved = {"torch": module.torch, "sinkhorn": module.sinkhorn,
           "minimize_entropy_of_sinkhorn": module.minimize_entropy_of_sinkhorn}
  distance = sa.pairwise_distance

  def recorded_distance(x, y):
    out = distance(x, y)
    add("cost", sa.scale_cost * out)
    return out

  def recorded_sinkhorn(cost, a, b, **kwargs):
    out = saved["sinkhorn"](cost, a, b, **kwargs)
    add("a", a)
    add("b", b)
    return out

  def recorded_mesh(cost, a, b, **kwargs):
    out = saved["minimize_entropy_of_sinkhorn"](cost, a, b, **kwargs)
    add("mesh_cost", out[0])
    return out

  module.torch = stand_in
  module.sinkhorn = recorded_sinkhorn
  module.minimize_entropy_of_sinkhorn = recorded_mesh
  sa.pairwise_distance = recorded_distance
  try:
    yield rec
    if stand_in._noises:  # pylint: disable=protected-access
      raise RuntimeError("the official forward drew fewer noise tensors than prepared")
  finally:
    module.torch = saved["torch"]
    module.sinkhorn = saved["sinkhorn"]
    module.minimize_entropy_of_sinkhorn = saved["minimize_entropy_of_sinkhorn"]
    sa.pairwise_distance = distance
    for h in handles:
      h.remove()


def forward_noise(torch, batch, num_inputs, d_slot, n_slots, mesh):
  """The draws of the official forward right after torch.manual_seed(NOISE_SEED), in order."""
  torch.manual_seed(NOISE_SEED)
  noises = [torch.randn((batch, n_slots, d_slot))]  # slot initialisation
  if mesh:
    noises.append(torch.randn(batch, num_inputs, n_slots))  # MESH cost perturbation
  return noises


def _np(t):
  return t.detach().cpu().numpy().astype(np.float32)


def _stack(records):
  return np.stack([_np(t) for t in records])


def params_and_buffers(net, prefix, out):
  names = set()
  for name, p in net.named_parameters():
    out[f"{prefix}param/{name}"] = _np(p)
    names.add(name)
  for name, b in net.named_buffers():
    out[f"{prefix}buffer/{name}"] = _np(b)
  return names


def iteration_records(rec, out, prefix, iters, batch, n_slots, d_slot, mesh, ot):
  """Per-iteration records of one official SlotAttentionVariant forward."""
  out[prefix + "cost_per_iter"] = _stack(rec["cost"])
  out[prefix + "attn_per_iter"] = _stack(rec["attn"])
  out[prefix + "updates_per_iter"] = np.stack(
      [_np(u).reshape(batch, n_slots, d_slot) for u in rec["updates"]])
  if ot:
    out[prefix + "a"] = _np(rec["a"][0])
    out[prefix + "b_per_iter"] = _stack(rec["b"])
  if mesh:
    out[prefix + "mesh_cost_per_iter"] = _stack(rec["mesh_cost"])
  for name in ("cost", "attn", "updates", "slots_in"):
    assert len(rec[name]) == iters, (name, len(rec[name]))


# -------------------------------------------------------------------------- set-input cases
def record_sa(module, torch, variant, data_gen, out):
  s = SA_SHAPES
  kwargs = sa_kwargs(variant, s["d_in"], s["d_slot"], s["d_mlp"], s["n_slots"], s["iters"])
  mesh, ot = variant.startswith("mesh"), variant != "softmax"
  prefix = f"sa_{variant}/"
  torch.manual_seed(PARAM_SEED)
  sa = module.SlotAttentionVariant(**kwargs)
  sa.train()
  out[prefix + "kwargs"] = np.array(json.dumps(kwargs, sort_keys=True))
  names = params_and_buffers(sa, prefix, out)
  noises = forward_noise(torch, s["batch"], s["num_inputs"], s["d_slot"], s["n_slots"], mesh)
  out[prefix + "slot_noise"] = _np(noises[0])
  if mesh:
    out[prefix + "mesh_noise"] = _np(noises[1])
  base = torch.randn((s["batch"], s["num_inputs"], s["d_in"]), generator=data_gen)
  weight = torch.randn((s["batch"], s["n_slots"], s["d_slot"]), generator=data_gen)
  out[prefix + "loss_weight"] = _np(weight)

  for scale in SA_SCALES if variant != "mesh_learned_lr" else SA_SCALES[:1]:
    sp = f"{prefix}x{scale:g}/"
    inputs = (scale * base).clone().requires_grad_(True)
    sa.zero_grad(set_to_none=True)
    with recording(module, sa, noises) as rec:
      slots = sa(inputs)
    loss = (slots * weight).sum()
    loss.backward()
    # A plain forward under the noise seed draws the same noise: bit-identical slots.
    torch.manual_seed(NOISE_SEED)
    with torch.no_grad():
      plain = sa(inputs.detach())
    if not torch.equal(plain, slots.detach()):
      raise RuntimeError(f"{sp}: recorded forward differs from the plain official forward")
    out[sp + "inputs"] = _np(inputs)
    out[sp + "slots_per_iter"] = np.concatenate(
        [_stack(rec["slots_in"]), _np(slots)[None]])
    iteration_records(rec, out, sp, s["iters"], s["batch"], s["n_slots"], s["d_slot"],
                      mesh, ot)
    out[sp + "slots"] = _np(slots)
    out[sp + "loss"] = np.float32(loss.item())
    out[sp + "grad_inputs"] = _np(inputs.grad)
    for name, p in sa.named_parameters():
      assert name in names
      out[f"{sp}grad/{name}"] = _np(p.grad) if p.grad is not None else np.zeros_like(_np(p))


# ------------------------------------------------------------------------- autoencoder cases
def record_ae(module, torch, variant, data_gen, out):
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  s = AE_SHAPES
  res, width = s["resolution"], s["width"]
  mesh = variant.startswith("mesh")
  prefix = f"ae_{variant}/"
  kwargs = dict(
      encoder=dict(d_hid=width, d_out=width, resolution=[res, res]),
      decoder=dict(d_slot=s["d_slot"], d_hid=width, broadcast_resolution=[res, res]),
      slot_attention=sa_kwargs(variant, width, s["d_slot"], s["d_mlp"], s["n_slots"],
                               s["iters"]))
  torch.manual_seed(PARAM_SEED)
  net = module.SlotAttentionObjectDiscovery(**kwargs)
  net.train()
  out[prefix + "kwargs"] = np.array(json.dumps(kwargs, sort_keys=True))
  params_and_buffers(net, prefix, out)
  noises = forward_noise(torch, s["batch"], res * res, s["d_slot"], s["n_slots"], mesh)
  out[prefix + "slot_noise"] = _np(noises[0])
  if mesh:
    out[prefix + "mesh_noise"] = _np(noises[1])
  images = torch.rand((s["batch"], 3, res, res), generator=data_gen) * 2 - 1
  images.requires_grad_(True)
  weight = torch.randn((s["batch"], 3, res, res), generator=data_gen)
  out[prefix + "loss_weight"] = _np(weight)
  enc = []
  handle = net.encoder.register_forward_hook(lambda m, i, o: enc.append(o))
  try:
    with recording(module, net.slot_attention, noises) as rec:
      recon, rgb, masks, slots = net(images)
  finally:
    handle.remove()
  loss = (recon * weight).sum()
  loss.backward()
  torch.manual_seed(NOISE_SEED)
  with torch.no_grad():
    plain = net(images.detach())
  if not all(torch.equal(x, y.detach()) for x, y in zip(plain, (recon, rgb, masks, slots))):
    raise RuntimeError(f"{prefix}: recorded forward differs from the plain official forward")
  out[prefix + "images"] = _np(images)
  out[prefix + "encoder_out"] = _np(enc[0])
  out[prefix + "slots_per_iter"] = np.concatenate([_stack(rec["slots_in"]), _np(slots)[None]])
  iteration_records(rec, out, prefix, s["iters"], s["batch"], s["n_slots"], s["d_slot"],
                    mesh, variant != "softmax")
  out[prefix + "slots"] = _np(slots)
  out[prefix + "reconstruction"] = _np(recon)
  out[prefix + "rgb"] = _np(rgb)
  out[prefix + "masks"] = _np(masks)
  out[prefix + "loss"] = np.float32(loss.item())
  out[prefix + "mse"] = np.float32(F.mse_loss(recon, images).item())  # Training loss, no grads.
  out[prefix + "grad_images"] = _np(images.grad)
  for name, p in net.named_parameters():
    out[f"{prefix}grad/{name}"] = _np(p.grad) if p.grad is not None else np.zeros_like(_np(p))


def main(argv=None):
  a = parse_args(argv)
  import einops  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  torch.set_default_dtype(torch.float32)
  module = load_official(a.official)
  out: dict = {}
  data_gen = torch.Generator().manual_seed(DATA_SEED)
  with torch.jit.optimized_execution(False):
    for variant in ("softmax", "sinkhorn", "mesh", "mesh_learned_lr"):
      record_sa(module, torch, variant, data_gen, out)
    for variant in ("softmax", "mesh"):
      record_ae(module, torch, variant, data_gen, out)
  meta = dict(
      official_repo=OFFICIAL_URL, official_commit=git_commit(a.official),
      torch_version=torch.__version__, einops_version=einops.__version__,
      seeds=json.dumps(dict(param=PARAM_SEED, noise=NOISE_SEED, data=DATA_SEED)),
      torchscript="torch.jit.optimized_execution(False): eager numerics",
      sa_shapes=json.dumps(SA_SHAPES), ae_shapes=json.dumps(AE_SHAPES),
      sa_loss="sum(slots * loss_weight)", ae_loss="sum(reconstruction * loss_weight)",
      command="python scripts/record_official.py --official=PATH_TO_MESH_CLONE "
              f"--out={a.out}")
  for k, v in meta.items():
    out[f"meta/{k}"] = np.array(v)
  for k, v in out.items():
    if v.dtype.kind == "f" and v.dtype != np.float32:
      raise TypeError(f"{k} is {v.dtype}")
    if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
      raise ValueError(f"{k} is not finite")
  os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
  np.savez_compressed(a.out, **out)
  for k in sorted(out):
    v = out[k]
    print(f"{k:60s} {str(v.dtype):8s} {tuple(v.shape)}"
          + (f"  {str(v)[:90]}" if v.dtype.kind == "U" else ""))
  print(f"{len(out)} arrays, {sum(v.nbytes for v in out.values()) / 1024:.0f} KiB raw, "
        f"{os.path.getsize(a.out) / 1024:.0f} KiB on disk: {a.out}")


if __name__ == "__main__":
  main()

r"""Where the object-discovery training step spends its time: ours (JAX) piece by piece beside
the official PyTorch code's same pieces (not a test).

  python benchmarks/step_profile.py [--official=PATH_TO_MESH_CLONE] [--models=shapes]
      [--attentions=softmax,mesh] [--repeats=7] [--threads=1] [--variants=fold,nofold]
      [--out=benchmarks/results/step_profile.md]

Models and attentions as in benchmarks/train_speed.py (the same configs, batch and random
images). Pieces, each jitted on its own (ours) or run eagerly (official), one training batch:

  step            the whole training step (the trainer's jitted train_step; official:
                  forward, MSE, backward, clip_grad_norm_(0.1), Adam)
  encoder         forward + backward of the CNN encoder (gradient of a fixed random linear
                  function of its output, for the parameters and nothing else)
  slot attention  forward + backward of the slot attention on the encoder's features
                  (gradients for its parameters and the features)
  decoder fwd     the slot-wise broadcast decoder's forward on the B K slots
  decoder         its forward + backward (gradients for its parameters and the slots)
  composite+loss  softmax over slots, alpha compositing and the MSE, forward + backward
  optimizer       gradient clipping and the Adam update of all parameters

The pieces overlap the step but are not all of it (ours: the jit boundaries between pieces
are gone inside the step, so their sum can differ from it either way). Ours is timed per
variant: "fold" is the decoder as configured (model.fold_broadcast=True: the first layer
computed without the broadcast copies), "nofold" broadcasts and convolves as the reference
does. Timing: --repeats rounds, each running every piece of every side once, the order of the
sides alternating; medians. The host is printed with the results.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PIECES = ("step", "encoder", "slot attention", "decoder fwd", "decoder", "composite+loss",
          "optimizer")
VARIANTS = ("fold", "nofold")


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--official", default=None, help="local clone of github.com/davzha/MESH")
  p.add_argument("--models", default="shapes")
  p.add_argument("--attentions", default="softmax,mesh")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--batch", type=int, default=0)
  p.add_argument("--out", default=None)
  import train_speed  # pylint: disable=g-import-not-at-top
  train_speed.add_allocator_argument(p)
  a = p.parse_args()
  for item in a.variants.split(","):
    if item not in VARIANTS:
      p.error(f"unknown variant {item!r}; valid: {', '.join(VARIANTS)}")
  if a.repeats < 1 or a.threads < 1:
    p.error("--repeats and --threads must be >= 1")
  return a


class OursPieces:
  """Jitted pieces of our step for one config."""

  def __init__(self, setup: dict, fold: bool):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import train_speed

    from slot_ot_jax.modules import models

    config = setup["config"].copy_and_resolve_references()
    config.model.fold_broadcast = fold
    self.step_runner = train_speed.Ours(dict(setup, config=config))
    trainer = self.step_runner.trainer
    model = trainer.model
    # Copies: the train step donates (and deletes) the state it is given.
    params = jax.tree_util.tree_map(jnp.array, self.step_runner.state.params)
    image = jnp.asarray(np.asarray(self.step_runner.batch["image"]).reshape(
        (-1,) + tuple(np.shape(self.step_runner.batch["image"])[-3:])))
    rngs = {"slots": jax.random.PRNGKey(1), "mesh": jax.random.PRNGKey(2)}
    enc, sa, dec = model.encoder, model.slot_attention, model.decoder
    p_enc, p_sa, p_dec = params["encoder"], params["slot_attention"], params["decoder"]
    features = enc.apply({"params": p_enc}, image)
    slots = sa.apply({"params": p_sa}, features, train=True, rngs=rngs)
    flat_slots = slots.reshape(-1, slots.shape[-1])
    decoded = dec.apply({"params": p_dec}, flat_slots)
    decoded = decoded.reshape(slots.shape[:2] + decoded.shape[1:])
    key = jax.random.PRNGKey(3)
    cot_f = jax.random.normal(key, features.shape)
    cot_s = jax.random.normal(key, slots.shape)
    cot_d = jax.random.normal(key, flat_slots.shape[:1] + decoded.shape[2:])

    def enc_grad(p):
      return jax.grad(lambda p: jnp.vdot(enc.apply({"params": p}, image), cot_f))(p)

    def sa_grad(p, f):
      return jax.grad(lambda p, f: jnp.vdot(
          sa.apply({"params": p}, f, train=True, rngs=rngs), cot_s), argnums=(0, 1))(p, f)

    def dec_grad(p, s):
      return jax.grad(lambda p, s: jnp.vdot(dec.apply({"params": p}, s), cot_d),
                      argnums=(0, 1))(p, s)

    def comp_grad(d):
      return jax.grad(lambda d: models.reconstruction_loss(
          models.alpha_composite(d, slot_axis=1), image))(d)

    tx = trainer.tx
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda x: 1e-3 * jnp.ones_like(x), params)

    def opt(g, s, p):
      updates, s = tx.update(g, s, p)
      return optax.apply_updates(p, updates), s

    enc_j, sa_j, dec_j = jax.jit(enc_grad), jax.jit(sa_grad), jax.jit(dec_grad)
    dec_fwd_j = jax.jit(lambda p, s: dec.apply({"params": p}, s))
    comp_j, opt_j = jax.jit(comp_grad), jax.jit(opt)
    self.pieces = {
        "step": self.step_runner.step,
        "encoder": lambda: enc_j(p_enc),
        "slot attention": lambda: sa_j(p_sa, features),
        "decoder fwd": lambda: dec_fwd_j(p_dec, flat_slots),
        "decoder": lambda: dec_j(p_dec, flat_slots),
        "composite+loss": lambda: comp_j(decoded),
        "optimizer": lambda: opt_j(grads, opt_state, params),
    }

  def run(self, piece: str) -> float:
    import jax
    start = time.perf_counter()
    jax.block_until_ready(self.pieces[piece]())
    return time.perf_counter() - start


class OfficialPieces:
  """The official model's pieces, eager PyTorch."""

  def __init__(self, module, setup: dict, attention: str):
    import torch
    import torch.nn.functional as F
    import train_speed
    self.runner = train_speed.Official(module, setup, attention)
    net, image = self.runner.net, self.runner.image
    torch.manual_seed(3)
    with torch.no_grad():
      features = net.encoder(image)
      slots = net.slot_attention(features)
      decoded = net.decoder(slots)
    b, k = slots.shape[:2]
    decoded = decoded.reshape((b, k) + decoded.shape[1:])
    cot_f, cot_s = torch.randn_like(features), torch.randn_like(slots)
    flat_slots = slots.reshape(b * k, -1)
    cot_d = torch.randn((b * k,) + decoded.shape[2:])

    def backward(module, x, cot):
      module.zero_grad(set_to_none=True)
      x = x.detach().requires_grad_(True)
      (module(x) * cot).sum().backward()

    def decoder_fwd():
      with torch.no_grad():
        net.decoder(flat_slots)

    def composite():
      d = decoded.detach().requires_grad_(True)
      rgb, alpha = d.split((3, 1), dim=2)
      F.mse_loss((rgb * alpha.softmax(dim=1)).sum(dim=1), image).backward()

    for p in net.parameters():
      p.grad = torch.full_like(p, 1e-3)
    opt = self.runner.opt

    def optimizer():
      torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
      opt.step()

    self.pieces = {
        "step": self.runner.step,
        "encoder": lambda: backward(net.encoder, image, cot_f),
        "slot attention": lambda: backward(net.slot_attention, features, cot_s),
        "decoder fwd": decoder_fwd,
        "decoder": lambda: backward(net.decoder, flat_slots, cot_d),
        "composite+loss": composite,
        "optimizer": optimizer,
    }

  def run(self, piece: str) -> float:
    if piece == "optimizer":  # gradients for the clipping and the update
      for p in self.runner.net.parameters():
        if p.grad is None:
          p.grad = p.detach() * 0 + 1e-3
    start = time.perf_counter()
    self.pieces[piece]()
    return time.perf_counter() - start


def main():
  a = _parse()
  import train_speed
  train_speed._limit_threads(a.threads)  # pylint: disable=protected-access
  allocation = train_speed.apply_allocator(a)
  from slot_ot_jax.training import host
  module, status = train_speed.official_status(a)
  header = host.host_lines() + [status, allocation, train_speed.command_line("step_profile.py"),
                                 f"Load average before: {os.getloadavg()[0]:.2f}"]
  print("\n".join(header), flush=True)
  lines = list(header)
  for model in a.models.split(","):
    for attention in a.attentions.split(","):
      setup = train_speed.model_setup(model, attention, a.batch)
      sides = {f"ours ({v})": OursPieces(setup, v == "fold") for v in a.variants.split(",")}
      if module is not None:
        sides["official"] = OfficialPieces(module, setup, attention)
      names = list(sides)
      for side in sides.values():  # warm-up: compilation and first calls
        for piece in PIECES:
          side.run(piece)
          side.run(piece)
      times = {(s, p): [] for s in names for p in PIECES}
      for r in range(a.repeats):
        for s in (names if r % 2 == 0 else names[::-1]):
          for piece in PIECES:
            times[(s, piece)].append(sides[s].run(piece))
      med = {key: 1e3 * statistics.median(v) for key, v in times.items()}
      res = setup["resolution"]
      title = (f"### {model} ({res}x{res}, batch {setup['batch']}), "
               f"{train_speed.PAPER_NAMES[attention]}: milliseconds, medians of {a.repeats}")
      table = [title, "", "| piece | " + " | ".join(names) + " |",
               "|---" * (len(names) + 1) + "|"]
      for piece in PIECES:
        table.append(f"| {piece} | " + " | ".join(f"{med[(s, piece)]:.1f}" for s in names)
                     + " |")
      table.append("")
      print("\n".join(table), flush=True)
      lines += [""] + table
      del sides
  lines.append(f"Load average after: {os.getloadavg()[0]:.2f}")
  if a.out:  # The tables were printed as they came.
    with open(a.out, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()

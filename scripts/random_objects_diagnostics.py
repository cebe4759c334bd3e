r"""Where a trained random-objects model puts its transport mass.

For each workdir (a finished `configs/random_objects.py` run), restores the latest checkpoint
and reports, over the first evaluation batches:
  * input_mass_on_zeros: the input marginal's total mass on the h zero vectors, out of the
    total K (the OT variants learn it, App. A; softmax attention has none and shows "-");
    uniform marginals would put K * h / (k + h) there;
  * object_share: for each slot, the share of its attention column (last iteration) that
    comes from the object it is matched to (Hungarian matching of predictions to objects),
    averaged over slots and examples (1.0 = each slot reads only its own object);
  * object_row_hardness: for each object input, the share of its plan row that goes to its
    largest slot, averaged (1/K = spread evenly over the slots, 1.0 = a hard assignment);
  * plan_entropy_ratio: the entropy of the last plan (normalised to sum 1) divided by the
    entropy of the product of its two marginals, averaged over examples (1.0 = as blurry as
    its marginals allow, lower = sharper);
  * rmse_over_sigma on those examples.

  python scripts/random_objects_diagnostics.py workdirs/table1/mesh_sigma0.01_seed0 ...
"""
import argparse
import json
import os
import sys

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slot_ot_jax import tasks
from slot_ot_jax.tasks import random_objects as ro
from slot_ot_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
from slot_ot_jax.training import train


def plan_statistics(attn: np.ndarray, is_object: np.ndarray) -> tuple[float, float]:
  """Returns (object_row_hardness, plan_entropy_ratio) of plans attn [B, N, K].

  is_object [B, N] marks the object inputs (the rows whose hardness is averaged).
  """
  rows = attn.sum(axis=-1, keepdims=True)                               # [B, N, 1]
  top_share = attn.max(axis=-1) / np.maximum(rows[..., 0], 1e-30)       # [B, N]
  hardness = float(np.sum(top_share * is_object) / np.sum(is_object))
  p = attn / attn.sum(axis=(1, 2), keepdims=True)                       # [B, N, K]

  def entropy(q, axes):
    return -np.sum(np.where(q > 0, q * np.log(np.maximum(q, 1e-30)), 0.0), axis=axes)

  h_plan = entropy(p, (1, 2))
  h_product = entropy(p.sum(axis=2), 1) + entropy(p.sum(axis=1), 1)    # H(rows) + H(cols)
  return hardness, float(np.mean(h_plan / h_product))


def diagnose(workdir: str, num_batches: int) -> dict[str, float]:
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  task = tasks.get_task(config)
  trainer = train.Trainer(config, task, jax.devices()[:1])
  checkpointer = checkpointing.Checkpointer(workdir, config)
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}.")
  state = checkpointer.restore(step, trainer.abstract_state_dict())
  checkpointer.close()
  variables = {"params": state["params"], **state["model_state"]}

  @jax.jit
  def run(batch, rng):
    rngs = train.stream_rngs(rng, task.rng_streams)
    slots, inter = trainer.model.apply(variables, batch["inputs"], train=False,
                                       rngs=dict(rngs), mutable=["intermediates"])
    return slots, inter["intermediates"]

  sigma = float(config.data.sigma)
  zeros_mass, shares, errors, hardness, entropy_ratio = [], [], [], [], []
  for i, batch in enumerate(task.eval_batches()):
    if i == num_batches:
      break
    slots, inter = run(batch, jax.random.PRNGKey(i))
    attn = np.asarray(inter["attn"][-1])                                # [B, N, K]
    is_object = np.any(batch["inputs"] != 0, axis=-1)                   # [B, N]
    stats = plan_statistics(attn, is_object)
    hardness.append(stats[0])
    entropy_ratio.append(stats[1])
    if "a" in inter:
      a = np.asarray(inter["a"][-1])                                    # [B, N]
      zeros_mass.append(np.sum(a * ~is_object, axis=-1))
    errors.append(np.asarray(ro.matched_squared_error(slots, batch["objects"])))
    _, rows, cols = ro.hungarian_match(slots, batch["objects"])
    size = len(batch["inputs"])
    pos = task.eval_split["positions"][i * size:(i + 1) * size]        # [B, k] input index
    rows, cols = np.asarray(rows), np.asarray(cols)                     # slot r <-> object c
    col_mass = attn.sum(axis=1)                                         # [B, K]
    b_idx = np.arange(attn.shape[0])[:, None]
    own = attn[b_idx, pos[b_idx, cols], rows]                           # [B, min(K, k)]
    shares.append(own / col_mass[b_idx, rows])
  result = {
      "workdir": workdir, "step": step,
      "attention": config.model.slot_attention.attention, "sigma": sigma,
      "rmse_over_sigma": float(np.sqrt(np.mean(np.concatenate(errors)))) / sigma,
      "object_share": float(np.mean(np.concatenate(shares))),
      "object_row_hardness": float(np.mean(hardness)),
      "plan_entropy_ratio": float(np.mean(entropy_ratio)),
      "input_mass_on_zeros": (float(np.mean(np.concatenate(zeros_mass)))
                              if zeros_mass else None),
      "total_mass": float(config.model.slot_attention.marginal_scale
                          or config.model.slot_attention.num_slots),
  }
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--num_batches", type=int, default=2,
                      help="evaluation batches (of eval_batch_size) to look at")
  args = parser.parse_args()
  print("| run | attention | sigma | RMSE/sigma | object share of slot mass "
        "| input mass on zeros (of K) | object row hardness | plan entropy ratio |")
  print("|---|---|---|---|---|---|---|---|")
  for workdir in args.workdirs:
    r = diagnose(workdir.rstrip("/"), args.num_batches)
    zeros = "-" if r["input_mass_on_zeros"] is None else (
        f"{r['input_mass_on_zeros']:.2f} / {r['total_mass']:g}")
    print(f"| {os.path.basename(r['workdir'])} | {r['attention']} | {r['sigma']:g} "
          f"| {r['rmse_over_sigma']:.3f} | {r['object_share']:.3f} | {zeros} "
          f"| {r['object_row_hardness']:.3f} | {r['plan_entropy_ratio']:.3f} |", flush=True)


if __name__ == "__main__":
  main()

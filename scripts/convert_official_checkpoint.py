r"""Converts an official MESH PyTorch checkpoint into a workdir that main.py can evaluate.

  python scripts/convert_official_checkpoint.py --state_dict=PATH.ckpt \
      --config=configs/multi_dsprites.py:attention=mesh --workdir=W \
      --config.model.slot_attention.framework_defaults=torch [--config.X=Y ...]
  python main.py --config=configs/multi_dsprites.py:attention=mesh --workdir=W \
      --config.model.slot_attention.framework_defaults=torch --config.mode=eval \
      --config.evaluation.checkpoint=latest

The official code (github davzha/MESH, run_object_discovery.py) trains
`SlotAttentionObjectDiscovery` inside a Lightning module (attribute `net`); its checkpoints
hold `state_dict` ("net.encoder.0.weight", ...) and the Hydra config under
`hyper_parameters`. Accepted inputs:

  --state_dict=*.ckpt|*.pt|*.pth   torch.load (PyTorch needed: `pip install -e .[bench]`): a
                                   Lightning checkpoint, a {"state_dict": ...} dict or a bare
                                   state_dict. Loaded with weights_only=True unless
                                   --trust_pickle (Lightning checkpoints pickle their config;
                                   only for files you trust).
  --state_dict=*.npz               NumPy arrays by official name (no PyTorch), e.g. the record
                                   tests/data/official_mesh_outputs.npz with
                                   --prefix=ae_mesh/param/.

--prefix (default: detected, e.g. "net.") selects the model's names. The weights are mapped by
`slot_ot_jax.modules.official_mesh.object_discovery_params`; the config must describe the same
architecture: the official model kwargs (--official_kwargs=JSON or a .json file; by default
the checkpoint's `hyper_parameters["model"]` when it holds plain values) are compared with the
model the config builds, and every difference is an error that names the --config override
fixing it (--allow_config_mismatch proceeds anyway). The parameter shapes must match the
config's model in any case. The LayerNorm epsilon of PyTorch (1e-5) needs
--config.model.slot_attention.framework_defaults=torch.

The workdir gets an orbax checkpoint at --step (default 0) holding the converted parameters,
a fresh optimizer state and the config's PRNG key (so that training there fine-tunes the
official weights), config.json, and official_checkpoint.json (source, prefix, kwargs). It is
an ordinary (latest) checkpoint, not a best one: the MESH configs evaluate their best
checkpoint by default, hence --config.evaluation.checkpoint=latest above.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from slot_ot_jax.modules import (
  official_mesh,  # pylint: disable=g-import-not-at-top,wrong-import-position
)

PROVENANCE_FILE = "official_checkpoint.json"


# ------------------------------------------------------------------------------ loading
def _to_numpy(value: Any) -> Optional[np.ndarray]:
  if hasattr(value, "detach"):  # a torch.Tensor
    return value.detach().cpu().float().numpy()
  if isinstance(value, np.ndarray):
    return value
  return None


def load_official(path: str, trust_pickle: bool = False
                  ) -> tuple[dict[str, np.ndarray], Optional[dict]]:
  """(state_dict as NumPy arrays, the model kwargs of a Lightning checkpoint or None)."""
  if path.endswith(".npz"):
    with np.load(path) as z:
      return {k: z[k] for k in z.files if z[k].dtype.kind == "f"}, None
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"Reading {path} needs PyTorch (pip install -e .[bench]), or save the "
                      "state_dict as .npz (numpy.savez of name -> array).") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except Exception as e:  # pylint: disable=broad-except
    if trust_pickle:
      raise
    raise ValueError(f"torch.load({path!r}, weights_only=True) failed ({e}); Lightning "
                     "checkpoints pickle their config: pass --trust_pickle for a file you "
                     "trust.") from e
  kwargs = None
  if isinstance(obj, Mapping) and "state_dict" in obj:
    kwargs = _plain_model_kwargs(obj.get("hyper_parameters"))
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
  arrays = {k: _to_numpy(v) for k, v in obj.items()}
  return {k: v for k, v in arrays.items() if v is not None}, kwargs


def load_state_dict(path: str, trust_pickle: bool = False) -> dict[str, np.ndarray]:
  return load_official(path, trust_pickle)[0]


def _plain_model_kwargs(hparams) -> Optional[dict]:
  """hyper_parameters["model"] as plain values, or None (absent, or unresolved `${...}`)."""
  try:
    model = hparams["model"]
    try:
      from omegaconf import OmegaConf  # pylint: disable=g-import-not-at-top
      # The official configs use ${add:...} (run_object_discovery.py registers it).
      if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *numbers: sum(numbers))
      model = OmegaConf.to_container(model, resolve=True)
    except Exception:  # pylint: disable=broad-except
      model = json.loads(json.dumps(model, default=dict))
    model = {k: model[k] for k in ("encoder", "decoder", "slot_attention")}
  except Exception:  # pylint: disable=broad-except
    return None
  return None if "${" in json.dumps(model, default=str) else model


# ------------------------------------------------------------------------------ config
def official_config_overrides(official_kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """Config values (dotted paths) that make the object-discovery config build the official
  model, e.g. {"model.width": 32, "data.resolution": 64, "model.slot_attention.attention":
  "mesh", ...}. Raises UnsupportedOfficialOption if the config cannot express it."""
  fields = official_mesh.object_discovery_fields(official_kwargs)
  enc, dec = fields["encoder"], fields["decoder"]
  widths = {*enc["channels"], enc["mlp_size"], enc["out_size"], *dec["channels"]}
  height, width = dec["broadcast_resolution"]
  problems = []
  if len(widths) != 1:
    problems.append(f"encoder/decoder widths {sorted(widths)} differ; the config's "
                    "model.width sets all of them")
  if height != width:
    problems.append(f"non-square resolution {dec['broadcast_resolution']}")
  if problems:
    raise official_mesh.UnsupportedOfficialOption(
        "The object-discovery config cannot express the official model:\n  "
        + "\n  ".join(problems))
  out = {"model.architecture": "multi_dsprites",  # full-resolution broadcast decoder
         "model.width": widths.pop(), "model.kernel_size": 5, "data.resolution": height}
  out.update({f"model.slot_attention.{k}": v for k, v in fields["slot_attention"].items()})
  return out


def _effective(module, name: str):
  """A SlotAttention field with its default resolved (None means a derived value)."""
  value = getattr(module, name)
  if name == "marginal_scale" and value is None:
    return float(module.num_slots)
  if name == "cost" and value is None:
    return "dot" if module.attention == "softmax" else "euclidean"
  return tuple(value) if isinstance(value, list) else value


_PART_HINTS = {"channels": "model.width", "mlp_size": "model.width", "out_size": "model.width",
               "broadcast_resolution": "data.resolution", "kernel_size": "model.kernel_size"}


def config_mismatches(model, official_kwargs: Optional[Mapping[str, Any]]) -> list[str]:
  """Lines naming every field where the config's model differs from the official one.

  Without official kwargs only the LayerNorm convention (framework_defaults) is checked.
  """
  if official_kwargs is None:
    expected = {"slot_attention": {"framework_defaults": "torch"}}
  else:
    expected = official_mesh.object_discovery_fields(official_kwargs)
  lines = []
  for part, fields in expected.items():
    module = getattr(model, part)
    for name, want in fields.items():
      if part == "slot_attention" and name == "mesh_lr" and fields.get("learn_mesh_lr"):
        continue  # A learned step comes from the checkpoint.
      have = _effective(module, name) if part == "slot_attention" else getattr(module, name)
      have = tuple(have) if isinstance(have, list) else have
      if have != want:
        hint = (f"--config.model.slot_attention.{name}={want}" if part == "slot_attention"
                else f"--config.{_PART_HINTS.get(name, 'model.*')}")
        lines.append(f"{part}.{name}: {have!r} in the config, {want!r} in the official model "
                     f"({hint})")
  return lines


# ------------------------------------------------------------------------------ convert
def convert(config, state_dict: Mapping[str, Any], workdir: str, *,
            prefix: Optional[str] = None, official_kwargs: Optional[Mapping[str, Any]] = None,
            step: int = 0, allow_config_mismatch: bool = False, source: str = "") -> int:
  """Writes the official weights as the checkpoint of `step` in `workdir`; returns the step.

  Raises:
    ValueError: config differences (unless `allow_config_mismatch`), parameter shape
      differences, or entries of the state_dict that do not belong to the official model.
    FileExistsError: the workdir already holds checkpoints.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top

  if prefix is None:
    prefix = official_mesh.find_prefix(state_dict.keys())
  params = official_mesh.object_discovery_params(state_dict, prefix)

  task = tasks.get_task(config)
  model = task.build_model()
  mismatches = config_mismatches(model, official_kwargs)
  if mismatches and not allow_config_mismatch:
    raise ValueError("The config does not build the official model:\n  "
                     + "\n  ".join(mismatches)
                     + "\nFix the config (the overrides are given), or pass "
                       "--allow_config_mismatch.")

  rngs = {name: jax.random.PRNGKey(0) for name in ("params", *task.rng_streams)}
  abstract = jax.eval_shape(lambda: task.init_variables(model, rngs))["params"]
  want = {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  have = {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  if want != have:
    diffs = [f"{k}: {have.get(k, 'absent')} (official) vs {want.get(k, 'absent')} (config)"
             for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
    raise ValueError("The official parameters do not fit the config's model:\n  "
                     + "\n  ".join(diffs[:20]))

  checkpointer = checkpointing.Checkpointer(workdir, config)
  try:
    if checkpointer.latest_step() is not None:
      raise FileExistsError(f"{workdir} already holds checkpoints (latest step "
                            f"{checkpointer.latest_step()}); use a fresh --workdir.")
    trainer = train.Trainer(config, task, jax.devices()[:1])
    state = trainer.create_state()  # The TrainState evaluate_checkpoint restores into.
    params = jax.tree.map(jnp.asarray, params)
    state = state.replace(step=jnp.asarray(step, jnp.int32), params=params,
                          opt_state=trainer.tx.init(params))
    checkpointer.save(step, state.as_dict())
    checkpointer.wait()
    checkpointer.write_config()
  finally:
    checkpointer.close()
  provenance = {"source": source, "prefix": prefix, "step": step,
                "official_kwargs": official_kwargs, "config_mismatches": mismatches,
                "converter": "slot_ot_jax.modules.official_mesh.object_discovery_params"}
  with open(os.path.join(str(checkpointer.workdir), PROVENANCE_FILE), "w") as f:
    json.dump(provenance, f, indent=2, default=str)
  return step


def apply_official_overrides(config, official_kwargs: Mapping[str, Any]):
  """`config` with `official_config_overrides` applied (a locked config's fields)."""
  for path, value in official_config_overrides(official_kwargs).items():
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def main(argv):
  del argv
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  # As main.py: orbax's per-save INFO lines are dropped, its warnings kept.
  logging.get_absl_logger().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or "orbax" not in r.pathname)
  f = flags.FLAGS
  state_dict, kwargs = load_official(f.state_dict, f.trust_pickle)
  if f.official_kwargs:
    text = f.official_kwargs
    if os.path.exists(text):
      with open(text) as fh:
        text = fh.read()
    kwargs = json.loads(text)
  if kwargs is None:
    print("No official model kwargs (--official_kwargs): only parameter shapes and the "
          "LayerNorm convention are checked against the config.", file=sys.stderr)
  step = convert(f.config, state_dict, f.workdir, prefix=f.prefix, official_kwargs=kwargs,
                 step=f.step, allow_config_mismatch=f.allow_config_mismatch,
                 source=os.path.abspath(f.state_dict))
  print(f"Wrote the official weights as step {step} in {f.workdir}; evaluate with\n  python "
        f"main.py --config=... --workdir={f.workdir} --config.mode=eval "
        "--config.evaluation.checkpoint=latest (same config and overrides as here)")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config (as for main.py).",
                                  lock_config=True)
  flags.DEFINE_string("state_dict", None, "Official checkpoint: .ckpt/.pt/.pth or .npz.")
  flags.DEFINE_string("workdir", None, "Workdir to create (must hold no checkpoint).")
  flags.DEFINE_string("prefix", None, "Prefix of the model's names (default: detected).")
  flags.DEFINE_string("official_kwargs", None,
                      "Official SlotAttentionObjectDiscovery kwargs: JSON or a .json file.")
  flags.DEFINE_integer("step", 0, "Step of the written checkpoint.")
  flags.DEFINE_bool("allow_config_mismatch", False, "Write despite config differences.")
  flags.DEFINE_bool("trust_pickle", False, "torch.load with weights_only=False.")
  flags.mark_flags_as_required(["config", "state_dict", "workdir"])
  app.run(main)

"""Base config and small setters shared by every experiment config.

An experiment file composes these: `get_base_config()` for the trainer fields, then
`set_slot_attention(...)`, `set_schedule(...)` and friends. Variants are selected by the
argument string of the config file (`configs/x.py:attention=mesh,sigma=0.01`), parsed with
`parse_arg`. Every value the trainer reads lives here with its default, so a typo in a
`--config.foo=1` override is an error once the config is locked.
"""
from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

# Attention choices of `slot_ot_jax.modules.attention.SlotAttention`, by config name.
ATTENTIONS = ("softmax", "sinkhorn", "emd", "mesh")
# Initialisation styles of `slot_ot_jax.modules.defaults` (docs/reference_defaults.md): the
# initialisers and LayerNorm epsilons of Flax (ours), PyTorch (the MESH reference), Keras (the
# Slot Attention reference) or PyTorch with the object-centric-learning-framework's explicit
# initialisations (DINOSAUR's code). Each paper config selects its reference's.
FRAMEWORK_DEFAULTS = ("flax", "torch", "keras", "ocl")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "key=value,key2=value2" into a ConfigDict typed like `defaults`.

  Unknown keys are an error naming the valid ones; values are converted to the type of
  the default (bool accepts 1/0/true/false).
  """
  parsed = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return parsed
  for item in arg.split(","):
    if not item.strip():
      continue
    key, sep, value = item.partition("=")
    key, value = key.strip(), value.strip()
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; valid arguments: "
                       f"{', '.join(sorted(defaults))}.")
    if not sep:  # A bare flag such as `runlocal`.
      value = "1"
    kind = type(defaults[key])
    if kind is bool:
      if value.lower() not in ("1", "0", "true", "false"):
        raise ValueError(f"Config argument {key}={value!r} is not a boolean.")
      parsed[key] = value.lower() in ("1", "true")
    else:
      parsed[key] = kind(value)
  return parsed


def split_arg(arg: str | None, key: str, default: str) -> tuple[str, str]:
  """Takes `key=value` out of an argument string: (value, or `default` if absent; the rest)."""
  value, rest = default, []
  for item in (arg or "").split(","):
    if item.strip().startswith(f"{key}="):
      value = item.split("=", 1)[1].strip()
    elif item.strip():
      rest.append(item)
  return value, ",".join(rest)


def check_choice(name: str, value: Any, choices) -> Any:
  """Returns `value` if it is one of `choices`, else raises naming the valid ones."""
  if value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; valid values: "
                     f"{', '.join(map(str, choices))}.")
  return value


def get_base_config() -> ml_collections.ConfigDict:
  """Trainer fields common to every experiment (the papers' image defaults).

  Returns an unlocked ConfigDict; the experiment file fills `task`, `data`, `model`
  (and `evaluation`) and locks it.
  """
  config = ml_collections.ConfigDict()
  config.task = ""                       # Key of the task registry, see slot_ot_jax/tasks/base.py.
  config.seed = 0                        # Parameter init and per-step RNG.
  config.num_train_steps = 500_000
  config.batch_size = 64                 # Global batch over all devices and hosts.
  config.eval_batch_size = 64
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  config.checkpoints_to_keep = 3
  # Best checkpoint: after every evaluation during training, the state with the best value so
  # far of this evaluation metric of the task (e.g. "loss") is kept in
  # <workdir>/checkpoints_best/; "" keeps none.
  config.checkpoint_best_metric = ""
  config.checkpoint_best_mode = "min"    # "min" | "max": which way the metric improves.
  config.runlocal = False                # Recorded when the config was shrunk for a CPU smoke run.

  config.optimizer = ml_collections.ConfigDict()
  # Adam; lr(step) =
  #   learning_rate * min(1, step / warmup_steps) * decay_rate ** (step / decay_steps).
  config.optimizer.learning_rate = 4e-4
  config.optimizer.warmup_steps = 10_000
  config.optimizer.decay_rate = 0.5
  config.optimizer.decay_steps = 100_000
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.grad_clip_norm = 0.1  # Global-norm clipping; 0 turns it off.

  config.data = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict()
  # Evaluation options; experiment files add their own fields to this node.
  config.evaluation = ml_collections.ConfigDict()
  # What mode=eval evaluates: "latest" (the newest checkpoint) or "best" (the one kept for
  # checkpoint_best_metric, as references that test their best validation checkpoint).
  config.evaluation.checkpoint = "latest"
  return config


def evaluate_best_checkpoint(config: ml_collections.ConfigDict, metric: str = "loss",
                             mode: str = "min") -> ml_collections.ConfigDict:
  """Keeps the checkpoint of the best `metric` during training and makes mode=eval evaluate
  it (the protocol of the MESH reference: lowest validation loss)."""
  config.checkpoint_best_metric = metric
  config.checkpoint_best_mode = check_choice("checkpoint_best_mode", mode, ("min", "max"))
  config.evaluation.checkpoint = "best"
  return config


def slot_attention_kwargs(num_slots, **overrides) -> ml_collections.ConfigDict:
  """Keyword arguments of `SlotAttention`, with the module's defaults.

  Every field of the module is listed (tests/test_configs.py checks that they match), so
  any of them can be overridden from the command line of a locked config.

  Args:
    num_slots: an int or a `FieldReference` (so that it can follow a data field).
    **overrides: any other `SlotAttention` field; unknown names are an error.
  """
  kwargs = ml_collections.ConfigDict(dict(
      num_slots=num_slots,
      slot_size=64,
      mlp_size=128,
      num_iters=3,
      num_iters_eval=config_dict.placeholder(int),  # None: same as num_iters.
      attention="softmax",
      cost=config_dict.placeholder(str),            # None: dot (softmax) / euclidean (OT).
      cost_scale=1.0,
      temperature=1.0,
      epsilon=1e-8,
      sinkhorn_iters=5,
      marginals="learned",
      marginal_scale=config_dict.placeholder(float),  # None: the number of slots.
      mesh_steps=4,
      mesh_lr=8.0,
      mesh_noise_scale=1e-3,
      mesh_temperature=1.0,
      mesh_reuse_potentials=True,
      learn_mesh_lr=False,
      mesh_lr_per_entry=False,
      mesh_objective="entropy",
      mesh_similarity_alpha=1.0,
      mesh_differentiate_steps=config_dict.placeholder(bool),  # None: per objective.
      update_norm="auto",                           # weighted_mean (softmax) / sum (OT).
      slot_init="shared_gaussian",
      fixed_init_seed=0,
      detach_slots=False,
      norm_inputs=True,
      compute_dtype="float32",                      # or bfloat16 outside the OT core.
      # Initialisers and LayerNorm epsilons of every module of the model (the task passes
      # this field to the encoder, decoder, head and transition too): one of
      # FRAMEWORK_DEFAULTS; a learned MESH step starts at 1 except under "flax".
      framework_defaults="flax",
  ))
  for key, value in overrides.items():
    if key not in kwargs:
      raise ValueError(f"Unknown SlotAttention field {key!r}; valid fields: "
                       f"{', '.join(sorted(kwargs))}.")
    kwargs[key] = value
  check_choice("attention", kwargs.attention, ATTENTIONS)
  # A mixed style "BASE:PART=STYLE,..." (ablations) is checked in full by the modules.
  check_choice("framework_defaults", str(kwargs.framework_defaults).partition(":")[0],
               FRAMEWORK_DEFAULTS)
  return kwargs


def set_schedule(config: ml_collections.ConfigDict, *, num_train_steps: int,
                 **optimizer: Any) -> None:
  """Sets the step count and any `config.optimizer` field (unknown names are an error)."""
  config.num_train_steps = num_train_steps
  for key, value in optimizer.items():
    if key not in config.optimizer:
      raise ValueError(f"Unknown optimizer field {key!r}; valid fields: "
                       f"{', '.join(sorted(config.optimizer))}.")
    config.optimizer[key] = value


def set_intervals(config: ml_collections.ConfigDict, *, log: int, eval: int,
                  checkpoint: int) -> None:  # pylint: disable=redefined-builtin
  """Sets how often to log train metrics, evaluate and checkpoint (in steps)."""
  config.log_every_steps = log
  config.eval_every_steps = eval
  config.checkpoint_every_steps = checkpoint


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config so that an override of a missing field is an error."""
  config.lock()
  return config


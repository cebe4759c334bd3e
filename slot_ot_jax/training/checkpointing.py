"""Checkpoints of the trainer: orbax CheckpointManager, config compatibility, the best
checkpoint (the workdir lock and the preemption guard: `run_guards`).

Layout of a workdir:
  <workdir>/checkpoints/<step>/   orbax checkpoints of the train state, the last few kept
  <workdir>/checkpoints_best/<step>/
                                  with `config.checkpoint_best_metric` set: the state of the
                                  best evaluation so far (one kept), and best.json beside it
                                  (step, metric, mode, value)
  <workdir>/config.json           the config of the run that started the workdir (never
                                  overwritten on resume)
  <workdir>/config_resumed_at_<step>.json
                                  the config of a resume that was allowed to differ
  <workdir>/checkpoints_damaged/<step>/
                                  checkpoints that could not be restored, moved aside (kept)
  <workdir>/train.lock            the lock of the trainer using the workdir (PID, host;
                                  `run_guards.WorkdirLock`)

Promises (docs/reliability.md):
  * Only finite states are saved (`Checkpointer.save` checks every leaf).
  * `Checkpointer.restore_latest` restores the newest checkpoint that restores; damaged newer
    ones (missing, truncated or garbled files, no metadata, an empty folder, non-finite
    values) are skipped with their reason, and moved aside when training resumes.
  * A checkpoint that cannot hold the current config's state (different parameter shapes or
    tree) is an `IncompatibleCheckpointError` naming the differing config fields and
    parameters; no older checkpoint is tried, since they share the config.
  * Other config differences on resume are a `ConfigChangedError` unless allowed; the
    bookkeeping fields in `RESUME_SAFE_FIELDS` (intervals, length of the run) may change.
  * `BestCheckpointer` keeps the state of the best periodic evaluation (lowest or highest
    `config.checkpoint_best_metric`); a worse later evaluation never replaces it, the value
    to beat is read back on resume (stored in the checkpoint's own metadata), and it is
    what mode=eval restores with `config.evaluation.checkpoint="best"`.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "checkpoints_best"
BEST_RECORD_FILE = "best.json"  # In BEST_CHECKPOINT_DIR.
DAMAGED_DIR = "checkpoints_damaged"
# Config fields that may differ on resume without --allow_config_change: how often to log,
# evaluate and checkpoint, how many checkpoints to keep, where the run stops, and which
# checkpoint counts as the best and which one mode=eval evaluates (none of them changes the
# trained state; a changed best metric or mode starts the best checkpoint over).
RESUME_SAFE_FIELDS = ("num_train_steps", "log_every_steps", "eval_every_steps",
                      "checkpoint_every_steps", "checkpoints_to_keep",
                      "checkpoint_best_metric", "checkpoint_best_mode", "evaluation.checkpoint")
# Subtrees of the train state whose shapes the config determines (the optimizer state
# mirrors `params`).
_SHAPE_CHECKED = ("params", "model_state")
_MAX_LISTED = 12


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint that cannot be restored under the current config."""


class CheckpointRestoreError(RuntimeError):
  """No checkpoint of the workdir could be restored (every one is damaged)."""


class ConfigChangedError(ValueError):
  """A resume under a config that differs from the workdir's, without permission."""


def non_finite_leaves(tree: Any) -> list[str]:
  """Paths of the floating-point leaves of `tree` that hold a NaN or an infinity."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  checked = [(path, leaf) for path, leaf in leaves
             if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)]
  if not checked:
    return []
  flags = jax.device_get([jnp.all(jnp.isfinite(leaf)) for _, leaf in checked])
  return [jax.tree_util.keystr(path) for (path, _), ok in zip(checked, flags) if not bool(ok)]


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten_dict(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """Lines "field: old -> new" for every field that differs between two config dicts."""
  old_flat, new_flat = flatten_dict(old), flatten_dict(new)
  lines = []
  for key in sorted(set(old_flat) | set(new_flat)):
    a, b = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
    if a != b:
      lines.append(f"{key}: {a!r} (checkpoint) -> {b!r} (now)")
  return lines


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves
          if hasattr(leaf, "shape")}


def _shape_mismatches(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
  lines = []
  for name in _SHAPE_CHECKED:
    old, new = _shapes(saved.get(name, {}) or {}), _shapes(expected.get(name, {}) or {})
    for key in sorted(set(old) | set(new)):
      if old.get(key) != new.get(key):
        lines.append(f"{name}{key}: {old.get(key, 'absent')} (checkpoint) -> "
                     f"{new.get(key, 'absent')} (now)")
  return lines


def _absolute(workdir: epath.PathLike) -> epath.Path:
  # orbax writes through tensorstore, which needs an absolute path.
  path = epath.Path(workdir)
  if not path.is_absolute() and "://" not in str(workdir):
    path = epath.Path(os.path.abspath(str(workdir)))
  return path


def _failure_reason(error: BaseException) -> str:
  """The error's type and the first line of its message (at most 300 characters)."""
  first = (str(error).strip().splitlines() or [""])[0][:300]
  return f"{type(error).__name__}: {first}"


class Checkpointer:
  """Saves and restores the train state (a dict of arrays) in `<workdir>/checkpoints`
  (or another folder of the workdir, `subdir`)."""

  def __init__(self, workdir: epath.PathLike, config: ml_collections.ConfigDict, *,
               subdir: str = CHECKPOINT_DIR, max_to_keep: int | None = None):
    """`max_to_keep` defaults to `config.checkpoints_to_keep`."""
    self.workdir = _absolute(workdir)
    self.config_dict = json.loads(config.to_json_best_effort())
    self.manager = ocp.CheckpointManager(
        self.workdir / subdir,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.checkpoints_to_keep if max_to_keep is None else max_to_keep,
            create=True),
        # Registered up front so that metadata can be read before the first restore.
        item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def saved_config(self) -> dict[str, Any] | None:
    path = self.workdir / CONFIG_FILE
    return json.loads(path.read_text()) if path.exists() else None

  def _incompatible(self, step: int, reason: str,
                    details: list[str]) -> IncompatibleCheckpointError:
    saved = self.saved_config()
    diffs = (config_differences(saved, self.config_dict) if saved is not None
             else [f"(no {CONFIG_FILE} beside the checkpoints)"])
    lines = [f"The checkpoint at step {step} in {self.manager.directory} is incompatible "
             f"with the current config: {reason}.",
             "Config fields that differ from the run that wrote it:",
             *("  " + d for d in diffs[:_MAX_LISTED] or ["  (none)"]),
             *(["Mismatches:"] + ["  " + d for d in details[:_MAX_LISTED]] if details else []),
             "Use a fresh --workdir, or restore the config of that run."]
    return IncompatibleCheckpointError("\n".join(lines))

  def _layout_problem(self, step: int, abstract_state: Mapping[str, Any]) -> None:
    """Raises IncompatibleCheckpointError if the saved tree of `step` cannot hold
    `abstract_state`; other exceptions (unreadable metadata) mean a damaged checkpoint."""
    metadata = self.manager.item_metadata(step)
    tree = getattr(metadata, "tree", metadata)
    if not isinstance(tree, Mapping):
      raise ValueError(f"no readable tree metadata ({type(tree).__name__})")
    mismatches = _shape_mismatches(tree, abstract_state)
    if mismatches:
      raise self._incompatible(step, "parameter shapes differ", mismatches)
    saved = {k: tuple(getattr(v, "shape", ()) or ()) for k, v in
             ocp.tree.to_flat_dict(tree).items() if v is not None}
    expected = {k: tuple(v.shape) for k, v in ocp.tree.to_flat_dict(
        ocp.tree.serialize_tree(dict(abstract_state), keep_empty_nodes=True)).items()
                if v is not None}
    if saved != expected:
      details = [f"{'.'.join(map(str, k))}: {saved.get(k, 'absent')} (checkpoint) -> "
                 f"{expected.get(k, 'absent')} (now)"
                 for k in sorted(set(saved) | set(expected), key=str)
                 if saved.get(k) != expected.get(k)]
      raise self._incompatible(step, "the state tree differs", details)

  def restore(self, step: int, abstract_state: Mapping[str, Any]) -> dict[str, Any]:
    """Restores `step` into the shapes/shardings of `abstract_state` (ShapeDtypeStructs).

    Raises:
      IncompatibleCheckpointError: if parameter shapes or the state tree differ.
      Any other exception: the checkpoint is damaged (see `restore_latest`).
    """
    self._layout_problem(step, abstract_state)
    restored = dict(self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state)))
    bad = non_finite_leaves(restored)
    if bad:
      raise FloatingPointError(f"non-finite values in {len(bad)} leaves (e.g. {bad[0]})")
    return restored

  def restore_latest(self, abstract_state: Mapping[str, Any]
                     ) -> tuple[int, dict[str, Any], list[tuple[int, str]]] | None:
    """Restores the newest checkpoint that restores, newest first.

    A damaged checkpoint (unreadable metadata, missing, truncated or garbled files, an
    empty folder, non-finite values) is skipped with a warning naming its step and why
    (`move_damaged` then moves it out of the way, keeping it). An incompatible checkpoint
    stops the search: the older ones were written under the same config.

    Returns:
      None if the workdir has no checkpoint, else (step, state, [(skipped step, reason)]).

    Raises:
      IncompatibleCheckpointError: if the newest readable checkpoint cannot hold the state.
      CheckpointRestoreError: if checkpoints exist but none restores.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    skipped = []
    for step in steps:
      try:
        state = self.restore(step, abstract_state)
      except IncompatibleCheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = _failure_reason(e)
        logging.warning("The checkpoint at step %d in %s cannot be restored (%s); trying "
                        "the previous one.", step, self.manager.directory, reason)
        skipped.append((step, reason))
        continue
      if skipped:
        logging.warning(
            "Restored the checkpoint at step %d; skipped the newer damaged checkpoint(s):\n"
            "  %s", step, "\n  ".join(f"step {s}: {r}" for s, r in skipped))
      return step, state, skipped
    lines = [f"No checkpoint in {self.manager.directory} could be restored; nothing was "
             "deleted:", *(f"  step {s}: {r}" for s, r in skipped),
             f"To start this workdir from scratch, move these step folders out of "
             f"{self.manager.directory}; or use a fresh --workdir."]
    raise CheckpointRestoreError("\n".join(lines))

  def move_damaged(self, steps: list[int]) -> list[str]:
    """Moves the checkpoints of `steps` to `<workdir>/checkpoints_damaged/<step>` (kept for
    inspection, out of the way of new saves of the same steps); returns the new paths."""
    moved = []
    if jax.process_index() == 0:
      target_root = self.workdir / DAMAGED_DIR
      target_root.mkdir(parents=True, exist_ok=True)
      for step in steps:
        source = self.manager.directory / str(step)
        target, suffix = target_root / str(step), 1
        while target.exists():
          target, suffix = target_root / f"{step}.{suffix}", suffix + 1
        if source.exists():
          source.rename(target)
          moved.append(str(target))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("slot_ot_jax_move_damaged_checkpoints")
    self.manager.reload()
    if moved:
      logging.warning("Moved the damaged checkpoint(s) aside (kept, not deleted): %s",
                      ", ".join(moved))
    return moved

  def config_changes(self) -> tuple[list[str], list[str]]:
    """(differences that need permission, allowed differences) between config.json and now."""
    saved = self.saved_config()
    if saved is None:
      return [], []
    diffs = config_differences(saved, self.config_dict)
    safe = [d for d in diffs if d.split(":", 1)[0] in RESUME_SAFE_FIELDS]
    return [d for d in diffs if d not in safe], safe

  def check_resume_config(self, step: int, allow_config_change: bool) -> list[str]:
    """Checks the current config against config.json before resuming from `step`.

    Returns the differences (empty if none).

    Raises:
      ConfigChangedError: if fields other than `RESUME_SAFE_FIELDS` differ and
        `allow_config_change` is False.
    """
    changed, safe = self.config_changes()
    if safe:
      logging.info("Resuming with changed bookkeeping fields:\n  %s", "\n  ".join(safe))
    if changed and not allow_config_change:
      raise ConfigChangedError("\n".join([
          f"The config differs from the one that trained the checkpoint at step {step} "
          f"({self.workdir / CONFIG_FILE}):",
          *("  " + d for d in changed[:_MAX_LISTED]),
          *([f"  ... and {len(changed) - _MAX_LISTED} more"] if len(changed) > _MAX_LISTED
            else []),
          "Nothing was changed in the workdir. To resume under the new config anyway, pass "
          "--allow_config_change (config.json keeps the original; the new config is saved "
          f"as config_resumed_at_{step}.json). To train the new config separately, use a "
          "fresh --workdir."]))
    if changed:
      logging.warning("Resuming from step %d with a changed config (allowed):\n  %s", step,
                      "\n  ".join(changed))
    return changed + safe

  def write_config(self, resumed_from: int | None = None, changed: bool = False) -> None:
    """Writes config.json for a new run; on a resume it is kept, and a changed config is
    written beside it as config_resumed_at_<step>.json."""
    if jax.process_index() != 0:
      return
    text = json.dumps(self.config_dict, indent=2, sort_keys=True)
    path = self.workdir / CONFIG_FILE
    if resumed_from is None or not path.exists():
      if resumed_from is not None:
        logging.warning("%s was missing beside the checkpoints; writing the current config.",
                        path)
      path.write_text(text)
    elif changed:
      (self.workdir / f"config_resumed_at_{resumed_from}.json").write_text(text)

  def save(self, step: int, state: Mapping[str, Any],
           custom_metadata: Mapping[str, Any] | None = None) -> None:
    """Starts an asynchronous save of `state` under `step` (no-op if it exists).

    `custom_metadata` (JSON values) is stored with the checkpoint, in its orbax metadata.

    Raises:
      FloatingPointError: if any leaf of `state` holds a NaN or an infinity (nothing is
        saved).
    """
    if step in self.manager.all_steps():
      return
    bad = non_finite_leaves(state)
    if bad:
      raise FloatingPointError(
          f"Refusing to save the state of step {step}: {len(bad)} leaves hold NaN or "
          f"infinity (e.g. {', '.join(bad[:3])}).")
    self.manager.save(step, args=ocp.args.StandardSave(dict(state)), force=True,
                      custom_metadata=dict(custom_metadata) if custom_metadata else None)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def better(value: float, best: float | None, mode: str) -> bool:
  """Whether `value` beats `best` (None: nothing to beat) in `mode` ("min" or "max"); a NaN
  or an infinity never does."""
  if not math.isfinite(value):
    return False
  return best is None or (value < best if mode == "min" else value > best)


class BestCheckpointer(Checkpointer):
  """The train state of the best periodic evaluation so far, in `<workdir>/checkpoints_best`.

  `update(step, value, state)`, called after each evaluation during training, saves the
  state when `value` (of the evaluation metric `config.checkpoint_best_metric`) beats the
  best so far: lower with `config.checkpoint_best_mode="min"`, higher with "max". One
  checkpoint is kept; orbax removes the previous best only once the new one is complete.
  The metric, mode and value go into the checkpoint's own orbax metadata, so that a resumed
  run reads back the value to beat; `best.json` beside it repeats them (and the step) for
  people and scripts. Saves are waited for (evaluations are rare), so best.json never names
  a checkpoint still being written. Non-finite states are refused as by `Checkpointer.save`.
  """

  def __init__(self, workdir: epath.PathLike, config: ml_collections.ConfigDict):
    super().__init__(workdir, config, subdir=BEST_CHECKPOINT_DIR, max_to_keep=1)
    self.metric = str(config.get("checkpoint_best_metric", "") or "")
    self.mode = str(config.get("checkpoint_best_mode", "min"))
    self.best = self.read_record()

  @property
  def directory(self) -> epath.Path:
    return epath.Path(self.manager.directory)

  def read_record(self) -> dict[str, Any] | None:
    """{"step", "metric", "mode", "value"} of the kept checkpoint, from its metadata (else
    from best.json if that names the same step); None if there is no best checkpoint or
    nothing says what it scored (with a warning)."""
    step = self.manager.latest_step()
    if step is None:
      return None
    try:
      found = dict(self.manager.metadata(step).custom_metadata or {})
    except Exception:  # pylint: disable=broad-except
      found = {}
    if "value" not in found:
      try:
        saved = json.loads((self.directory / BEST_RECORD_FILE).read_text())
      except (OSError, ValueError):
        saved = {}
      found = saved if isinstance(saved, dict) and saved.get("step") == step else {}
    if not isinstance(found.get("value"), (int, float)):
      logging.warning("The best checkpoint at step %d in %s has no readable record of its "
                      "score.", step, self.directory)
      return None
    return {"step": step, "metric": found.get("metric"), "mode": found.get("mode"),
            "value": float(found["value"])}

  def start(self, fresh: bool) -> None:
    """Before training: the value to beat is the kept checkpoint's, unless training starts
    from scratch (`fresh`) or the kept one was picked by another metric or mode; then the
    next evaluation replaces it (with a warning)."""
    record = self.best
    if record is None:
      return
    if fresh or (record["metric"], record["mode"]) != (self.metric, self.mode):
      reason = ("training starts from scratch" if fresh else
                f"it was picked by {record['metric']} ({record['mode']}), this run picks by "
                f"{self.metric} ({self.mode})")
      logging.warning("The best checkpoint (step %d) in %s is kept until the next evaluation "
                      "replaces it: %s.", record["step"], self.directory, reason)
      self.best = None
    else:
      logging.info("Best checkpoint so far: step %d, %s=%.6g.", record["step"], self.metric,
                   record["value"])

  def update(self, step: int, value: float, state: Mapping[str, Any]) -> bool:
    """Saves `state` (of `step`) as the best checkpoint if `value` beats the best so far.

    Returns:
      Whether it was saved.

    Raises:
      FloatingPointError: if a leaf of `state` holds a NaN or an infinity (nothing saved).
    """
    value = float(value)
    if not better(value, None if self.best is None else self.best["value"], self.mode):
      return False
    if step in self.manager.all_steps():  # A replaced best of another run or metric.
      self.manager.delete(step)
    record = {"step": step, "metric": self.metric, "mode": self.mode, "value": value}
    self.save(step, state, custom_metadata={k: record[k] for k in ("metric", "mode", "value")})
    self.wait()
    if jax.process_index() == 0:
      (self.directory / BEST_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    self.best = record
    logging.info("New best checkpoint at step %d: %s=%.6g (%s).", step, self.metric, value,
                 self.directory)
    return True

  def restore_best(self, abstract_state: Mapping[str, Any]
                   ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
    """(step, state, record or None) of the kept best checkpoint.

    Raises:
      FileNotFoundError: if there is none.
      IncompatibleCheckpointError: if it cannot hold the state of the current config.
      CheckpointRestoreError: if it is damaged.
    """
    step = self.manager.latest_step()
    if step is None:
      raise FileNotFoundError(missing_best_message(self.directory))
    try:
      state = self.restore(step, abstract_state)
    except IncompatibleCheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      reason = _failure_reason(e)
      raise CheckpointRestoreError(
          f"The best checkpoint (step {step}) in {self.directory} cannot be restored "
          f"({reason}); nothing was changed. To evaluate the latest checkpoint instead, pass "
          "--config.evaluation.checkpoint=latest.") from e
    return step, state, self.best


def missing_best_message(directory: epath.PathLike) -> str:
  return (f"No best checkpoint to evaluate in {directory}: config.evaluation.checkpoint="
          "'best' evaluates the state that training kept there for its best evaluation of "
          "config.checkpoint_best_metric, and this workdir has none (trained without "
          "checkpoint_best_metric, or not evaluated yet). Train with "
          "--config.checkpoint_best_metric=loss (same --workdir), or evaluate the latest "
          "checkpoint with --config.evaluation.checkpoint=latest.")


def open_best(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> BestCheckpointer:
  """The best checkpoint of `workdir`, for reading.

  Raises:
    FileNotFoundError: if the workdir has no best checkpoint (naming the folder and the
      config fields), without creating anything.
  """
  directory = _absolute(workdir) / BEST_CHECKPOINT_DIR
  if not directory.exists() or not any(p.name.isdigit() for p in directory.iterdir()):
    raise FileNotFoundError(missing_best_message(directory))
  return BestCheckpointer(workdir, config)

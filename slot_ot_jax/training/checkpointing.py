"""Checkpoints of the trainer: orbax CheckpointManager, config compatibility, preemption.

Layout of a workdir:
  <workdir>/checkpoints/<step>/   orbax checkpoints of the train state, the last few kept
  <workdir>/config.json           the config of the run that wrote them

A workdir whose checkpoint cannot hold the current config's state (different parameter
shapes or tree) is an `IncompatibleCheckpointError` naming the differing config fields and
parameters; other config differences (say a longer schedule) are logged and the run resumes.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any, Mapping

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Subtrees of the train state whose shapes the config determines (the optimizer state
# mirrors `params`).
_SHAPE_CHECKED = ("params", "model_state")
_MAX_LISTED = 12


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint that cannot be restored under the current config."""


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


class Checkpointer:
  """Saves and restores the train state (a dict of arrays) in `<workdir>/checkpoints`."""

  def __init__(self, workdir: epath.PathLike, config: ml_collections.ConfigDict):
    # orbax writes through tensorstore, which needs an absolute path.
    self.workdir = epath.Path(workdir)
    if not self.workdir.is_absolute() and "://" not in str(workdir):
      self.workdir = epath.Path(os.path.abspath(str(workdir)))
    self.config_dict = json.loads(config.to_json_best_effort())
    self.manager = ocp.CheckpointManager(
        self.workdir / CHECKPOINT_DIR,
        options=ocp.CheckpointManagerOptions(max_to_keep=config.checkpoints_to_keep,
                                             create=True),
        # Registered up front so that metadata can be read before the first restore.
        item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def saved_config(self) -> dict[str, Any] | None:
    path = self.workdir / CONFIG_FILE
    return json.loads(path.read_text()) if path.exists() else None

  def _incompatible(self, step: int, reason: str, details: list[str]) -> IncompatibleCheckpointError:
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

  def restore(self, step: int, abstract_state: Mapping[str, Any]) -> dict[str, Any]:
    """Restores `step` into the shapes/shardings of `abstract_state` (ShapeDtypeStructs).

    Raises:
      IncompatibleCheckpointError: if parameter shapes or the state tree differ.
    """
    metadata = self.manager.item_metadata(step)
    tree = getattr(metadata, "tree", metadata)
    if isinstance(tree, Mapping):
      mismatches = _shape_mismatches(tree, abstract_state)
      if mismatches:
        raise self._incompatible(step, "parameter shapes differ", mismatches)
    try:
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      raise self._incompatible(step, f"the state tree differs ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:300]})", []) from e
    saved = self.saved_config()
    if saved is not None:
      diffs = config_differences(saved, self.config_dict)
      if diffs:
        logging.warning("Resuming with a config that differs from the checkpoint's:\n  %s",
                        "\n  ".join(diffs))
    return dict(restored)

  def write_config(self) -> None:
    if jax.process_index() == 0:
      (self.workdir / CONFIG_FILE).write_text(json.dumps(self.config_dict, indent=2,
                                                         sort_keys=True))

  def save(self, step: int, state: Mapping[str, Any]) -> None:
    """Starts an asynchronous save of `state` under `step` (no-op if it exists)."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.StandardSave(dict(state)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class PreemptionGuard:
  """Turns SIGTERM into a flag the training loop polls, so it can save and exit cleanly.

  With several processes, `jax.experimental.multihost_utils.reached_preemption_sync_point`
  (the preemption service started by `jax.distributed.initialize`) makes every process stop
  at the same step.
  """

  def __init__(self):
    self._requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self._requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # Preemption service not running.
        return False
    return self._requested

"""Guards of a training run: one trainer per workdir, and a clean stop on SIGTERM / SIGINT.

Promises (docs/reliability.md):
  * `WorkdirLock`: one trainer per workdir (`<workdir>/train.lock`); a stale lock (dead
    process, or no heartbeat from another host for `LOCK_STALE_AFTER_S`) is taken over with
    a warning.
  * `PreemptionGuard`: SIGTERM and the first SIGINT let the running step finish and the
    trainer save a checkpoint before it stops; a second SIGINT aborts at once.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax

LOCK_FILE = "train.lock"
# The holder of a lock refreshes its modification time this often; a lock of another host
# not refreshed for LOCK_STALE_AFTER_S is stale (its PID cannot be checked from here).
LOCK_HEARTBEAT_S = 30.0
LOCK_STALE_AFTER_S = 600.0


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir's lock."""


class PreemptionGuard:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the training loop polls, so that it can
  save a checkpoint and exit cleanly. A second SIGINT aborts at once (KeyboardInterrupt),
  without waiting for the save.

  With several processes, `jax.experimental.multihost_utils.reached_preemption_sync_point`
  (the preemption service started by `jax.distributed.initialize`) makes every process stop
  at the same step.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._requested = None  # Name of the first signal received.
    self._previous = {}

  @property
  def signal_name(self) -> str | None:
    """"SIGTERM" or "SIGINT" once one was received, else None."""
    return self._requested

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
    return False

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self._requested == "SIGINT" and signum == signal.SIGINT:
      logging.warning("Second SIGINT: aborting without waiting for the checkpoint.")
      raise KeyboardInterrupt
    logging.warning("%s received: saving a checkpoint at the end of this step and stopping%s.",
                    name, " (Ctrl-C again aborts without saving)"
                    if signum == signal.SIGINT else "")
    self._requested = self._requested or name

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # Preemption service not running.
        return False
    return self._requested is not None


_HELD_LOCKS: set[str] = set()  # Lock files held by this process.


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, owned by another user.
    return True
  return True


class WorkdirLock:
  """An exclusive lock file `<workdir>/train.lock` for the lifetime of one trainer.

  The file holds the holder's PID, host, start time and command line, and is created
  atomically (O_EXCL). A second trainer on the same workdir gets a `WorkdirLockedError`
  naming the holder. A lock is stale, and taken over with a warning, when its process is
  gone (same host) or, for another host, when its modification time (refreshed every
  `LOCK_HEARTBEAT_S` by a background thread of the holder) is older than
  `stale_after_s`. Only process 0 of a multi-process run takes the lock.
  """

  def __init__(self, workdir: epath.PathLike, stale_after_s: float = LOCK_STALE_AFTER_S):
    self.path = os.path.join(os.path.abspath(str(workdir)), LOCK_FILE)
    self.stale_after_s = stale_after_s
    self._stop = threading.Event()
    self._thread = None
    self._held = False

  def holder(self) -> dict[str, Any] | None:
    """The content of the lock file, or None if there is none ({} if unreadable)."""
    try:
      with open(self.path) as f:
        text = f.read()
    except FileNotFoundError:
      return None
    try:
      return json.loads(text)
    except ValueError:
      return {}

  def _stale_reason(self, info: Mapping[str, Any]) -> str | None:
    """Why the lock described by `info` is stale, or None if it may be live."""
    try:
      age = time.time() - os.path.getmtime(self.path)
    except FileNotFoundError:
      return "it vanished"
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or not host:
      if age > LOCK_HEARTBEAT_S * 2:  # Not a half-written file of a starting trainer.
        return "its content is unreadable"
      return None
    if host == socket.gethostname():
      if pid == os.getpid():
        return None if self.path in _HELD_LOCKS else "it names this process, which holds no lock"
      return None if _pid_alive(pid) else f"process {pid} on {host} is gone"
    if age > self.stale_after_s:
      return f"no heartbeat from {host} for {age:.0f} s"
    return None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock (or a stale one over).

    Raises:
      WorkdirLockedError: naming the PID and host of the live holder.
    """
    if jax.process_index() != 0:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self.holder()
        if holder is None:
          continue  # Released meanwhile.
        reason = self._stale_reason(holder)
        if reason is None:
          raise WorkdirLockedError(
              f"The workdir {os.path.dirname(self.path)} is in use by another trainer: PID "
              f"{holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
              f"{holder.get('started', '?')} ({holder.get('command', '?')}). Wait for it to "
              f"finish or stop it (SIGTERM saves a checkpoint), or use another --workdir. If "
              f"that process is certainly gone, delete {self.path}.") from None
        logging.warning("Taking over the stale lock %s (%s): %s", self.path, reason, holder)
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(info, f)
      self._held = True
      _HELD_LOCKS.add(self.path)
      self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                      name="workdir-lock-heartbeat")
      self._thread.start()
      return self
    raise WorkdirLockedError(f"Could not take the lock {self.path}; another trainer keeps "
                             "taking it. Use another --workdir.")

  def _heartbeat(self) -> None:
    while not self._stop.wait(LOCK_HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    """Removes the lock file if this trainer holds it."""
    if not self._held:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    _HELD_LOCKS.discard(self.path)
    self._held = False
    holder = self.holder()
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False

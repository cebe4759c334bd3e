"""Experiments. The Task interface and registry are in `base` and re-exported here; each
other file is one experiment, registered under its `config.task` name and imported on
first use (so `from slot_ot_jax import tasks` loads no model or data code).

  base                 Task, register_task, get_task, task_names, apply_model
  random_objects       random-objects detection (MESH §5.1, Table 1)
  object_discovery     unsupervised object discovery (Multi-dSprites ... ClevrTex)
  property_prediction  CLEVR property prediction (AP at distance thresholds)
  video                two-frame video (CLEVRER-S/L, temporal consistency)
  dinosaur             DINOSAUR feature reconstruction on MOVi-C/D
"""
from slot_ot_jax.tasks.base import Array
from slot_ot_jax.tasks.base import Batch
from slot_ot_jax.tasks.base import Task
from slot_ot_jax.tasks.base import Variables
from slot_ot_jax.tasks.base import apply_model
from slot_ot_jax.tasks.base import get_task
from slot_ot_jax.tasks.base import register_task
from slot_ot_jax.tasks.base import task_names

__all__ = ["Array", "Batch", "Task", "Variables", "apply_model", "get_task", "register_task",
           "task_names"]

r"""Object discovery on the offline procedural shapes (datasets/shapes): SA vs SA-SH vs SA-MESH.

  python main.py --config=configs/shapes.py:attention=mesh,seed=0 --workdir=workdirs/shapes_mesh_0

Arguments: attention=softmax|sinkhorn|mesh, update_norm=..., seed=<int>, steps=<int>
(default 20000), width=<conv channels, 32>, batch_size=<int, 64>, runlocal=1.
Evaluation only: add --config.mode=eval (test split, 320 images).

Data: shapes/32x32 (dSprites-like squares, ellipses, hearts; 1-3 per image; 5,000 training,
320 validation and 320 test images); 4 slots. Model: the Multi-dSprites model (5x5 convs,
full-resolution broadcast decoder) at 32x32, slot size 64, slot MLP 128, 3 iterations. Adam
4e-4 with the papers' schedule compressed to the run (warm-up 2%, halved every fifth),
clipping 0.1.

Published: none (a dataset of this project). The CPU demonstration at a small budget is
benchmarks/results/object_discovery_shapes.md (scripts/object_discovery_demo.py).

Runtime: 20k steps are about an hour or more on one CPU core for SA (several times that for
SA-MESH); minutes on a GPU (not measured). runlocal=1: about a minute.

Initialisation: framework_defaults="flax" (docs/reference_defaults.md): an offline
demonstration, not a paper setting; its settings were chosen and its documented numbers measured
with Flax's initialisers. `--config.model.slot_attention.framework_defaults=torch` gives the MESH
reference's.
"""
from configs import object_discovery


def get_config(arg=None):
  return object_discovery.build("shapes", arg)

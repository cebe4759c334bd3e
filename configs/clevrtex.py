r"""ClevrTex object discovery: MESH paper Table 4, App. F.3.

  python main.py --config=configs/clevrtex.py:attention=sinkhorn,seed=0 \
      --workdir=workdirs/clevrtex_sinkhorn_0

Arguments: attention=softmax|sinkhorn|mesh, update_norm=..., seed=<int>, runlocal=1.
Evaluation only: add --config.mode=eval (official test split, images 0-4999, as reported). SA-MESH
with
its defaults is also configs/clevrtex_mesh.py.

Data: clevrtex/full, official centre crop, resized to 64x64 (not 128), up to 10 objects (11
slots). Evaluation as the MESH code (`config/data/clevrtex64.yaml`, `run_object_discovery.py`):
during training on validation[:320], images 5000-5319 (the official validation split starts
at 5000); the numbers MESH Table 4 reports are the test split, images 0-4999 (our
mode=eval). The MESH trainer tests the checkpoint of lowest validation loss (its
ModelCheckpoint monitors loss/val; `trainer.test` after `fit` loads the best one), and so does
mode=eval here: training keeps the state of lowest evaluation loss in WORKDIR/checkpoints_best/
(checkpoint_best_metric="loss", checkpoint_best_mode="min") and mode=eval restores it
(evaluation.checkpoint="best"; --config.evaluation.checkpoint=latest evaluates the latest
checkpoint instead). FG-mIoU is MESH's
(evaluation.count_unmatched_predictions=False; True gives the ClevrTex evaluator's). Model: the
Multi-dSprites model
with 64 conv channels, slot size 128, slot MLP 256, 3 iterations. Batch 64, Adam 4e-4,
warm-up 10k, decay 0.5 per 100k, clipping 0.1, 530 epochs of 40,000 images (331,250 steps).

Published (%, 5 seeds), MESH Table 4:
  SA       FG-ARI 52.8   FG-mIoU 26.3
  SA-SH    FG-ARI 70.8   FG-mIoU 35.3
  SA-MESH  FG-ARI 79.0   FG-mIoU 43.2

Runtime: not given by the paper; a GPU day or more (331k steps at 64x64 with 64 channels).
CPU: not practical (runlocal=1: about a minute). Without the data the run stops at once with
the preparation instructions (datasets/README.md).

Initialisation: framework_defaults="torch" (docs/reference_defaults.md):
the MESH reference (PyTorch); ClevrTex is a MESH setting (Table 4).
"""
from configs import object_discovery


def get_config(arg=None):
  return mesh_protocol(object_discovery.build("clevrtex", arg))


# The MESH ClevrTex data config (`config/data/clevrtex64.yaml`): train images 10000-49999,
# val 5000-5319, test 0-4999 of the full set (its h5 holds the images in index order).
MESH_EVAL_SPLIT = "validation[:320]"


def mesh_protocol(config):
  """Evaluation during training on the MESH validation images (not for runlocal=1)."""
  if config.data.name == "clevrtex/full":
    config.data.eval_split = MESH_EVAL_SPLIT
  return config

r"""Multi-dSprites object discovery: MESH paper Table 3 (and SA paper Table 1), App. F.3.

  python main.py --config=configs/multi_dsprites.py:attention=mesh,seed=1 \
      --workdir=workdirs/multi_dsprites_mesh_1

Arguments: attention=softmax|sinkhorn|mesh (SA / SA-SH / SA-MESH), update_norm=..., seed=<int>,
runlocal=1 (one-minute CPU run on shapes/tiny). Evaluation only (test split, records
60320-63200): add --config.mode=eval (see configs/object_discovery.py). As the MESH code
(`run_object_discovery.py`: ModelCheckpoint on loss/val, then `trainer.test` of the best
checkpoint), mode=eval evaluates the checkpoint of lowest validation loss, which training keeps
in WORKDIR/checkpoints_best/ (checkpoint_best_metric="loss", evaluation.checkpoint="best";
--config.evaluation.checkpoint=latest evaluates the latest checkpoint).

Data: multi_dsprites_colored_on_grayscale at 64x64, at most 5 objects (6 slots); train records
0-60000, evaluation during training on validation (60000-60320). Model (SA supplement): 4 x 5x5
convs of 32 channels, full-resolution broadcast decoder, slot size 64, slot MLP 128, 3
iterations. Batch 64, Adam 4e-4, warm-up 10k, decay 0.5 per 100k, clipping 0.1, 530 epochs
(496,875 steps).

Published (%, 5 seeds), MESH Table 3:
  SA       FG-ARI 92.2 +- 0.5   FG-mIoU 24.3
  SA-SH    FG-ARI 87.2 +- 1.8   FG-mIoU 84.0
  SA-MESH  FG-ARI 95.6 +- 0.2   FG-mIoU 86.2
SA paper Table 1: SA FG-ARI 91.3 +- 0.3.

Runtime: about 24 h for SA on one V100 (SA supplement); SA-MESH slower per step (not measured
here). CPU: not practical (runlocal=1: about a minute).

Initialisation: framework_defaults="torch" (docs/reference_defaults.md):
the MESH reference (PyTorch) this setting reproduces (MESH Table 3).
"""
from configs import object_discovery


def get_config(arg=None):
  return object_discovery.build("multi_dsprites", arg, attention="mesh")

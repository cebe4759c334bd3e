r"""SA-MESH on ClevrTex: MESH paper Table 4 (FG-ARI 79.0, FG-mIoU 43.2 %, 5 seeds), App. F.3.

  python main.py --config=configs/clevrtex_mesh.py --workdir=workdirs/clevrtex_mesh

Same as configs/clevrtex.py with attention=mesh (arguments: seed=<int>, update_norm=...,
runlocal=1; attention= also accepted). ClevrTex must be prepared first: without it the command
fails within seconds, naming the official URL, the expected files and
`python datasets/prepare.py clevrtex/full --manual_dir=MANUAL_DIR`.

Data: clevrtex/full, official crop, 64x64, 11 slots. Model: 64-channel encoder/decoder, slot
size 128, slot MLP 256, MESH (4 steps, lr 8, noise 1e-3, 5 Sinkhorn iterations), learned
marginals. Batch 64, Adam 4e-4, warm-up 10k, decay 0.5 per 100k, clipping 0.1, 331,250 steps.
Evaluation as the MESH code (configs/clevrtex.py): during training on validation[:320]
(images 5000-5319); the reported numbers are the test split (images 0-4999), of the
checkpoint of lowest validation loss. Evaluation only: add --config.mode=eval (test split, the
checkpoint of lowest validation loss kept in WORKDIR/checkpoints_best/).

Published (%), MESH Table 4: SA 52.8 / 26.3, SA-SH 70.8 / 35.3, SA-MESH 79.0 / 43.2
(FG-ARI / FG-mIoU).

Runtime: not given by the paper; a GPU day or more. CPU: not practical (runlocal=1: about a
minute).

Initialisation: framework_defaults="torch" (docs/reference_defaults.md):
the MESH reference (PyTorch), as configs/clevrtex.py.
"""
from configs import clevrtex
from configs import object_discovery


def get_config(arg=None):
  return clevrtex.mesh_protocol(object_discovery.build("clevrtex", arg, attention="mesh"))

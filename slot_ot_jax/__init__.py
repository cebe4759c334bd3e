"""slot_ot_jax: Slot Attention and its optimal-transport variants in JAX/Flax.

  from slot_ot_jax import SlotAttention      # the module (slot_ot_jax.modules.attention)
  from slot_ot_jax import transport          # pure OT functions: sinkhorn, mesh_sinkhorn, emd, ...

Packages, by layer (the import rule is in docs/design.md and tests/test_layout.py):
  transport   OT numerics on arrays            imports nothing of ours
  modules     Flax modules                     imports transport
  data        input pipelines                  imports nothing of ours
  evaluation  metrics, AP, sweeps, images      imports nothing of ours
  tasks       one experiment per file          imports modules, transport, data, evaluation
  training    generic trainer, sweep runner    imports the Task interface and evaluation
  analysis    the papers' figures              may import anything; nothing imports it
"""
from slot_ot_jax import transport  # noqa: F401  (the functional OT API, re-exported)

__version__ = "0.1.0"


def __getattr__(name):
  # Imported lazily so that `import slot_ot_jax` stays light (no Flax).
  if name in ("SlotAttention", "SlotMLP"):
    from slot_ot_jax.modules import attention  # pylint: disable=g-import-not-at-top
    return getattr(attention, name)
  raise AttributeError(f"module 'slot_ot_jax' has no attribute {name!r}")

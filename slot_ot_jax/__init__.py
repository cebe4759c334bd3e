"""slot_ot_jax: Slot Attention and its optimal-transport variants in JAX/Flax.

`from slot_ot_jax import SlotAttention` gives the module; `slot_ot_jax.transport` holds the
pure optimal-transport functions (Sinkhorn, MESH, EMD).
"""
from slot_ot_jax import transport

__version__ = "0.1.0"


def __getattr__(name):
  # Imported lazily so that `import slot_ot_jax.transport` stays light.
  if name in ("SlotAttention", "SlotMLP"):
    from slot_ot_jax import attention  # pylint: disable=g-import-not-at-top
    return getattr(attention, name)
  raise AttributeError(f"module 'slot_ot_jax' has no attribute {name!r}")

"""Pure optimal-transport functions on arrays: costs, Sinkhorn, MESH, exact OT.

The numerical layer of the library: no Flax, no configs, and no import of any other
`slot_ot_jax` package (tests/test_layout.py holds the rule). Axis convention, any leading
batch dims: cost and plan [..., N, K] (N inputs, K slots), marginals a [..., N] and
b [..., K] of equal total mass, log-domain potentials f [..., N] and g [..., K].

  sinkhorn_ot   costs, log-domain Sinkhorn with an analytic backward pass, entropies,
                slot softmax, exact-forward / Sinkhorn-gradient EMD (SA-SH, SA-EMD)
  mesh_ot       MESH: normalised entropy-gradient steps on the cost, reused potentials
  exact_ot      exact OT on the host through POT's network simplex (needs the `emd` extra)

Everything public is re-exported here: `from slot_ot_jax import transport;
transport.mesh_sinkhorn(...)`.
"""
from slot_ot_jax.transport.exact_ot import emd
from slot_ot_jax.transport.mesh_ot import mesh
from slot_ot_jax.transport.mesh_ot import mesh_sinkhorn
from slot_ot_jax.transport.sinkhorn_ot import COSTS
from slot_ot_jax.transport.sinkhorn_ot import ENTROPY_CLIP
from slot_ot_jax.transport.sinkhorn_ot import KERNEL_LOG_FLOOR
from slot_ot_jax.transport.sinkhorn_ot import MIN_MARGINAL
from slot_ot_jax.transport.sinkhorn_ot import Array
from slot_ot_jax.transport.sinkhorn_ot import Potentials
from slot_ot_jax.transport.sinkhorn_ot import cosine_cost
from slot_ot_jax.transport.sinkhorn_ot import dot_cost
from slot_ot_jax.transport.sinkhorn_ot import emd_sinkhorn
from slot_ot_jax.transport.sinkhorn_ot import entropy
from slot_ot_jax.transport.sinkhorn_ot import euclidean_cost
from slot_ot_jax.transport.sinkhorn_ot import get_cost_fn
from slot_ot_jax.transport.sinkhorn_ot import mesh_entropy
from slot_ot_jax.transport.sinkhorn_ot import sinkhorn
from slot_ot_jax.transport.sinkhorn_ot import slot_softmax
from slot_ot_jax.transport.sinkhorn_ot import sqeuclidean_cost

__all__ = [
    "COSTS", "ENTROPY_CLIP", "KERNEL_LOG_FLOOR", "MIN_MARGINAL", "Array", "Potentials",
    "cosine_cost", "dot_cost", "emd", "emd_sinkhorn", "entropy", "euclidean_cost",
    "get_cost_fn", "mesh", "mesh_entropy", "mesh_sinkhorn", "sinkhorn", "slot_softmax",
    "sqeuclidean_cost",
]

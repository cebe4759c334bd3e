"""SlotAttention: one Flax module holding every attention and update normalisation of the papers.

Variants (module fields that select them, see README "Variants"):

  SA        attention="softmax"   (Locatello et al. 2020, Alg. 1)
  SA-SH     attention="sinkhorn"  (Zhang et al. 2023, eq. 7, learned marginals App. A)
  SA-EMD    attention="emd"       (eq. 8: emd(C) + sinkhorn(C), gradient from Sinkhorn)
  SA-MESH   attention="mesh"      (eqs. 9-12; objectives: entropy, App. B similarity,
                                   App. I learned)
  dagger    detach_slots=True     (Chang et al. 2022: gradient through the last iteration only)
  update_norm: weighted_mean | sum | weighted_sum | layer_norm | batch_norm  (Krimmel et al.)

Shapes: inputs [B, N, D_in] -> slots [B, K, slot_size]; cost and attention [B, N, K];
marginals a [B, N] (inputs), b [B, K] (slots). RNG streams: "slots" (initial-slot noise)
and "mesh" (MESH cost noise, one draw per forward pass shared by all iterations, as the
MESH reference). Intermediates sown under "intermediates": attn, cost, a, b (one entry per
iteration, in order).

Mixed precision (`compute_dtype="bfloat16"`): the projections, the GRU, the slot MLP, the
marginal networks and the LayerNorms compute in bfloat16 (parameters stay float32), while the
OT core stays float32: keys and queries are cast to float32 before the cost, the marginals'
softmax, the cost, Sinkhorn / MESH / EMD (and softmax attention) and the aggregation
attn^T v all run in float32.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from slot_ot_jax import transport
from slot_ot_jax.modules import defaults
from slot_ot_jax.transport import mesh_ot

Array = jax.Array

ATTENTIONS = ("softmax", "sinkhorn", "emd", "mesh")
UPDATE_NORMS = ("auto", "weighted_mean", "sum", "weighted_sum", "layer_norm", "batch_norm")
SLOT_INITS = ("shared_gaussian", "per_slot", "fixed_random", "identical")
MARGINALS = ("learned", "uniform")
MESH_OBJECTIVES = ("entropy", "similarity", "learned")
COMPUTE_DTYPES = ("float32", "bfloat16")
FRAMEWORK_DEFAULTS = defaults.STYLES


def _check(name: str, value, valid) -> None:
  if value not in valid:
    raise ValueError(f"Unknown {name} {value!r}; valid values: {list(valid)}")


def _check_num_slots(k, source: str) -> None:
  """Raises ValueError unless the slot count `k` (from `source`) is an integer >= 1."""
  if isinstance(k, bool) or not isinstance(k, (int, jnp.integer)) or k < 1:
    raise ValueError(f"SlotAttention needs at least one slot: got K={k!r} from {source}; "
                     "the number of slots must be an integer >= 1.")


class ScalarBatchNorm(nn.Module):
  """Scalar batch normalisation of update codes (Krimmel et al. §4.2, eqs. 14-15).

  `stats(u0)` measures the mean and (unbiased) variance over all axes (batch, slots,
  features) of the first iteration's unnormalised updates in training, with gradients
  flowing through them, and keeps exponential moving averages in `batch_stats` for
  evaluation; `__call__(u, stats)` applies alpha * (u - m) / sqrt(v + eps) + beta with
  scalar learned alpha, beta. The momentum is not given in the paper; 0.99 is Flax's default.
  """
  momentum: float = 0.99
  epsilon: float = 1e-5

  def setup(self):
    self.alpha = self.param("alpha", nn.initializers.ones, ())
    self.beta = self.param("beta", nn.initializers.zeros, ())
    self.ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((), jnp.float32))
    self.ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((), jnp.float32))

  def stats(self, u0: Array, train: bool) -> tuple[Array, Array]:
    if not train:
      return self.ra_mean.value, self.ra_var.value
    mean = jnp.mean(u0)
    var = jnp.sum(jnp.square(u0 - mean)) / max(u0.size - 1, 1)
    if not self.is_initializing():
      m = self.momentum
      self.ra_mean.value = m * self.ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
      self.ra_var.value = m * self.ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
    return mean, var

  def __call__(self, u: Array, stats: tuple[Array, Array]) -> Array:
    mean, var = stats
    return self.alpha * (u - mean) / jnp.sqrt(var + self.epsilon) + self.beta


class _PairSimilarity(nn.Module):
  """g(z_i, z_j) of MESH App. B: a small MLP on slot pairs -> S [B, K, K], columns sum to 1."""
  hidden: int
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, z: Array) -> Array:
    k = z.shape[-2]
    pairs = jnp.concatenate([jnp.repeat(z[..., :, None, :], k, axis=-2),
                             jnp.repeat(z[..., None, :, :], k, axis=-3)], axis=-1)
    s = _MLP(self.hidden, 1, framework_defaults=self.framework_defaults)(pairs)[..., 0]  # [B, K, K]
    return jax.nn.softmax(s, axis=-2)  # normalise each column (App. B, eq. 19)


class _MLP(nn.Module):
  """Dense(hidden) -> ReLU -> Dense(out), computed in `dtype`.

  `mlp_block`: the residual slot MLP, an MLP the OCL reference builds with zero biases
  (see `defaults.dense`).
  """
  hidden: int
  out: int
  out_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  framework_defaults: str = "flax"
  mlp_block: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    style, block = self.framework_defaults, self.mlp_block
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden",
                         **defaults.dense(style, x.shape[-1], mlp_block=block))(x))
    return nn.Dense(self.out, use_bias=self.out_bias, dtype=self.dtype, name="out",
                    **defaults.dense(style, self.hidden, mlp_block=block))(h)


class _ScalarMLP(nn.Module):
  """The learned MESH objective of App. I: a 2-layer ReLU MLP, 32 hidden units, scalar in/out."""
  framework_defaults: str = "flax"

  @nn.compact
  def __call__(self, p: Array) -> Array:
    style = self.framework_defaults
    h = nn.relu(nn.Dense(32, **defaults.dense(style, 1))(p[..., None]))
    h = nn.relu(nn.Dense(32, **defaults.dense(style, 32))(h))
    return nn.Dense(1, **defaults.dense(style, 32))(h)[..., 0]


class SlotAttention(nn.Module):
  """Slot Attention with softmax, Sinkhorn, EMD or MESH attention.

  Defaults are the papers': Locatello et al. (2020) Table 10 and Alg. 1 for the module,
  the MESH reference (App. F) for the OT variants (Euclidean cost, 5 Sinkhorn iterations,
  4 MESH steps, lr 8, noise 1e-3 N(0, 1), learned marginals scaled by K).

  Attributes:
    num_slots: K (may be overridden per call where the initialisation allows it).
    slot_size: D of slots, queries, keys and values.
    mlp_size: hidden width of the residual slot MLP (and of the marginal networks).
    num_iters: slot-attention iterations in training.
    num_iters_eval: iterations in evaluation (default: num_iters).
    attention: "softmax" | "sinkhorn" | "emd" | "mesh".
    cost: None (default: "dot" for softmax, "euclidean" for the OT variants) or a name of
      `transport.COSTS`. Softmax attention uses -cost as logits; with "dot" this is SA's
      scaled dot product q.k / sqrt(D).
    cost_scale: multiplies the cost (the reference's `scale_cost`).
    temperature: divides the logits (softmax) or regularises Sinkhorn.
    epsilon: added to the softmax attention before the weighted mean (Alg. 1).
    sinkhorn_iters: Sinkhorn iterations (final Sinkhorn and each MESH step).
    marginals: "learned" (App. A: a = s softmax_N(h_a(x)), b = s softmax_K(h_b(z))) or
      "uniform" (a = s / N, b = s / K); s = marginal_scale or K. Unused by softmax.
    marginal_scale: total mass s of the marginals (default: the number of slots K).
    mesh_steps, mesh_lr, mesh_noise_scale, mesh_temperature, mesh_reuse_potentials:
      see `mesh_ot.mesh`; learn_mesh_lr makes lr a parameter, initialised at
      mesh_lr under framework_defaults="flax" and at 1 (the MESH reference's) otherwise.
    mesh_lr_per_entry: read mesh_lr as the step per cost entry: the normalised MESH step
      is multiplied by sqrt(N K), so each of the N*K entries moves by about mesh_lr (root
      mean square) whatever the problem size. False (default, the reference) moves the
      whole [N, K] cost by mesh_lr, i.e. each entry by mesh_lr / sqrt(N K): lr 8 at the
      image setting (N = 4096, K = 6) is 0.051 per entry, but 0.35 at N = 105, K = 5.
    mesh_objective: "entropy" (default), "similarity" (App. B / eq. 9 of the workshop
      version: H + alpha ||P'S - P||^2, S from a learned pair network) or "learned"
      (App. I: a 2-layer, 32-unit scalar MLP summed over entries replaces the entropy).
    mesh_similarity_alpha: alpha of the similarity objective.
    mesh_differentiate_steps: differentiate the unrolled MESH steps. Default (None): False
      for the entropy objective (straight-through, the paper's choice), True for the
      parametric objectives, whose parameters get no gradient otherwise.
    update_norm: normalisation of the aggregated values attn^T v ([B, K, D]):
      "weighted_mean" divides by the attention column sums (SA); for an OT plan, whose
        columns sum to b_k, this is division by b_k (a true weighted mean);
      "sum" leaves attn^T v as is (Locatello's C=1 ablation; the MESH reference for the
        OT variants, where the column masses b_k average 1 with the default scale K);
      "weighted_sum" divides by N (Krimmel et al. §4.1, bounded by max |v|, eq. 13);
      "layer_norm" applies a LayerNorm shared across slots;
      "batch_norm" the scalar batch norm of Krimmel et al. §4.2 (`ScalarBatchNorm`);
      "auto" (default) means weighted_mean for softmax and sum for the OT variants.
    slot_init: "shared_gaussian" (learned mean and log-scale shared by slots,
      reparameterised; Alg. 1), "per_slot" (a learned vector per slot, 002 Fig. 3),
      "fixed_random" (mean and log-scale fixed at random values, not trained) or
      "identical" (all slots start at one learned vector; ties are broken by MESH/EMD only).
    detach_slots: stop the slots' gradient at the start of every iteration, so gradients
      reach parameters through the last iteration only (Chang et al. 2022; the dagger rows).
    norm_inputs: LayerNorm on the inputs before the projections and the input-marginal
      network (Alg. 1). False keeps the inputs' own scale (an ablation: with the LayerNorm,
      the scale sigma of the random-objects data only sets the scale of the targets).
    compute_dtype: "float32" or "bfloat16": the computation dtype of the layers outside
      the OT core (see the module docstring); the OT core always runs in float32.
    framework_defaults: "flax" (default) | "torch" | "keras" | "ocl": whose initialisers
      and LayerNorm epsilon the layers use, and where a learned MESH step starts
      (`slot_ot_jax/modules/defaults.py`; docs/reference_defaults.md).
  """
  num_slots: int
  slot_size: int = 64
  mlp_size: int = 128
  num_iters: int = 3
  num_iters_eval: Optional[int] = None
  attention: str = "softmax"
  cost: Optional[str] = None
  cost_scale: float = 1.0
  temperature: float = 1.0
  epsilon: float = 1e-8
  sinkhorn_iters: int = 5
  marginals: str = "learned"
  marginal_scale: Optional[float] = None
  mesh_steps: int = 4
  mesh_lr: float = 8.0
  mesh_noise_scale: float = 1e-3
  mesh_temperature: float = 1.0
  mesh_reuse_potentials: bool = True
  learn_mesh_lr: bool = False
  mesh_lr_per_entry: bool = False
  mesh_objective: str = "entropy"
  mesh_similarity_alpha: float = 1.0
  mesh_differentiate_steps: Optional[bool] = None
  update_norm: str = "auto"
  slot_init: str = "shared_gaussian"
  fixed_init_seed: int = 0
  detach_slots: bool = False
  norm_inputs: bool = True
  compute_dtype: str = "float32"
  framework_defaults: str = "flax"

  def _validate(self):
    _check("attention", self.attention, ATTENTIONS)
    _check("update_norm", self.update_norm, UPDATE_NORMS)
    _check("slot_init", self.slot_init, SLOT_INITS)
    _check("marginals", self.marginals, MARGINALS)
    _check("mesh_objective", self.mesh_objective, MESH_OBJECTIVES)
    _check("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
    defaults.check(self.framework_defaults)
    if self.cost is not None:
      transport.get_cost_fn(self.cost)

  # ---------------------------------------------------------------- initial slots
  def _initial_slots(self, batch: int, k: int, dtype) -> Array:
    d = self.slot_size
    init = defaults.slot_parameter(self.framework_defaults)
    if self.slot_init == "per_slot":
      if k != self.num_slots:
        raise ValueError(
            f"slot_init='per_slot' learns one vector per slot, so the number of slots is "
            f"fixed at {self.num_slots}; got num_slots={k}. Use slot_init='shared_gaussian' "
            "to change the slot count between training and evaluation.")
      emb = self.param("slots_embedding", init, (k, d))
      return jnp.broadcast_to(emb, (batch, k, d)).astype(dtype)
    if self.slot_init == "identical":
      mu = self.param("slots_mu", init, (1, 1, d))
      return jnp.broadcast_to(mu, (batch, k, d)).astype(dtype)
    if self.slot_init == "fixed_random":
      key_mu, key_sigma = jax.random.split(jax.random.PRNGKey(self.fixed_init_seed))
      mu, log_sigma = init(key_mu, (1, 1, d)), init(key_sigma, (1, 1, d))
    else:  # shared_gaussian; both get gradients through the reparameterisation.
      mu = self.param("slots_mu", init, (1, 1, d))
      log_sigma = self.param("slots_log_sigma", init, (1, 1, d))
    noise = jax.random.normal(self.make_rng("slots"), (batch, k, d), dtype)
    return mu + jnp.exp(log_sigma) * noise

  # ---------------------------------------------------------------- MESH objective
  def _build_mesh_objective(self):
    """Creates the objective's parameters once; returns objective(plan, z, plan0) -> [B]."""
    if self.mesh_objective == "entropy":
      return lambda plan, s, plan0: transport.mesh_entropy(plan)
    if self.mesh_objective == "similarity":
      alpha = self.mesh_similarity_alpha

      def similarity_objective(plan, s, plan0):
        resid = jnp.einsum("...nk,...kj->...nj", plan, s) - plan0
        return transport.mesh_entropy(plan) + alpha * jnp.mean(jnp.square(resid), (-2, -1))
      return similarity_objective
    # Learned scalar objective (App. I). Its parameters are applied functionally because
    # the objective runs inside jax.grad / lax.scan.
    mlp = _ScalarMLP(framework_defaults=self.framework_defaults, parent=None)
    params = self.param("mesh_objective_mlp",
                        lambda key: mlp.init(key, jnp.zeros((1,)))["params"])
    return lambda plan, s, plan0: jnp.mean(mlp.apply({"params": params}, plan), (-2, -1))

  # ---------------------------------------------------------------- forward
  @nn.compact
  def __call__(self, inputs: Array, *, train: bool = False,
               initial_slots: Optional[Array] = None,
               num_slots: Optional[int] = None) -> Array:
    """inputs [B, N, D_in] -> slots [B, K, slot_size].

    Args:
      inputs: input set (e.g. flattened CNN features).
      train: selects num_iters vs num_iters_eval, and batch vs running statistics.
      initial_slots: optional [B, K, slot_size] starting slots (e.g. the previous video
        frame's); overrides `slot_init`.
      num_slots: optional K for this call (e.g. more slots at evaluation).
    """
    self._validate()
    batch, n, _ = inputs.shape
    d = self.slot_size
    ot = self.attention != "softmax"
    cost_fn = transport.get_cost_fn(self.cost or ("euclidean" if ot else "dot"))
    update_norm = self.update_norm
    if update_norm == "auto":
      update_norm = "sum" if ot else "weighted_mean"
    iters = self.num_iters if (train or self.num_iters_eval is None) else self.num_iters_eval
    dtype = jnp.dtype(self.compute_dtype)   # Layers outside the OT core.
    f32 = jnp.float32                       # The OT core.

    if initial_slots is not None:
      slots = initial_slots
      k = slots.shape[-2]
      _check_num_slots(k, "the slot axis of initial_slots")
    else:
      k = self.num_slots if num_slots is None else num_slots
      _check_num_slots(k, "the num_slots field" if num_slots is None
                       else "the num_slots argument")
      slots = self._initial_slots(batch, k, jnp.promote_types(inputs.dtype, f32))

    # Submodules are built once and shared by all iterations (tied weights).
    style = self.framework_defaults
    ln = defaults.layer_norm(style)
    x = (nn.LayerNorm(dtype=dtype, name="norm_inputs", **ln)(inputs) if self.norm_inputs
         else inputs)
    d_in = inputs.shape[-1]
    keys = nn.Dense(d, use_bias=False, dtype=dtype, name="project_k",
                    **defaults.dense(style, d_in))(x)                          # [B, N, D]
    values = nn.Dense(d, use_bias=False, dtype=dtype, name="project_v",
                      **defaults.dense(style, d_in))(x)                        # [B, N, D]
    keys, values = keys.astype(f32), values.astype(f32)
    norm_slots = nn.LayerNorm(dtype=dtype, name="norm_slots", **ln)
    project_q = nn.Dense(d, use_bias=False, dtype=dtype, name="project_q",
                         **defaults.dense(style, d))
    gru = nn.GRUCell(features=d, dtype=dtype, name="gru", **defaults.gru(style, d, d))
    norm_mlp = nn.LayerNorm(dtype=dtype, name="norm_mlp", **ln)
    mlp = _MLP(self.mlp_size, d, dtype=dtype, framework_defaults=style, mlp_block=True,
               name="mlp")
    norm_updates = {"layer_norm": lambda: nn.LayerNorm(name="norm_updates", **ln),
                    "batch_norm": lambda: ScalarBatchNorm(name="batch_norm")}.get(update_norm)
    norm_updates = norm_updates() if norm_updates else None

    scale = float(self.marginal_scale or k)
    if ot and self.marginals == "learned":
      h_a = _MLP(self.mlp_size, 1, out_bias=False, dtype=dtype, framework_defaults=style,
                 name="marginal_inputs")
      h_b = _MLP(self.mlp_size, 1, out_bias=False, dtype=dtype, framework_defaults=style,
                 name="marginal_slots")
      a = scale * jax.nn.softmax(h_a(x)[..., 0].astype(f32), axis=-1)      # [B, N]
    else:
      h_b = None
      a = jnp.full((batch, n), scale / n, f32)
    mesh_args = None
    if self.attention == "mesh":
      noise = jax.random.normal(self.make_rng("mesh"), (batch, n, k), jnp.float32)
      # A learned step starts where the style's reference starts it (MESH: at 1).
      lr0 = defaults.learned_mesh_lr(style, self.mesh_lr)
      lr = (self.param("mesh_lr", lambda _: jnp.asarray(lr0, jnp.float32))
            if self.learn_mesh_lr else self.mesh_lr)
      if self.mesh_lr_per_entry:
        lr = lr * math.sqrt(n * k)
      pair_sim = (_PairSimilarity(self.mlp_size, framework_defaults=style,
                                  name="mesh_similarity")
                  if self.mesh_objective == "similarity" else None)
      mesh_args = (noise, lr, self._build_mesh_objective(), pair_sim)

    bn_stats = None
    for _ in range(iters):
      if self.detach_slots:
        slots = jax.lax.stop_gradient(slots)
      slots_prev = slots
      z = norm_slots(slots)
      queries = project_q(z).astype(f32)                         # [B, K, D]
      cost = self.cost_scale * cost_fn(keys, queries)            # [B, N, K]
      if ot:
        b = (scale * jax.nn.softmax(h_b(z)[..., 0].astype(f32), axis=-1) if h_b is not None
             else jnp.full((batch, k), scale / k, f32))          # [B, K]
        attn = self._transport(cost, a, b, z.astype(f32), mesh_args)
        self.sow("intermediates", "a", a)
        self.sow("intermediates", "b", b)
      else:
        attn = jax.nn.softmax(-cost / self.temperature, axis=-1) + self.epsilon
      self.sow("intermediates", "cost", cost)
      self.sow("intermediates", "attn", attn)

      updates = jnp.einsum("bnk,bnd->bkd", attn, values)         # [B, K, D]
      if update_norm == "weighted_mean":
        updates = updates / jnp.maximum(jnp.sum(attn, axis=1)[..., None], 1e-12)
      elif update_norm == "weighted_sum":
        updates = updates / n
      elif update_norm == "layer_norm":
        updates = norm_updates(updates)
      elif update_norm == "batch_norm":
        if bn_stats is None:  # statistics of the first iteration, reused afterwards
          bn_stats = norm_updates.stats(updates, train)
        updates = norm_updates(updates, bn_stats)

      slots, _ = gru(slots_prev.reshape(-1, d), updates.reshape(-1, d))
      slots = slots.reshape(batch, k, d)
      slots = slots + mlp(norm_mlp(slots))
    return slots

  def _transport(self, cost, a, b, z, mesh_args):
    sk = dict(num_iters=self.sinkhorn_iters, temperature=self.temperature)
    if self.attention == "sinkhorn":
      return transport.sinkhorn(cost, a, b, **sk)[0]
    if self.attention == "emd":
      return transport.emd_sinkhorn(cost, a, b, **sk)
    noise, lr, objective, pair_sim = mesh_args
    differentiate = self.mesh_differentiate_steps
    if differentiate is None:  # parametric objectives need the unrolled gradient
      differentiate = self.mesh_objective != "entropy"
    s = plan0 = None
    if pair_sim is not None:
      s = pair_sim(z)                                           # [B, K, K]
      plan0 = transport.sinkhorn(cost, a, b, **sk)[0]           # sinkhorn(C), eq. 13
    cost_mesh, init = mesh_ot.mesh(
        cost, a, b, noise, num_steps=self.mesh_steps, lr=lr,
        noise_scale=self.mesh_noise_scale, sinkhorn_iters=self.sinkhorn_iters,
        temperature=self.mesh_temperature, reuse_potentials=self.mesh_reuse_potentials,
        differentiate_steps=differentiate,
        # None selects transport's built-in entropy objective (its fastest path).
        objective=(None if self.mesh_objective == "entropy"
                   else lambda plan: objective(plan, s, plan0)))
    return transport.sinkhorn(cost_mesh, a, b, init=init, **sk)[0]


class SlotMLP(nn.Module):
  """The Slot MLP baseline of Locatello et al. (2020), supplementary Tables 8-9.

  features [B, H, W, C] are resized to 16x16, flattened and mapped by an MLP to K slots;
  the object-discovery variant uses a deeper MLP and a per-slot MLP (Table 9).
  Returns slots [B, K, slot_size].
  """
  num_slots: int
  slot_size: int = 64
  variant: str = "set_prediction"  # or "object_discovery"
  resize: int = 16
  framework_defaults: str = "flax"  # see `defaults`

  @nn.compact
  def __call__(self, features: Array, *, train: bool = False) -> Array:
    del train
    _check("SlotMLP variant", self.variant, ("set_prediction", "object_discovery"))
    defaults.check(self.framework_defaults)
    dense = lambda width, fan_in: nn.Dense(width, **defaults.dense(self.framework_defaults,
                                                                   fan_in))
    b, _, _, c = features.shape
    x = jax.image.resize(features, (b, self.resize, self.resize, c), "bilinear")
    x = x.reshape(b, -1)
    widths = (512, 512) if self.variant == "set_prediction" else (512, 1024, 1024)
    for w in widths:
      x = nn.relu(dense(w, x.shape[-1])(x))
    x = dense(self.num_slots * self.slot_size, x.shape[-1])(x)
    x = x.reshape(b, self.num_slots, self.slot_size)
    if self.variant == "object_discovery":
      # The outer layer is created first (its auto-name Dense_{n} comes before the inner's).
      x = dense(64, 64)(nn.relu(dense(64, x.shape[-1])(x)))
    return x

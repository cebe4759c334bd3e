"""Loading the official MESH PyTorch weights into our modules (pure NumPy conversion).

The official code is https://github.com/davzha/MESH (commit c7e8320): `slot_attention.py`
defines `SlotAttentionVariant` (SA, SA-SH, SA-MESH) and `SlotAttentionObjectDiscovery`
(CNN encoder -> slot attention -> spatial-broadcast decoder), `mesh.py` Sinkhorn and MESH.
This file maps

  * a PyTorch `state_dict` (any mapping of names to arrays, e.g. from `torch.load` or an
    `.npz`) to the Flax `params` of `SlotAttention` (`slot_attention_params`) or of
    `ObjectDiscoveryAutoencoder` (`object_discovery_params`), and back
    (`slot_attention_state_dict`, `object_discovery_state_dict`; with `gradients=True` the
    adjoint map, which takes gradients of our parameters to gradients of the official ones);
  * the official constructor kwargs (the Hydra `model` config) to the fields of our modules
    (`slot_attention_fields`, `object_discovery_fields`, and the builders
    `build_slot_attention`, `build_object_discovery`); options our modules cannot express
    raise `UnsupportedOfficialOption`, listing all of them.

Layout facts (slot_attention.py at c7e8320):
  nn.Linear weight [out, in]                  -> Dense kernel [in, out] (transpose)
  nn.LayerNorm weight, bias                   -> LayerNorm scale, bias (eps 1e-5: our
                                                 modules' framework_defaults="torch")
  nn.GRUCell weight_ih, weight_hh [3H, *], bias_ih, bias_hh [3H], gates (r, z, n); the
    official call is gru(updates, slots_prev), i.e. x = updates, h = previous slots, and
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h, which is Flax's
    GRUCell with ir/iz/in (input side, bias) and hr/hz (no bias)/hn (bias): the r and z
    biases of the two sides add up (b_ir + b_hr, b_iz + b_hz).
  nn.Conv2d weight [out, in, kh, kw] (padding 2 = SAME for 5x5)
                                              -> Conv kernel [kh, kw, in, out]
  nn.ConvTranspose2d weight [in, out, kh, kw], stride 1, padding (k - 1) / 2: a
    correlation with the spatially flipped kernel and SAME padding, i.e. Flax
    ConvTranspose (transpose_kernel=False) with kernel W[:, :, ::-1, ::-1] -> [kh, kw, in, out]
  SoftPositionEmbed: Linear(4 -> C) of the grid [row, col, 1 - row, 1 - col] (linspace
    0..1 at the resolution), added: our SoftPositionEmbedding, same grid (`build_grid`).
  CNNEncoder (nn.Sequential): 0, 2, 4, 6 Conv2d 5x5 + ReLU; 8 SoftPositionEmbed; 9 flatten
    (h w); 10 LayerNorm; 11 Linear(d_hid, d_hid); 12 ReLU; 13 Linear(d_hid, d_out).
  CNNDecoder (nn.Sequential): 0 SpatialBroadcast; 1 SoftPositionEmbed; 2, 4, 6
    ConvTranspose2d 5x5 + ReLU; 8 ConvTranspose2d(d_hid, 4, 3, padding=1), linear.
  SlotAttentionVariant: norm_inputs, norm_slots, norm_mlp, project_q/k/v (no bias), gru,
    mlp (.0 Linear, .2 Linear), slots_mu, slots_log_sigma [1, 1, D]; OT variants also
    mlp_slot_marginals / mlp_input_marginals (.0 Linear with bias, .2 Linear(d_mlp, 1)
    without bias); learned MESH step `lr` [1] (initialised to 1).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np

Array = np.ndarray
Params = Dict[str, Any]

# Official attention types -> ours (slot_attention.py, SlotAttentionVariant.forward).
_ATTENTIONS = {"original_slot_attention": "softmax", "sinkhorn": "sinkhorn", "mesh": "mesh"}
# Official pairwise distances -> our cost names. The official `dot_prod` is the scaled
# *similarity* k.q / sqrt(d), ours ("dot") its negative; l2 is torch.cdist (Euclidean).
_COSTS = {"l2": "euclidean", "cosine": "cosine", "dot_prod": "dot"}


class UnsupportedOfficialOption(ValueError):
  """The official configuration uses options our modules cannot express."""


# ------------------------------------------------------------------------------ transforms
# Each is (official -> ours, ours -> official). All but the GRU's are permutations of the
# entries (transposes, flips, reshapes), so their inverse is also their adjoint.
_Transform = Tuple[Callable[[Array], Array], Callable[[Array], Array]]
_IDENTITY: _Transform = (lambda w: w, lambda w: w)
_LINEAR: _Transform = (lambda w: w.T, lambda k: k.T)
_CONV: _Transform = (lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1))
_CONV_T: _Transform = (lambda w: w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1),
                       lambda k: k.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1])
_SCALAR: _Transform = (lambda w: w.reshape(()), lambda s: s.reshape((1,)))


def _layer(official: str, ours: str, bias: bool = True, kind: _Transform = _LINEAR):
  """Rules for a layer with `weight` (and `bias`): (official name, our path, transform)."""
  rules = [(f"{official}.weight", f"{ours}/kernel", kind)]
  if bias:
    rules.append((f"{official}.bias", f"{ours}/bias", _IDENTITY))
  return rules


def _norm(official: str, ours: str):
  return [(f"{official}.weight", f"{ours}/scale", _IDENTITY),
          (f"{official}.bias", f"{ours}/bias", _IDENTITY)]


def _slot_attention_rules(official_keys) -> list:
  """The (official name, our path, transform) rules of `SlotAttentionVariant`, minus the GRU."""
  rules = [("slots_mu", "slots_mu", _IDENTITY),
           ("slots_log_sigma", "slots_log_sigma", _IDENTITY),
           *_norm("norm_inputs", "norm_inputs"), *_norm("norm_slots", "norm_slots"),
           *_norm("norm_mlp", "norm_mlp"),
           *_layer("project_q", "project_q", bias=False),
           *_layer("project_k", "project_k", bias=False),
           *_layer("project_v", "project_v", bias=False),
           *_layer("mlp.0", "mlp/hidden"), *_layer("mlp.2", "mlp/out")]
  if "mlp_slot_marginals.0.weight" in official_keys:  # OT variants.
    rules += [*_layer("mlp_slot_marginals.0", "marginal_slots/hidden"),
              *_layer("mlp_slot_marginals.2", "marginal_slots/out", bias=False),
              *_layer("mlp_input_marginals.0", "marginal_inputs/hidden"),
              *_layer("mlp_input_marginals.2", "marginal_inputs/out", bias=False)]
  if "lr" in official_keys:  # MESH with learn_mesh_lr=True.
    rules.append(("lr", "mesh_lr", _SCALAR))
  return rules


_GRU_NAMES = ("gru.weight_ih", "gru.weight_hh", "gru.bias_ih", "gru.bias_hh")


def _gru_params(w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array) -> Params:
  """torch.nn.GRUCell -> flax.linen.GRUCell params (gate order r, z, n in torch)."""
  hidden = w_hh.shape[1]
  if w_ih.shape[0] != 3 * hidden or w_hh.shape != (3 * hidden, hidden):
    raise ValueError(f"GRU weights of unexpected shapes {w_ih.shape}, {w_hh.shape}")
  w_ir, w_iz, w_in = np.split(w_ih, 3)
  w_hr, w_hz, w_hn = np.split(w_hh, 3)
  b_ir, b_iz, b_in = np.split(b_ih, 3)
  b_hr, b_hz, b_hn = np.split(b_hh, 3)
  return {"ir": {"kernel": w_ir.T, "bias": b_ir + b_hr},
          "iz": {"kernel": w_iz.T, "bias": b_iz + b_hz},
          "in": {"kernel": w_in.T, "bias": b_in},
          "hr": {"kernel": w_hr.T}, "hz": {"kernel": w_hz.T},
          "hn": {"kernel": w_hn.T, "bias": b_hn}}


def _gru_state_dict(gru: Mapping[str, Any], gradients: bool) -> Dict[str, Array]:
  """The inverse (or, with `gradients`, the adjoint) of `_gru_params`.

  The r and z biases of our GRU are sums of two official biases: the inverse puts them on
  the input side (bias_hh's r and z parts zero), the adjoint gives both the same gradient.
  """
  g = {name: {k: np.asarray(v) for k, v in layer.items()} for name, layer in gru.items()}
  b_r, b_z = g["ir"]["bias"], g["iz"]["bias"]
  hidden_side = (b_r, b_z) if gradients else (np.zeros_like(b_r), np.zeros_like(b_z))
  return {"gru.weight_ih": np.concatenate([g[n]["kernel"].T for n in ("ir", "iz", "in")]),
          "gru.weight_hh": np.concatenate([g[n]["kernel"].T for n in ("hr", "hz", "hn")]),
          "gru.bias_ih": np.concatenate([b_r, b_z, g["in"]["bias"]]),
          "gru.bias_hh": np.concatenate([*hidden_side, g["hn"]["bias"]])}


# ------------------------------------------------------------------------------ helpers
def _set(tree: Params, path: str, value: Array) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _get(tree: Mapping[str, Any], path: str) -> Any:
  for p in path.split("/"):
    tree = tree[p]
  return tree


def _strip(state_dict: Mapping[str, Any], prefix: str) -> Dict[str, Array]:
  return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _as_f32(name: str, value: Any) -> Array:
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f"official parameter {name!r} is not floating point ({array.dtype})")
  return np.array(array, dtype=np.float32)  # a copy, in float32


def _check_consumed(sd: Mapping[str, Any], used: set, prefix: str, what: str) -> None:
  extra = sorted(set(sd) - used)
  if extra:
    raise ValueError(f"unexpected entries in the official {what} state_dict (prefix "
                     f"{prefix!r}): {', '.join(prefix + k for k in extra)}")


def _missing_error(missing, prefix: str, what: str, available) -> ValueError:
  shown = ", ".join(sorted(available)[:8])
  return ValueError(f"missing entries in the official {what} state_dict (prefix {prefix!r}): "
                    f"{', '.join(prefix + k for k in missing)}; present under that prefix: "
                    f"{shown or 'nothing'}{' ...' if len(available) > 8 else ''}")


def find_prefix(keys) -> str:
  """The prefix in front of the official model's names, e.g. "net." in a Lightning checkpoint.

  Looks for "...slot_attention.project_q.weight" (the object-discovery model) first, then
  "...project_q.weight" (a bare SlotAttentionVariant); the object-discovery prefix is the
  part before "slot_attention.". Raises ValueError if neither is present.
  """
  keys = list(keys)
  for suffix, strip in (("slot_attention.project_q.weight", "slot_attention.project_q.weight"),
                        ("project_q.weight", "project_q.weight")):
    hits = sorted(k[:-len(strip)] for k in keys if k.endswith(suffix))
    if len(hits) == 1:
      return hits[0]
    if len(hits) > 1:
      raise ValueError(f"several official models in the state_dict (prefixes {hits}); "
                       "pass the prefix explicitly")
  raise ValueError("no official MESH slot attention (no '...project_q.weight') in the "
                   f"state_dict; first keys: {keys[:8]}")


# ------------------------------------------------------------------------------ params
def slot_attention_params(state_dict: Mapping[str, Any], prefix: str = "") -> Params:
  """Flax params of `SlotAttention` from the official `SlotAttentionVariant` state_dict.

  Args:
    state_dict: names -> arrays (NumPy, or anything `np.asarray` takes: CPU torch tensors).
    prefix: the prefix of the slot attention's names, e.g. "slot_attention." inside the
      object-discovery model, "net.slot_attention." in a Lightning checkpoint.

  Returns:
    The content of `variables["params"]` of a `SlotAttention` configured by
    `slot_attention_fields` (float32 NumPy arrays). Every entry under `prefix` must be used.
  """
  sd = _strip(state_dict, prefix)
  rules = _slot_attention_rules(sd.keys())
  missing = [name for name, _, _ in rules if name not in sd]
  missing += [name for name in _GRU_NAMES if name not in sd]
  if missing:
    raise _missing_error(missing, prefix, "SlotAttentionVariant", sd.keys())
  params: Params = {}
  for name, path, (forward, _) in rules:
    _set(params, path, forward(_as_f32(prefix + name, sd[name])))
  params["gru"] = _gru_params(*(_as_f32(prefix + n, sd[n]) for n in _GRU_NAMES))
  _check_consumed(sd, {name for name, _, _ in rules} | set(_GRU_NAMES), prefix,
                  "SlotAttentionVariant")
  return params


def slot_attention_state_dict(params: Mapping[str, Any], prefix: str = "",
                              gradients: bool = False) -> Dict[str, Array]:
  """Official `SlotAttentionVariant` names and layouts of our `SlotAttention` params.

  The inverse of `slot_attention_params` (the GRU's summed r/z biases go to bias_ih); with
  `gradients=True`, the adjoint map instead: gradients w.r.t. our params -> gradients w.r.t.
  the official ones (the summed biases give both official biases their gradient).
  """
  keys = set()
  if "marginal_slots" in params:
    keys.add("mlp_slot_marginals.0.weight")
  if "mesh_lr" in params:
    keys.add("lr")
  out = {}
  for name, path, (_, backward) in _slot_attention_rules(keys):
    out[prefix + name] = np.asarray(backward(np.asarray(_get(params, path))))
  for name, value in _gru_state_dict(params["gru"], gradients).items():
    out[prefix + name] = value
  return out


def _encoder_rules():
  return [*_layer("encoder.0", "conv_0", kind=_CONV), *_layer("encoder.2", "conv_1", kind=_CONV),
          *_layer("encoder.4", "conv_2", kind=_CONV), *_layer("encoder.6", "conv_3", kind=_CONV),
          *_layer("encoder.8.dense", "position/dense"), *_norm("encoder.10", "norm"),
          *_layer("encoder.11", "mlp_hidden"), *_layer("encoder.13", "mlp_out")]


def _decoder_rules():
  return [*_layer("decoder.1.dense", "position/dense"),
          *_layer("decoder.2", "deconv_0", kind=_CONV_T),
          *_layer("decoder.4", "deconv_1", kind=_CONV_T),
          *_layer("decoder.6", "deconv_2", kind=_CONV_T),
          *_layer("decoder.8", "deconv_out", kind=_CONV_T)]


_GRID_BUFFERS = ("encoder.8.grid", "decoder.1.grid")


def _check_grid(name: str, grid: Array) -> None:
  """The official position grids are buffers; ours are computed: they must agree."""
  grid = np.asarray(grid)
  if grid.ndim != 4 or grid.shape[0] != 1 or grid.shape[-1] != 4:
    raise ValueError(f"{name}: unexpected position grid shape {grid.shape}")
  h, w = grid.shape[1:3]
  ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  ours = np.stack([ys, xs, 1 - ys, 1 - xs], axis=-1)  # models.build_grid
  if not np.allclose(grid[0], ours, atol=1e-6):
    raise ValueError(f"{name}: the official position grid differs from ours "
                     "([row, col, 1 - row, 1 - col], linspace(0, 1))")


def object_discovery_params(state_dict: Mapping[str, Any], prefix: str = "") -> Params:
  """Flax params of `ObjectDiscoveryAutoencoder` from the official
  `SlotAttentionObjectDiscovery` state_dict ({"encoder", "decoder", "slot_attention"}).

  Args:
    state_dict: names -> arrays; the grid buffers ("encoder.8.grid", "decoder.1.grid"), if
      present, are checked against our grid and otherwise ignored.
    prefix: the prefix of the model's names ("net." in a Lightning checkpoint of
      run_object_discovery.py; see `find_prefix`).
  """
  sd = _strip(state_dict, prefix)
  params: Params = {"encoder": {}, "decoder": {}}
  used = set()
  for part, rules in (("encoder", _encoder_rules()), ("decoder", _decoder_rules())):
    missing = [name for name, _, _ in rules if name not in sd]
    if missing:
      raise _missing_error(missing, prefix, "SlotAttentionObjectDiscovery", sd.keys())
    for name, path, (forward, _) in rules:
      _set(params[part], path, forward(_as_f32(prefix + name, sd[name])))
      used.add(name)
  for name in _GRID_BUFFERS:
    if name in sd:
      _check_grid(prefix + name, sd[name])
      used.add(name)
  params["slot_attention"] = slot_attention_params(sd, "slot_attention.")
  used |= {k for k in sd if k.startswith("slot_attention.")}
  _check_consumed(sd, used, prefix, "SlotAttentionObjectDiscovery")
  return params


def object_discovery_state_dict(params: Mapping[str, Any], prefix: str = "",
                                gradients: bool = False) -> Dict[str, Array]:
  """Official names and layouts of our autoencoder params (inverse of
  `object_discovery_params`, without the grid buffers); `gradients`: the adjoint map."""
  out = {}
  for part, rules in (("encoder", _encoder_rules()), ("decoder", _decoder_rules())):
    for name, path, (_, backward) in rules:
      out[prefix + name] = np.asarray(backward(np.asarray(_get(params[part], path))))
  out.update(slot_attention_state_dict(params["slot_attention"], prefix + "slot_attention.",
                                       gradients))
  return out


# ------------------------------------------------------------------------------ fields
def slot_attention_fields(kwargs: Mapping[str, Any]) -> Dict[str, Any]:
  """Fields of our `SlotAttention` for the official `SlotAttentionVariant(**kwargs)`.

  Supported: attention_type original_slot_attention | sinkhorn | mesh; any
  pairwise_distance (l2, cosine, dot_prod; the sign convention is folded into
  `cost_scale`, see below); scale_cost, scale_marginals, temperature, n_sh_iters,
  learn_mesh_lr, mesh_lr, detach_slots, init_slot_method="learned_random", mesh_args
  {n_mesh_iters, n_sh_iters (must equal n_sh_iters), reuse_u_v}.

  Mapping notes (slot_attention.py / mesh.py at c7e8320):
    * original_slot_attention computes softmax_K(scale_cost * dist(k, q)) without the
      temperature, then + 1e-8 and renormalises over inputs: our softmax attention with
      temperature 1, epsilon 1e-8 and the weighted-mean update. Ours takes -cost as logits,
      so cost_scale is scale_cost for dot_prod (our "dot" cost is the negative similarity)
      and -scale_cost for a distance.
    * OT variants use scale_cost * dist(k, q) as the cost: cost_scale = scale_cost for l2 /
      cosine, -scale_cost for dot_prod (a similarity used as a cost).
    * Marginals: a = scale_marginals * softmax_N(mlp_input_marginals(LN x)), b likewise on
      the normalised slots: marginals="learned", marginal_scale=scale_marginals.
    * The update is attn^T v without normalisation for the OT variants: update_norm "auto".
    * MESH: noise 0.001 * randn(B, N, K) drawn once per forward, inner Sinkhorn at
      temperature 1 (mesh_temperature), final Sinkhorn at `temperature` warm-started from
      MESH's potentials when reuse_u_v. With learn_mesh_lr the step is a parameter `lr`
      initialised to 1 (mesh_lr is then unused by the official code): learn_mesh_lr=True,
      mesh_lr=1.0.
    * LayerNorm epsilon 1e-5 (PyTorch's): framework_defaults="torch".

  Raises:
    UnsupportedOfficialOption: listing every option our module cannot express.
  """
  kw = dict(kwargs)
  problems = []
  attention_type = str(kw.get("attention_type", "")).lower()
  attention = _ATTENTIONS.get(attention_type)
  if attention is None:
    problems.append(f"attention_type={kw.get('attention_type')!r} (supported: "
                    f"{', '.join(_ATTENTIONS)})")
  distance = kw.get("pairwise_distance")
  cost = _COSTS.get(distance)
  if cost is None:
    problems.append(f"pairwise_distance={distance!r} (supported: {', '.join(_COSTS)})")
  init = kw.get("init_slot_method", "learned_random")
  if init != "learned_random":
    problems.append(f"init_slot_method={init!r}: only 'learned_random' (our "
                    "slot_init='shared_gaussian'); the official 'fixed_random' keeps mu and "
                    "log sigma as buffers, ours draws them from fixed_init_seed")
  mesh_args = dict(kw.get("mesh_args") or {})
  n_sh = int(kw.get("n_sh_iters", 5))
  if attention == "mesh":
    inner = int(mesh_args.get("n_sh_iters", n_sh))
    if inner != n_sh:
      problems.append(f"mesh_args.n_sh_iters={inner} differs from n_sh_iters={n_sh} (our "
                      "sinkhorn_iters serves both the MESH steps and the final Sinkhorn)")
    unknown = sorted(set(mesh_args) - {"n_sh_iters", "n_mesh_iters", "reuse_u_v"})
    if unknown:
      problems.append(f"unknown mesh_args {unknown}")
  known = {"d_in", "d_slot", "n_slots", "d_mlp", "attention_type", "n_sa_iters",
           "pairwise_distance", "temperature", "scale_marginals", "scale_cost", "n_sh_iters",
           "learn_mesh_lr", "mesh_lr", "init_slot_method", "detach_slots", "mesh_args"}
  unknown = sorted(set(kw) - known)
  if unknown:
    problems.append(f"unknown SlotAttentionVariant arguments {unknown}")
  if problems:
    raise UnsupportedOfficialOption(
        "The official SlotAttentionVariant configuration uses options that "
        "slot_ot_jax.modules.attention.SlotAttention cannot express:\n  "
        + "\n  ".join(problems))

  n_slots = int(kw["n_slots"])
  scale_cost = float(kw.get("scale_cost", 1.0))
  ot = attention != "softmax"
  # Official: softmax logits (softmax) or the OT cost = scale_cost * dist. Ours: logits
  # -cost_scale * cost_fn, or the cost cost_scale * cost_fn; "dot" is -dot_prod.
  flip = (cost == "dot") == ot
  fields = dict(
      num_slots=n_slots, slot_size=int(kw["d_slot"]), mlp_size=int(kw["d_mlp"]),
      num_iters=int(kw["n_sa_iters"]), attention=attention, cost=cost,
      cost_scale=-scale_cost if flip else scale_cost,
      temperature=float(kw.get("temperature", 1.0)) if ot else 1.0,
      epsilon=1e-8, update_norm="auto", slot_init="shared_gaussian",
      detach_slots=bool(kw.get("detach_slots", False)), norm_inputs=True)
  if ot:
    fields.update(sinkhorn_iters=n_sh, marginals="learned",
                  marginal_scale=float(kw.get("scale_marginals", n_slots)))
  if attention == "mesh":
    learn = bool(kw.get("learn_mesh_lr", False))
    fields.update(mesh_steps=int(mesh_args.get("n_mesh_iters", 4)),
                  mesh_lr=1.0 if learn else float(kw.get("mesh_lr", 8.0)),
                  learn_mesh_lr=learn, mesh_noise_scale=1e-3, mesh_temperature=1.0,
                  mesh_reuse_potentials=bool(mesh_args.get("reuse_u_v", True)),
                  mesh_lr_per_entry=False, mesh_objective="entropy")
  fields["framework_defaults"] = "torch"  # LayerNorm eps 1e-5, PyTorch initialisers
  return fields


def object_discovery_fields(kwargs: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
  """Fields of `CNNEncoder`, `SpatialBroadcastDecoder` and `SlotAttention` for the official
  `SlotAttentionObjectDiscovery(encoder=..., decoder=..., slot_attention=...)` kwargs.

  Returns {"encoder": ..., "decoder": ..., "slot_attention": ...}. The official encoder is
  4 Conv2d(d_hid, 5x5) + ReLU, the position embedding at `encoder.resolution`, LayerNorm,
  Linear(d_hid, d_hid), ReLU, Linear(d_hid, d_out); the decoder broadcasts to
  `broadcast_resolution`, adds the position embedding, 3 ConvTranspose2d(d_hid, 5x5) + ReLU
  and ConvTranspose2d(d_hid, 4, 3x3) (RGB + alpha logit).
  """
  enc, dec = dict(kwargs["encoder"]), dict(kwargs["decoder"])
  sa = slot_attention_fields(kwargs["slot_attention"])
  problems = []
  if int(dec.get("d_slot", sa["slot_size"])) != sa["slot_size"]:
    problems.append(f"decoder.d_slot={dec['d_slot']} differs from slot_attention.d_slot="
                    f"{sa['slot_size']}")
  d_in = kwargs["slot_attention"].get("d_in")
  if d_in is not None and int(d_in) != int(enc["d_out"]):
    problems.append(f"slot_attention.d_in={d_in} differs from encoder.d_out={enc['d_out']}")
  unknown = sorted(set(enc) - {"d_hid", "d_out", "resolution"}) + sorted(
      set(dec) - {"d_slot", "d_hid", "broadcast_resolution"})
  if unknown:
    problems.append(f"unknown encoder/decoder arguments {unknown}")
  if problems:
    raise UnsupportedOfficialOption(
        "The official SlotAttentionObjectDiscovery configuration cannot be expressed:\n  "
        + "\n  ".join(problems))
  d_hid = int(enc["d_hid"])
  encoder = dict(channels=(d_hid,) * 4, strides=(1,) * 4, kernel_size=5, mlp_size=d_hid,
                 out_size=int(enc["d_out"]), framework_defaults="torch")
  decoder = dict(broadcast_resolution=tuple(int(r) for r in dec["broadcast_resolution"]),
                 channels=(int(dec["d_hid"]),) * 3, strides=(1,) * 3, kernel_size=5,
                 out_kernel_size=3, out_channels=4, framework_defaults="torch")
  return {"encoder": encoder, "decoder": decoder, "slot_attention": sa}


def build_slot_attention(kwargs: Mapping[str, Any], **overrides):
  """Our `SlotAttention` for the official `SlotAttentionVariant(**kwargs)` (+ overrides)."""
  from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
  return SlotAttention(**{**slot_attention_fields(kwargs), **overrides})


def build_object_discovery(kwargs: Mapping[str, Any], **slot_attention_overrides):
  """Our `ObjectDiscoveryAutoencoder` for the official `SlotAttentionObjectDiscovery` kwargs."""
  from slot_ot_jax.modules import models  # pylint: disable=g-import-not-at-top
  fields = object_discovery_fields(kwargs)
  return models.ObjectDiscoveryAutoencoder(
      encoder=models.CNNEncoder(**fields["encoder"]),
      decoder=models.SpatialBroadcastDecoder(**fields["decoder"]),
      slot_attention=build_slot_attention(kwargs["slot_attention"],
                                          **slot_attention_overrides))


def images_to_official(images: Array) -> Array:
  """Our images [B, H, W, C] -> the official NCHW layout (and `images_from_official` back)."""
  return np.moveaxis(np.asarray(images), -1, -3)


def images_from_official(images: Array) -> Array:
  return np.moveaxis(np.asarray(images), -3, -1)


__all__ = [
    "UnsupportedOfficialOption", "build_object_discovery", "build_slot_attention",
    "find_prefix", "images_from_official", "images_to_official", "object_discovery_fields",
    "object_discovery_params", "object_discovery_state_dict", "slot_attention_fields",
    "slot_attention_params", "slot_attention_state_dict",
]

"""Framework defaults (slot_ot_jax/modules/defaults.py): each style's initialisers against the
framework's formula for every layer kind, the LayerNorm epsilons, the learned MESH step, the
wiring through every module with parameters, and "flax" leaving today's parameters unchanged.

A uniform U(b) is checked by max |x| <= b and max |x| > 0.97 b (thousands of draws) and by its
standard deviation b / sqrt(3); the shapes are chosen so that the wrong fan (e.g. a transposed
convolution's input channels instead of its output channels) fails.
"""
import hashlib
import math

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from slot_ot_jax.modules import attention
from slot_ot_jax.modules import defaults
from slot_ot_jax.modules import models
from slot_ot_jax.modules import video_model
from slot_ot_jax.tasks import dinosaur

KEY = jax.random.PRNGKey(0)
UNIFORM_STYLES = ("torch", "keras", "ocl")


def _glorot(fan_in, fan_out):
  return math.sqrt(6.0 / (fan_in + fan_out))


class _Checks(parameterized.TestCase):

  def assertUniform(self, x, bound, msg=""):
    x = np.asarray(x, np.float64).ravel()
    self.assertGreater(x.size, 2000, msg)
    self.assertLessEqual(np.abs(x).max(), bound * (1 + 1e-6), msg)
    self.assertGreater(np.abs(x).max(), 0.97 * bound, msg)
    self.assertAlmostEqual(x.std() / (bound / math.sqrt(3)), 1.0, delta=0.05, msg=msg)
    self.assertLess(abs(x.mean()), 0.05 * bound, msg)

  def assertZeros(self, x, msg=""):
    self.assertEqual(float(np.abs(np.asarray(x)).max()), 0.0, msg)


class FormulaTest(_Checks):

  def test_fan_conventions(self):
    # torch.nn.init._calculate_fan_in_and_fan_out: [a, b, c...] -> (b c..., a c...).
    self.assertEqual(defaults.torch_fans((1, 1, 64)), (64, 64))        # slots_mu
    self.assertEqual(defaults.torch_fans((40, 24, 5, 5)), (600, 1000))  # Conv2d [out, in, k, k]
    # ConvTranspose2d weight [in, out, k, k]: fan_in counts the output channels.
    self.assertEqual(defaults.torch_fans((24, 40, 5, 5)), (1000, 600))
    # Keras: receptive field = every axis but the last two.
    self.assertEqual(defaults.keras_fans((1, 1, 64)), (1, 64))
    self.assertEqual(defaults.keras_fans((5, 5, 24, 40)), (600, 1000))
    self.assertEqual(defaults.keras_fans((300, 100)), (300, 100))

  def test_layer_norm_epsilons(self):
    self.assertEqual(defaults.layer_norm("flax"), {})
    self.assertEqual(nn.LayerNorm().epsilon, 1e-6)  # Flax's own default, kept by "flax".
    self.assertEqual(defaults.layer_norm("torch"), {"epsilon": 1e-5})  # nn.LayerNorm
    self.assertEqual(defaults.layer_norm("ocl"), {"epsilon": 1e-5})
    self.assertEqual(defaults.layer_norm("keras"), {"epsilon": 1e-3})  # LayerNormalization
    with self.assertRaisesRegex(ValueError, "framework_defaults"):
      defaults.layer_norm("jax")

  def test_flax_passes_nothing(self):
    self.assertEqual(defaults.dense("flax", 3), {})
    self.assertEqual(defaults.conv("flax", 3, (5, 5)), {})
    self.assertEqual(defaults.conv_transpose("flax", 3, (5, 5)), {})
    self.assertEqual(defaults.gru("flax", 3, 4), {})

  @parameterized.parameters(*UNIFORM_STYLES)
  def test_dense(self, style):
    fan_in, out = 300, 100
    for block in (False, True):
      p = nn.Dense(out, **defaults.dense(style, fan_in, mlp_block=block)).init(
          KEY, jnp.ones((1, fan_in)))["params"]
      if style == "keras":  # glorot_uniform kernel, zero bias
        self.assertUniform(p["kernel"], _glorot(fan_in, out))
        self.assertZeros(p["bias"])
        continue
      # nn.Linear: kaiming_uniform(a=sqrt(5)) = U(1/sqrt(in)); bias U(1/sqrt(in)).
      self.assertUniform(p["kernel"], 1 / math.sqrt(fan_in))
      if style == "ocl" and block:  # OCL's build_mlp zeroes its biases.
        self.assertZeros(p["bias"])
      else:
        bias = nn.Dense(5000, **defaults.dense(style, fan_in, mlp_block=block)).init(
            KEY, jnp.ones((1, fan_in)))["params"]["bias"]
        self.assertUniform(bias, 1 / math.sqrt(fan_in))

  @parameterized.parameters(*UNIFORM_STYLES)
  def test_conv(self, style):
    c_in, c_out, k = 24, 40, (5, 5)
    p = nn.Conv(c_out, k, **defaults.conv(style, c_in, k)).init(
        KEY, jnp.ones((1, 6, 6, c_in)))["params"]
    if style == "keras":  # Conv2D kernel (5, 5, in, out): glorot_uniform; bias 0
      self.assertUniform(p["kernel"], _glorot(c_in * 25, c_out * 25))
      self.assertZeros(p["bias"])
    else:  # Conv2d: fan_in = in kh kw for the weight and the bias
      self.assertUniform(p["kernel"], 1 / math.sqrt(c_in * 25))
      wide = nn.Conv(3000, k, **defaults.conv(style, c_in, k)).init(
          KEY, jnp.ones((1, 6, 6, c_in)))["params"]["bias"]
      self.assertUniform(wide, 1 / math.sqrt(c_in * 25))

  @parameterized.parameters(*UNIFORM_STYLES)
  def test_conv_transpose(self, style):
    c_in, c_out, k = 24, 40, (5, 5)
    p = nn.ConvTranspose(c_out, k, **defaults.conv_transpose(style, c_out, k)).init(
        KEY, jnp.ones((1, 6, 6, c_in)))["params"]
    if style == "keras":  # Conv2DTranspose kernel (5, 5, out, in): glorot, symmetric
      self.assertUniform(p["kernel"], _glorot(c_out * 25, c_in * 25))
      self.assertZeros(p["bias"])
    else:
      # ConvTranspose2d weight [in, out, kh, kw]: fan_in = size(1) kh kw = OUT channels.
      bound = 1 / math.sqrt(c_out * 25)
      self.assertUniform(p["kernel"], bound)
      self.assertLess(bound, 0.8 / math.sqrt(c_in * 25))  # the wrong fan would fail above
      # The bias uses the same fan-in (out kh kw), here with 3000 outputs.
      wide = nn.ConvTranspose(3000, (1, 1), **defaults.conv_transpose(style, 3000, (1, 1))).init(
          KEY, jnp.ones((1, 1, 1, 2)))["params"]["bias"]
      self.assertUniform(wide, 1 / math.sqrt(3000))

  @parameterized.parameters(*UNIFORM_STYLES)
  def test_gru(self, style):
    d_in, h = 96, 64
    cell = nn.GRUCell(features=h, **defaults.gru(style, d_in, h))
    p = cell.init(KEY, jnp.zeros((1, h)), jnp.ones((1, d_in)))["params"]
    if style in ("torch", "ocl"):  # nn.GRUCell: every weight and bias U(1/sqrt(hidden))
      for gate in ("ir", "iz", "in", "hr", "hz", "hn"):
        self.assertUniform(p[gate]["kernel"], 1 / math.sqrt(h), gate)
      for gate in ("ir", "iz", "in", "hn"):
        self.assertLessEqual(np.abs(p[gate]["bias"]).max(), 1 / math.sqrt(h))
      # The bias initialiser itself, on enough draws (a [3000, 3000] cell would be slow).
      bias = defaults.gru(style, 1, 3000)["bias_init"](KEY, (3000,))
      self.assertUniform(bias, 1 / math.sqrt(3000))
      return
    # Keras GRUCell: kernel [in, 3h] glorot_uniform, recurrent [h, 3h] orthogonal, bias 0.
    for gate in ("ir", "iz", "in"):
      self.assertUniform(p[gate]["kernel"], _glorot(d_in, 3 * h), gate)
    for gate in ("ir", "iz", "in", "hn"):
      self.assertZeros(p[gate]["bias"], gate)
    for gate in ("hr", "hz", "hn"):
      block = np.asarray(p[gate]["kernel"], np.float64)
      # A [h, h] block of a row-orthonormal [h, 3h]: singular values <= 1, E|B|^2 = h / 3
      # (an orthogonal [h, h], Flax's default, has |B|^2 = h).
      self.assertLessEqual(np.linalg.svd(block, compute_uv=False).max(), 1 + 1e-5)
      self.assertAlmostEqual(np.sum(block ** 2) / (h / 3), 1.0, delta=0.1)

  def test_keras_recurrent_block_is_part_of_an_orthogonal_matrix(self):
    full = nn.initializers.orthogonal()(KEY, (8, 24))
    self.assertTrue(np.allclose(full @ full.T, np.eye(8), atol=1e-5))
    block = defaults._keras_recurrent_block(KEY, (8, 8))  # pylint: disable=protected-access
    self.assertTrue(np.allclose(block, full[:, :8]))

  @parameterized.parameters("flax", *UNIFORM_STYLES)
  def test_slot_parameters(self, style):
    d = 20_000
    x = defaults.slot_parameter(style)(KEY, (1, 1, d))
    if style in ("torch", "ocl"):  # xavier_uniform_ with PyTorch's fans: D and D
      self.assertUniform(x, math.sqrt(6.0 / (2 * d)))
    else:  # Flax's and Keras's fans of [1, 1, D]: 1 and D
      self.assertUniform(x, math.sqrt(6.0 / (d + 1)))
    if style == "flax":
      self.assertTrue(np.array_equal(x, nn.initializers.xavier_uniform()(KEY, (1, 1, d))))

  def test_learned_mesh_step(self):
    self.assertEqual(defaults.learned_mesh_lr("flax", 8.0), 8.0)
    for style in UNIFORM_STYLES:  # MESH: nn.Parameter(torch.ones(1)), whatever mesh_lr
      self.assertEqual(defaults.learned_mesh_lr(style, 8.0), 1.0)


# ------------------------------------------------------------------------------------------
# Every module with parameters uses its style.
# ------------------------------------------------------------------------------------------
def _modules(style):
  sa = dict(num_slots=3, slot_size=8, mlp_size=12, num_iters=1, sinkhorn_iters=1, mesh_steps=1,
            framework_defaults=style)
  x = jnp.ones((2, 6, 5))
  img = jnp.ones((1, 16, 16, 3))
  return [
      ("sa_mesh_all", attention.SlotAttention(
          attention="mesh", learn_mesh_lr=True, mesh_objective="similarity",
          update_norm="layer_norm", **sa), (x,)),
      ("sa_mesh_learned", attention.SlotAttention(
          attention="mesh", mesh_objective="learned", slot_init="per_slot", **sa), (x,)),
      ("slot_mlp_od", attention.SlotMLP(num_slots=2, slot_size=4, resize=4,
                                        variant="object_discovery", framework_defaults=style),
       (img,)),
      ("encoder", models.CNNEncoder(channels=(4, 6), strides=(1, 2), mlp_size=5, out_size=7,
                                    framework_defaults=style), (img,)),
      ("decoder", models.SpatialBroadcastDecoder(broadcast_resolution=(4, 4), channels=(5, 6),
                                                 strides=(2, 1), framework_defaults=style),
       (jnp.ones((3, 7)),)),
      ("head", models.PropertyPredictionHead(output_size=5, hidden_size=6,
                                             framework_defaults=style), (jnp.ones((2, 3, 7)),)),
      ("transition", video_model.SlotTransition(kind="learned", framework_defaults=style),
       (jnp.ones((2, 3, 8)),)),
      ("dino_encoder", dinosaur.MLPEncoder(hidden_size=9, out_size=7, framework_defaults=style),
       (jnp.ones((2, 3, 3, 5)),)),
      ("dino_decoder", dinosaur.MLPBroadcastDecoder(grid=3, hidden_sizes=(6, 5), out_channels=4,
                                                    framework_defaults=style),
       (jnp.ones((2, 7)),)),
  ]


def _init(module, args):
  """Params and the epsilon of every LayerNorm the module calls."""
  epsilons = []

  def record(next_fun, fargs, kwargs, context):
    if isinstance(context.module, nn.LayerNorm) and context.method_name == "__call__":
      epsilons.append(context.module.epsilon)
    return next_fun(*fargs, **kwargs)

  rngs = {"params": KEY, "slots": jax.random.PRNGKey(1), "mesh": jax.random.PRNGKey(2),
          "transition": jax.random.PRNGKey(3)}
  with nn.intercept_methods(record):
    params = module.init(rngs, *args)["params"]
  return params, epsilons


def _checksum(params):
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  spec = ";".join(f"{jax.tree_util.keystr(p)}:{tuple(v.shape)}" for p, v in leaves)
  values = [np.asarray(v, np.float64).ravel() for _, v in leaves]
  weighted = sum(float(np.sum(v * np.cos(np.arange(v.size)))) for v in values)
  squares = sum(float(np.sum(np.square(v))) for v in values)
  return hashlib.sha1(spec.encode()).hexdigest()[:16], weighted, squares


# The parameters of `_modules("flax")` (initialised by `_init`) under the code before the
# framework_defaults field existed (the same modules and arguments, without the field): the
# parameter tree (hash of the paths and shapes), sum_i x_i cos(i) and sum_i x_i^2, computed
# then in float32 with jax.numpy (so compared here to 1e-5 relative).
FLAX_BEFORE = {
    "sa_mesh_all": ("40a60c23a249f299", 8.8085016310215, 229.03898215293884),
    "sa_mesh_learned": ("2d4b759c372f1684", -3.9096821546554565, 202.88244754076004),
    "slot_mlp_od": ("96ba982ccc27e331", -3.3323066234588623, 2692.8082275390625),
    "encoder": ("e11e356c1c45b3ed", -2.6290679574012756, 30.140992164611816),
    "decoder": ("9b60fbc242a46b04", -5.644169181585312, 21.15583372116089),
    "head": ("b592139e3a84269d", -0.19447875022888184, 9.392065048217773),
    "transition": ("4b801cca9e0edd5e", 4.106367230415344, 29.33100128173828),
    "dino_encoder": ("47e4cc6ddf29714c", -2.8238399624824524, 22.355857372283936),
    "dino_decoder": ("60748a9d82b8d62e", -1.6759196817874908, 15.21170455776155),
}

# Biases zero under "ocl" (OCL's build_mlp MLPs), by path fragment.
_OCL_MLP = ("/mlp/", "mlp_hidden", "mlp_out", "dino_encoder", "dino_decoder/dense",
            "dino_decoder/out")


def _expected_bound(style, module_name, path, value, gru_in):
  """The style's bound of a uniform parameter, 0 for zeros, None if not uniform."""
  shape = value.shape
  name = path.rsplit("/", 1)[-1]
  if "position_embedding" in path:
    return None  # N(0, 0.02^2) in every style (DINOSAUR's explicit init)
  if name in ("scale",) or "batch_norm" in path or path.endswith("mesh_lr"):
    return None
  if "slots_" in path:
    return None  # test_slot_parameters
  if "/gru/" in path:
    h = shape[-1]
    if style == "keras":
      if name == "bias":
        return 0.0
      return _glorot(gru_in, 3 * h) if path.split("/")[-2].startswith("i") else None
    return 1 / math.sqrt(h)
  if name == "bias" and path.split("/")[-2] in ("norm", "norm_inputs", "norm_slots", "norm_mlp",
                                                "norm_updates"):
    return 0.0  # LayerNorm bias
  if style == "keras":
    if name == "bias":
      return 0.0
    receptive = math.prod(shape[:-2])
    return _glorot(shape[-2] * receptive, shape[-1] * receptive)
  return "torch"  # resolved by the caller (needs the kernel's fan-in for a bias)


class ModuleWiringTest(_Checks):

  @parameterized.parameters("torch", "keras", "ocl")
  def test_every_layer_uses_the_style(self, style):
    eps = defaults.LAYER_NORM_EPSILON[style]
    for module_name, module, args in _modules(style):
      params, epsilons = _init(module, args)
      if module_name not in ("head", "slot_mlp_od", "decoder", "dino_decoder"):
        self.assertNotEmpty(epsilons, module_name)
      self.assertEqual(set(epsilons) - {eps}, set(), module_name)
      flat = {f"{module_name}/" + "/".join(str(k.key) for k in p): np.asarray(v)
              for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
      for path, value in flat.items():
        bound = _expected_bound(style, module_name, path, value, gru_in=8)
        if bound is None:
          continue
        if bound == "torch":
          name = path.rsplit("/", 1)[-1]
          if name == "bias":
            if style == "ocl" and any(f in path for f in _OCL_MLP):
              bound = 0.0
            else:
              kernel = flat[path[:-len("bias")] + "kernel"]
              if "deconv" in path:
                fan_in = math.prod(kernel.shape[:-2]) * kernel.shape[-1]
              else:
                fan_in = math.prod(kernel.shape[:-1])
              bound = 1 / math.sqrt(fan_in)
          elif "deconv" in path:  # ConvTranspose2d: fan-in of the output channels
            bound = 1 / math.sqrt(math.prod(value.shape[:-2]) * value.shape[-1])
          else:
            bound = 1 / math.sqrt(math.prod(value.shape[:-1]))
        if bound == 0.0:
          self.assertZeros(value, path)
        else:
          self.assertLessEqual(np.abs(value).max(), bound * (1 + 1e-6), path)
          self.assertGreater(np.abs(value).max(), 0.2 * bound, path)
      if module_name == "sa_mesh_all":  # the learned MESH step starts at the reference's 1
        self.assertEqual(float(params["mesh_lr"]), 1.0)

  def test_flax_leaves_todays_parameters_unchanged(self):
    for module_name, module, args in _modules("flax"):
      params, epsilons = _init(module, args)
      self.assertEqual(set(epsilons) - {1e-6}, set(), module_name)
      tree, weighted, squares = _checksum(params)
      want = FLAX_BEFORE[module_name]
      self.assertEqual(tree, want[0], module_name)
      self.assertAlmostEqual(weighted, want[1], delta=1e-5 * (1 + abs(want[1])), msg=module_name)
      self.assertAlmostEqual(squares, want[2], delta=1e-5 * want[2], msg=module_name)
      if module_name == "sa_mesh_all":
        self.assertEqual(float(params["mesh_lr"]), 8.0)

  def test_unknown_style_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "framework_defaults"):
      attention.SlotAttention(num_slots=2, framework_defaults="jax").init(
          {"params": KEY, "slots": KEY}, jnp.ones((1, 3, 4)))


class MixedStyleTest(_Checks):
  """"BASE:PART=STYLE,...": each named part from its style, the rest from BASE."""

  ALL_TORCH = "flax:" + ",".join(f"{p}=torch" for p in defaults.PARTS)
  ALL_FLAX = "torch:" + ",".join(f"{p}=flax" for p in defaults.PARTS)

  def test_parts(self):
    self.assertEqual(defaults.parts("torch"), dict.fromkeys(defaults.PARTS, "torch"))
    mixed = defaults.parts("flax:epsilon=torch,gru=keras")
    self.assertEqual((mixed["epsilon"], mixed["gru"], mixed["kernel"]), ("torch", "keras", "flax"))
    self.assertEqual(defaults.layer_norm("flax:epsilon=torch"), {"epsilon": 1e-5})
    self.assertEqual(defaults.dense("flax:epsilon=torch", 3), {})
    self.assertEqual(defaults.layer_norm("torch:epsilon=flax"), {})
    for bad, match in (("flax:eps=torch", "PART"), ("flax:epsilon=jax", "STYLE"),
                       ("flax:epsilon", "PART=STYLE"), ("jax:epsilon=torch", "valid values")):
      with self.assertRaisesRegex(ValueError, match, msg=bad):
        defaults.check(bad)

  def test_kernel_and_bias_separately(self):
    kernel_only = defaults.dense("flax:kernel=torch", 4000)
    w = kernel_only["kernel_init"](KEY, (4000, 8))
    self.assertUniform(w, 1 / math.sqrt(4000))
    self.assertZeros(kernel_only["bias_init"](KEY, (3000,)))
    bias_only = defaults.conv("flax:bias=torch", 40, (5, 5))
    w = bias_only["kernel_init"](KEY, (5, 5, 40, 64))  # Flax's lecun_normal, unchanged
    self.assertTrue(np.array_equal(w, nn.initializers.lecun_normal()(KEY, (5, 5, 40, 64))))
    self.assertUniform(bias_only["bias_init"](KEY, (3000,)), 1 / math.sqrt(1000))

  def test_every_part_named_equals_the_pure_style(self):
    for mixed, pure in ((self.ALL_TORCH, "torch"), (self.ALL_FLAX, "flax")):
      for (name, module, args), (_, want_module, _) in zip(_modules(mixed), _modules(pure)):
        got, eps = _init(module, args)
        want, want_eps = _init(want_module, args)
        self.assertEqual(eps, want_eps, name)
        same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), got, want)
        self.assertTrue(all(jax.tree_util.tree_leaves(same)), f"{mixed} {name}")

  def test_one_part_changes_only_its_parameters(self):
    # SlotAttention with a learned MESH step: every part has parameters here.
    owner = {"gru": lambda p: "/gru/" in p,
             "slots": lambda p: "slots_" in p,
             "mesh_step": lambda p: p.endswith("mesh_lr"),
             "kernel": lambda p: p.endswith("kernel") and "/gru/" not in p,
             "bias": lambda p: (p.endswith("bias") and "/gru/" not in p
                                and "norm" not in p.rsplit("/", 2)[-2])}
    flat = lambda params: {"/" + "/".join(str(k.key) for k in path): np.asarray(v)
                           for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    ref = {style: flat(_init(_modules(style)[0][1], _modules(style)[0][2])[0])
           for style in ("flax", "torch")}
    for part, owns in owner.items():
      module, args = _modules(f"flax:{part}=torch")[0][1:]
      got = flat(_init(module, args)[0])
      self.assertTrue(any(owns(p) for p in got), part)
      for path, value in got.items():
        want = ref["torch" if owns(path) else "flax"][path]
        self.assertTrue(np.array_equal(value, want), f"{part}: {path}")
    _, eps = _init(*_modules("flax:epsilon=torch")[0][1:])
    self.assertEqual(set(eps), {1e-5})


if __name__ == "__main__":
  absltest.main()

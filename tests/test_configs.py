"""Every config file loads, is locked, and builds its model (with jax.eval_shape)."""
import dataclasses
import glob
import importlib.util
import os
import sys

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import jax
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import common  # pylint: disable=g-import-not-at-top
from configs import random_objects as ro_config
from slot_ot_jax import tasks

CONFIG_FILES = sorted(f for f in glob.glob(os.path.join(REPO, "configs", "*.py"))
                      if os.path.basename(f) not in ("common.py", "__init__.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _model_param_count(config):
  task = tasks.get_task(config)
  model = task.build_model()
  key = jax.random.PRNGKey(0)
  rngs = {name: key for name in ("params", *task.rng_streams)}
  variables = jax.eval_shape(lambda: task.init_variables(model, rngs))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


class ConfigFilesTest(parameterized.TestCase):

  def test_there_are_config_files(self):
    self.assertIn(os.path.join(REPO, "configs", "random_objects.py"), CONFIG_FILES)

  @parameterized.named_parameters(*[(os.path.basename(f)[:-3], f) for f in CONFIG_FILES])
  def test_loads_locked_and_builds(self, path):
    module = _load(path)
    self.assertTrue(module.__doc__ and "python main.py" in module.__doc__,
                    "each experiment config starts with its command")
    config = module.get_config()
    self.assertTrue(config.is_locked)
    with self.assertRaises((AttributeError, KeyError)):
      config.no_such_field = 1
    self.assertGreater(_model_param_count(config), 0)
    small = module.get_config("runlocal=1")
    self.assertLess(small.num_train_steps, config.num_train_steps)
    self.assertLessEqual(small.num_train_steps, 1000)


class RandomObjectsConfigTest(parameterized.TestCase):

  @parameterized.product(attention=common.ATTENTIONS, sigma=(1.0, 0.1, 0.01))
  def test_grid(self, attention, sigma):
    config = ro_config.get_config(f"attention={attention},sigma={sigma},seed=2")
    sa = config.model.slot_attention
    self.assertEqual((sa.attention, config.data.sigma, config.seed), (attention, sigma, 2))
    self.assertEqual(config.data.seed, 2)
    # App. F.1: widths 32, 5 slots, 3 iterations, detached slots, 20 x 1,000 steps at 64.
    self.assertEqual((sa.slot_size, sa.mlp_size, sa.num_slots, sa.num_iters), (32, 32, 5, 3))
    self.assertTrue(sa.detach_slots)
    # MESH steps of 0.05 per cost entry, the image setting's per-entry step.
    self.assertEqual((sa.mesh_lr_per_entry, sa.mesh_lr), (True, 0.05))
    # ... differentiated through (second order), not straight through as in the reference.
    self.assertTrue(sa.mesh_differentiate_steps)
    self.assertEqual((config.batch_size, config.num_train_steps), (64, 20_000))
    self.assertEqual((config.data.num_train, config.data.num_eval), (64_000, 6_400))
    self.assertEqual((config.data.num_objects, config.data.num_background, config.data.dim),
                     (5, 100, 32))

  @parameterized.parameters(*common.ATTENTIONS)
  def test_builds_every_attention(self, attention):
    config = ro_config.get_config(f"attention={attention}")
    self.assertGreater(_model_param_count(config), 0)

  def test_bad_arguments_list_valid_ones(self):
    with self.assertRaisesRegex(ValueError, "softmax, sinkhorn, emd, mesh"):
      ro_config.get_config("attention=sh")
    with self.assertRaisesRegex(ValueError, "attention, runlocal, seed, sigma"):
      ro_config.get_config("sigmaa=1")
    with self.assertRaisesRegex(ValueError, "positive"):
      ro_config.get_config("sigma=0")

  def test_derived_fields_follow_overrides(self):
    config = ro_config.get_config()
    config.batch_size = 128
    self.assertEqual(config.num_train_steps, 10_000)
    self.assertEqual(config.optimizer.warmup_steps, 500)
    config.data.dim = 16
    config.data.num_objects = 4
    self.assertEqual(config.model.slot_attention.slot_size, 16)
    self.assertEqual(config.model.slot_attention.num_slots, 4)
    config.seed = 7
    self.assertEqual(config.data.seed, 7)

  def _parse(self, argv):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    flag_values(argv)
    return flag_values.config

  def test_command_line(self):
    path = os.path.join(REPO, "configs", "random_objects.py")
    config = self._parse([
        "prog", f"--config={path}:attention=sinkhorn,sigma=0.1",
        "--config.seed=3", "--config.model.slot_attention.temperature=0.5",
        "--config.batch_size=32"])
    self.assertEqual((config.model.slot_attention.attention, config.data.sigma),
                     ("sinkhorn", 0.1))
    self.assertEqual((config.seed, config.data.seed), (3, 3))
    self.assertEqual(config.model.slot_attention.temperature, 0.5)
    self.assertEqual(config.num_train_steps, 40_000)
    with self.assertRaisesRegex(AttributeError, "no_such_field"):
      self._parse(["prog", f"--config={path}", "--config.no_such_field=1"])


class SlotAttentionFieldsTest(absltest.TestCase):

  def test_kwargs_match_the_module(self):
    from slot_ot_jax.modules.attention import SlotAttention  # pylint: disable=g-import-not-at-top
    fields = {f.name: f.default for f in dataclasses.fields(SlotAttention)
              if f.name not in ("parent", "name")}
    kwargs = common.slot_attention_kwargs(num_slots=5)
    self.assertEqual(set(kwargs), set(fields))
    for name, value in kwargs.items():
      if name != "num_slots":
        self.assertEqual(value, fields[name], name)
    with self.assertRaisesRegex(ValueError, "valid fields"):
      common.slot_attention_kwargs(num_slots=5, slot_sise=3)

  def test_framework_defaults_match_the_module(self):
    from slot_ot_jax.modules import defaults  # pylint: disable=g-import-not-at-top
    self.assertEqual(common.FRAMEWORK_DEFAULTS, defaults.STYLES)
    with self.assertRaisesRegex(ValueError, "framework_defaults"):
      common.slot_attention_kwargs(num_slots=5, framework_defaults="jax")


# Each paper config selects its reference's initialisation style; the offline demonstrations
# (shapes*, cardinality_shapes) keep Flax's (docs/reference_defaults.md).
EXPECTED_STYLES = {
    "multi_dsprites": "torch", "clevrtex": "torch", "clevrtex_mesh": "torch",
    "shapes": "flax", "random_objects": "torch", "clevr_properties": "torch",
    "shapes_properties": "flax", "clevrer": "torch", "shapes_video": "flax",
    "tetrominoes": "keras", "clevr6": "keras", "clevr10": "keras",
    "clevr_cardinality": "ocl", "cardinality_shapes": "flax", "movi_dinosaur": "ocl",
}
# The shared builders: a style per setting, named in their docstrings.
BUILDERS = ("object_discovery", "property_prediction")


class FrameworkDefaultsTest(parameterized.TestCase):

  def test_every_config_file_is_listed(self):
    names = {os.path.basename(f)[:-3] for f in CONFIG_FILES}
    self.assertEqual(names, set(EXPECTED_STYLES) | set(BUILDERS))

  @parameterized.named_parameters(*EXPECTED_STYLES.items())
  def test_paper_config_states_its_style(self, style):
    module = _load(os.path.join(REPO, "configs", f"{self._name()}.py"))
    for arg in (None, "runlocal=1"):
      self.assertEqual(module.get_config(arg).model.slot_attention.framework_defaults, style)
    self.assertIn(f'Initialisation: framework_defaults="{style}"', module.__doc__)

  def _name(self):
    # The parameterized name is the config's: test_paper_config_states_its_style_<name>.
    return self._testMethodName[len("test_paper_config_states_its_style_"):]

  def test_builders_set_a_style_per_setting(self):
    from configs import object_discovery  # pylint: disable=g-import-not-at-top
    from configs import property_prediction  # pylint: disable=g-import-not-at-top
    for builder in (object_discovery, property_prediction):
      self.assertIn("framework_defaults", builder.__doc__)
      for setting, fields in builder.SETTINGS.items():
        style = fields["framework_defaults"]
        self.assertIn(style, common.FRAMEWORK_DEFAULTS, setting)
        config = builder.build(setting)
        self.assertEqual(config.model.slot_attention.framework_defaults, style, setting)


# Configs of MESH settings, whose reference tests the checkpoint of lowest validation loss.
MESH_PROTOCOL = ("multi_dsprites", "clevrtex", "clevrtex_mesh", "clevrer")


class EvaluatedCheckpointTest(parameterized.TestCase):
  """checkpoint_best_metric, checkpoint_best_mode and evaluation.checkpoint in every config."""

  @parameterized.named_parameters(*[(os.path.basename(f)[:-3], f) for f in CONFIG_FILES])
  def test_fields(self, path):
    name = os.path.basename(path)[:-3]
    module = _load(path)
    for arg in (None, "runlocal=1"):
      config = module.get_config(arg)
      fields = (config.checkpoint_best_metric, config.checkpoint_best_mode,
                config.evaluation.checkpoint)
      if name in MESH_PROTOCOL:
        self.assertEqual(fields, ("loss", "min", "best"), arg)
        self.assertIn("lowest validation loss", module.__doc__)
        self.assertNotIn("evaluates the workdir's latest checkpoint", module.__doc__)
      else:
        self.assertEqual(fields, ("", "min", "latest"), arg)

  def test_builder_settings_of_mesh(self):
    from configs import object_discovery  # pylint: disable=g-import-not-at-top
    for setting in object_discovery.SETTINGS:
      which = object_discovery.build(setting).evaluation.checkpoint
      self.assertEqual(which, "best" if setting in MESH_PROTOCOL else "latest", setting)
    from configs import shapes_video  # pylint: disable=g-import-not-at-top
    self.assertEqual(shapes_video.get_config().evaluation.checkpoint, "latest")


if __name__ == "__main__":
  absltest.main()

"""Reading logged scalars back from event files, and the learning-curve figure."""
import importlib.util
import os
import tempfile
import unittest

from clu import metric_writers
import numpy as np

from slot_ot_jax.analysis import event_files

_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                       "plot_learning_curves.py")
_spec = importlib.util.spec_from_file_location("plot_learning_curves", _SCRIPT)
plot_learning_curves = importlib.util.module_from_spec(_spec)  # scripts/ is not a package.
_spec.loader.exec_module(plot_learning_curves)


def _write_run(workdir, values_by_step, tag="eval/loss"):
  writer = metric_writers.create_default_writer(workdir, just_logging=False)
  for step, value in values_by_step.items():
    writer.write_scalars(step, {tag: value, "train/other": 1.0})
  writer.flush()
  writer.close()


class EventFilesTest(unittest.TestCase):

  def test_read_scalars_round_trip_and_resumed_runs(self):
    with tempfile.TemporaryDirectory() as d:
      _write_run(d, {0: 1.0, 10: 0.5, 20: 0.25})
      steps, values = event_files.read_scalars(d, "eval/loss")
      np.testing.assert_array_equal(steps, [0, 10, 20])
      np.testing.assert_allclose(values, [1.0, 0.5, 0.25])
      # A resumed run writes a second file; its value of a repeated step wins.
      _write_run(d, {20: 0.3, 30: 0.2})
      steps, values = event_files.read_scalars(d, "eval/loss")
      np.testing.assert_array_equal(steps, [0, 10, 20, 30])
      np.testing.assert_allclose(values, [1.0, 0.5, 0.3, 0.2])

  def test_errors_name_the_problem(self):
    with tempfile.TemporaryDirectory() as d:
      with self.assertRaisesRegex(FileNotFoundError, "events.out.tfevents"):
        event_files.read_scalars(d, "eval/loss")
      _write_run(d, {0: 1.0})
      with self.assertRaisesRegex(KeyError, "train/other"):
        event_files.read_scalars(d, "eval/missing")

  def test_curves_over_seeds_and_plot(self):
    with tempfile.TemporaryDirectory() as d:
      a, b = os.path.join(d, "a"), os.path.join(d, "b")
      _write_run(a, {0: 1.0, 10: 0.5, 20: 0.2})
      _write_run(b, {0: 3.0, 20: 0.4})
      steps, values = event_files.curves_over_seeds([a, b], "eval/loss")
      np.testing.assert_array_equal(steps, [0, 20])
      np.testing.assert_allclose(values, [[1.0, 0.2], [3.0, 0.4]])
      png = os.path.join(d, "out", "curves.png")
      event_files.plot_curves({}, "eval/loss", png, log_y=True,
                              panels={"p1": {"ab": [a, b]}, "p2": {"a": [a]}})
      with open(png, "rb") as f:
        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
      # The script: PANEL|LABEL|GLOB specs, and a clear error for a glob that matches nothing.
      out = os.path.join(d, "script.png")
      plot_learning_curves.main(["--tag=eval/loss", f"--output={out}",
                                 f"--curve=p|both|{os.path.join(d, '[ab]')}"])
      self.assertTrue(os.path.exists(out))
      with self.assertRaisesRegex(ValueError, "no workdir matches"):
        plot_learning_curves.parse_curves([f"p|none|{os.path.join(d, 'zz*')}"])
      with self.assertRaisesRegex(ValueError, "PANEL"):
        plot_learning_curves.parse_curves(["p|none"])


if __name__ == "__main__":
  unittest.main()

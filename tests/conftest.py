"""Test-wide settings.

Four fake CPU devices let the data-parallel tests run on any machine; float64 stays off
unless a test asks for it through `jax.experimental.enable_x64`. One JAX persistent
compilation cache per test run, shared by the pytest-xdist workers and the `main.py`
subprocesses of the tests, compiles each distinct program once (many tests build the same
train and eval steps); it starts empty and is removed when the run ends.
"""
import os
import shutil
import tempfile

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()
# The suite is dominated by XLA compilation of many small programs; the backend's cheapest
# optimisation level compiles them about 2.5x faster. Benchmarks and real runs keep the default.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The controlling process (xdist's, or the only one) creates the cache before the workers
# start; they inherit the variable. A cache directory set by the user is kept as it is.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="slot_ot_jax_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # Tiny programs too.
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  if _OWN_CACHE is not None and "PYTEST_XDIST_WORKER" not in os.environ:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)

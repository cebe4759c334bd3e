"""Test-wide settings.

Four fake CPU devices let the data-parallel tests run on any machine; float64 stays off
unless a test asks for it through `jax.experimental.enable_x64`.
"""
import os

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

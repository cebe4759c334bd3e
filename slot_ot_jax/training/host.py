"""The host a benchmark or a sweep ran on, printed with its results.

XLA:CPU's speed differs by large factors between CPU kinds (AVX-512 or not) for some ops, so a
timing means little without its host. `host_lines()` gives markdown comment lines with the CPU
model, family/model numbers, the avx2 / avx512 flags, the core count, jax/jaxlib (and torch,
when installed) versions and the XLA flags in force.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
  info: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if not line.strip():
          break  # End of the first processor's block.
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
  except OSError:
    pass
  return info


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def host_info() -> dict[str, object]:
  """CPU model, family/model, SIMD flags, cores, package versions and XLA flags."""
  cpu = _cpuinfo()
  flags = set(cpu.get("flags", "").split())
  return {
      "cpu": cpu.get("model name", platform.processor() or platform.machine()),
      "family": cpu.get("cpu family", "?"),
      "model": cpu.get("model", "?"),
      "avx2": "avx2" in flags,
      "avx512": sorted(f for f in flags if f.startswith("avx512")),
      "cores": os.cpu_count(),
      "jax": _version("jax"),
      "jaxlib": _version("jaxlib"),
      "torch": _version("torch"),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def host_lines(info: dict[str, object] | None = None) -> list[str]:
  """Markdown comment lines naming the host (print them before or after a results table)."""
  h = host_info() if info is None else info
  avx512 = ", ".join(h["avx512"][:4]) + (", ..." if len(h["avx512"]) > 4 else "")
  lines = [
      f"# host: {h['cpu']} (family {h['family']}, model {h['model']}), {h['cores']} cores, "
      f"avx2 {'yes' if h['avx2'] else 'no'}, "
      f"avx512 {('yes (' + avx512 + ')') if h['avx512'] else 'no'}",
      f"# jax {h['jax']}, jaxlib {h['jaxlib']}, torch {h['torch'] or 'not installed'}; "
      f"XLA_FLAGS={h['xla_flags'] or '(none)'}",
  ]
  return lines


def print_host() -> None:
  print("\n".join(host_lines()), flush=True)


def describe(info: dict[str, object] | None = None) -> str:
  """One line: CPU model, family/model, avx2/avx512, cores (for a results table's notes)."""
  h = host_info() if info is None else info
  return (f"{h['cpu']} (family {h['family']}, model {h['model']}), {h['cores']} cores, "
          f"avx2 {'yes' if h['avx2'] else 'no'}, avx512 {'yes' if h['avx512'] else 'no'}")


if __name__ == "__main__":
  print_host()

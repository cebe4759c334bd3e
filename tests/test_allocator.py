"""Tests of slot_ot_jax/training/allocator.py: freed memory stays in the process."""
import subprocess
import sys
import textwrap

from absl.testing import absltest

# Allocates and frees a 64 MiB buffer twice; prints the minor page faults of the second round.
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from slot_ot_jax.training import allocator
    if sys.argv[1] == "retain":
      assert allocator.retain_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    def touch():
      size = 64 << 20
      ptr = libc.malloc(size)
      ctypes.memset(ptr, 1, size)
      libc.free(ptr)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _second_round_faults(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True,
                       text=True).stdout
  return int(out.split()[-1])


@absltest.skipUnless(sys.platform.startswith("linux"), "glibc mallopt: Linux only")
class RetainFreedMemoryTest(absltest.TestCase):

  def test_second_allocation_reuses_the_pages(self):
    # 64 MiB is 16,384 pages of 4 KiB: by default glibc maps the buffer afresh each time
    # (the probe also asserts that retain_freed_memory() reports success).
    self.assertGreater(_second_round_faults("default"), 10_000)
    self.assertLess(_second_round_faults("retain"), 1_000)


if __name__ == "__main__":
  absltest.main()

r"""Executes the notebooks at full size and stores their outputs in the .ipynb files.

  python scripts/execute_notebooks.py [notebooks/slot_attention_tour.ipynb ...]

Without arguments, every notebook in notebooks/. Each runs in a fresh kernel from the
repository root (as `tests/test_notebooks.py` runs them, but with SLOT_OT_JAX_NOTEBOOK_TINY=0),
so that the committed files show real outputs on GitHub. Before saving, stderr streams
(library warnings and progress logs) are dropped, absolute paths of this checkout and of the
temporary directory are replaced by relative placeholders, and figures are rendered at 80 dpi to
keep the files small. The execution time of each notebook is printed and stored in its
metadata (`slot_ot_jax.execution`), with the host.
"""
import argparse
import datetime
import os
import pathlib
import sys
import tempfile
import time

from nbclient import NotebookClient
import nbformat

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from slot_ot_jax.training import host  # noqa: E402

# Rendered before the first cell: small PNGs in the stored outputs.
_SETUP = "import matplotlib\nmatplotlib.rcParams['figure.dpi'] = 80\n"


def _scrub_text(text: str) -> str:
  for path, placeholder in ((str(REPO), "."), (tempfile.gettempdir(), "<tmp>"),
                            (str(pathlib.Path.home()), "~")):
    text = text.replace(path + os.sep, placeholder + "/").replace(path, placeholder)
  return text


def scrub(nb) -> None:
  """Drops stderr streams and local paths from the outputs, in place."""
  for cell in nb.cells:
    if cell.cell_type != "code":
      continue
    kept = []
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        if out.get("name") == "stderr":
          continue
        out["text"] = _scrub_text(out["text"])
      elif out.get("output_type") in ("execute_result", "display_data"):
        data = out.get("data", {})
        if "text/plain" in data:
          data["text/plain"] = _scrub_text(data["text/plain"])
      kept.append(out)
    cell["outputs"] = kept


def execute(path: pathlib.Path, timeout: int) -> float:
  nb = nbformat.read(path, as_version=4)
  env_before = dict(os.environ)
  os.environ["SLOT_OT_JAX_NOTEBOOK_TINY"] = "0"
  os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
  setup = nbformat.v4.new_code_cell(_SETUP)
  nb.cells.insert(0, setup)
  t0 = time.time()
  try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(env_before)
  wall = time.time() - t0
  nb.cells.pop(0)
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  if errors:
    raise RuntimeError(f"{path} raised: {errors[0].get('ename')}: {errors[0].get('evalue')}")
  scrub(nb)
  nb.metadata["slot_ot_jax"] = {"execution": {
      "tiny": False, "wall_time_s": round(wall, 1),
      "date": datetime.date.today().isoformat(), "host": host.describe()}}
  nbformat.write(nb, path)
  return wall


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
  p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
  a = p.parse_args()
  paths = ([pathlib.Path(x) for x in a.notebooks] if a.notebooks
           else sorted((REPO / "notebooks").glob("*.ipynb")))
  print("\n".join(host.host_lines()), flush=True)
  for path in paths:
    wall = execute(path, a.timeout)
    size = path.stat().st_size
    print(f"{path.name}: {wall:.0f} s wall, {size / 1024:.0f} KiB with outputs", flush=True)


if __name__ == "__main__":
  main()

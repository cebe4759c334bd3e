"""ClevrTex (Karazija et al., 2021) read from its official release (manual download).

Release layout (the project page www.robots.ox.ac.uk/~vgg/data/clevrtex/ and the official
loader `clevrtex_eval.py` of github.com/karazijal/clevrtex; the generator
github.com/karazijal/clevrtex-generation writes the files):
  clevrtex_<variant>/<index // 1000>/CLEVRTEX_<variant>_<index:06d>.png       RGBA, 320x240
  clevrtex_<variant>/<index // 1000>/CLEVRTEX_<variant>_<index:06d>_flat.png  palette png whose
      pixel values are the index mask: 0 = background, k = objects[k - 1] of the json
  clevrtex_<variant>/<index // 1000>/CLEVRTEX_<variant>_<index:06d>.json      metadata
      (num_objects, ground_material, objects: shape, size, material, rotation, 3d_coords,
      pixel_coords, ...)
Official splits by image index over the n images of a variant: test [0, 0.1 n), validation
[0.1 n, 0.2 n), train [0.2 n, n) (full: test 0-4999, validation 5000-9999, train 10000-49999);
OOD (`outd`) has no splits and is a test set only. Variants (the official loader's list,
`ool/clevrtex_eval.py` CLEVRTEX.variants): full (the main set), camo (CAMO), outd (OOD), and
the background variants pbg (plain background), vbg (varied background) and grassbg (grass
background), each with the official splits. Archive names follow the official loader's
`clevrtex_{variant}.tar.gz` pattern (`ool/data/multi.py`), the full set in five parts; in
vbg the objects also carry a colour, which these features do not keep. The official centre crop
(rows 24:216, cols
64:256, i.e. 0.8 of the short side) and the resize to 128 (or 64, MESH App. F.3) are pipeline ops.

Features:
  image         uint8 [240, 320, 3]  (alpha dropped)
  segmentation  uint8 [240, 320, 1]  0 = background, k = the k-th object of the json
  num_objects   int32 []             objects in the json, background excluded
  source_index  int64 []             the image index in the file name
  ground_material  text
  objects       Sequence: shape, size, material (text), rotation float32 (degrees),
                coords_3d float32 [3], pixel_coords float32 [3]
"""
from __future__ import annotations

import dataclasses
import io
import json
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/clevrtex/"
DOWNLOAD_URL = "https://thor.robots.ox.ac.uk/~vgg/data/clevrtex/clevrtex_packaged"
HEIGHT, WIDTH = 240, 320
PREPARE_COMMAND = ("python datasets/prepare.py clevrtex/{config} --manual_dir={manual_dir} "
                   "[--data_dir=DATA_DIR]")
# Split name -> (start, stop) as fractions of the number of images (official loader).
OFFICIAL_SPLITS = (("test", 0.0, 0.1), ("validation", 0.1, 0.2), ("train", 0.2, 1.0))


@dataclasses.dataclass
class ClevrTexConfig(tfds.core.BuilderConfig):
  variant: str = "full"
  archives: tuple[str, ...] = ()
  splits: tuple[tuple[str, float, float], ...] = OFFICIAL_SPLITS


BUILDER_CONFIGS = [
    ClevrTexConfig(name="full", variant="full", description="ClevrTex main set, 50k images.",
                   archives=tuple(f"clevrtex_full_part{i}.tar.gz" for i in range(1, 6))),
    ClevrTexConfig(name="camo", variant="camo", description="ClevrTex CAMO variant.",
                   archives=("clevrtex_camo.tar.gz",)),
    ClevrTexConfig(name="outd", variant="outd",
                   description="ClevrTex OOD variant (unseen shapes and materials), test only.",
                   archives=("clevrtex_outd.tar.gz",), splits=(("test", 0.0, 1.0),)),
    ClevrTexConfig(name="pbg", variant="pbg",
                   description="ClevrTex PBG variant (plain background).",
                   archives=("clevrtex_pbg.tar.gz",)),
    ClevrTexConfig(name="vbg", variant="vbg",
                   description="ClevrTex VBG variant (varied background).",
                   archives=("clevrtex_vbg.tar.gz",)),
    ClevrTexConfig(name="grassbg", variant="grassbg",
                   description="ClevrTex GrassBG variant (grass background).",
                   archives=("clevrtex_grassbg.tar.gz",)),
]


def _instructions() -> str:
  lines = [f"Download ClevrTex from {HOMEPAGE} (archives under {DOWNLOAD_URL}/) and extract them"
           " into the manual folder, which then holds clevrtex_<variant>/<chunk>/"
           "CLEVRTEX_<variant>_<index>.png, _flat.png and .json. Archives per config:"]
  for config in BUILDER_CONFIGS:
    lines.append(f"  {config.name}: {', '.join(config.archives)} -> clevrtex_{config.variant}/")
  lines.append("For example: wget " + f"{DOWNLOAD_URL}/clevrtex_outd.tar.gz && "
               "tar -xzf clevrtex_outd.tar.gz -C MANUAL_DIR")
  lines.append("Then: " + PREPARE_COMMAND.format(config="CONFIG", manual_dir="MANUAL_DIR"))
  return "\n".join(lines)


def locate_files(manual_dir, config: ClevrTexConfig) -> dict[int, epath.Path]:
  """Indexes the images of `config.variant` under manual_dir (or manual_dir itself).

  Returns:
    {image index: path of CLEVRTEX_<variant>_<index>.png}, indices 0..n-1. Raises
    FileNotFoundError naming the URL, archives and command when the folder or a file is absent.
  """
  folder_name = f"clevrtex_{config.variant}"
  root = epath.Path(manual_dir) if manual_dir else None
  folder = None
  if root is not None:
    folder = root if root.name == folder_name else root / folder_name
  pattern = re.compile(rf"CLEVRTEX_{config.variant}_(\d{{6}})\.png")
  index = {}
  if folder is not None and folder.is_dir():
    name = f"CLEVRTEX_{config.variant}_*.png"  # In chunk folders <index // 1000>/, or flat.
    for path in [*folder.glob(f"*/{name}"), *folder.glob(name)]:
      match = pattern.fullmatch(path.name)
      if match:
        index[int(match.group(1))] = path
  problem = None
  if not index:
    problem = f"no {folder_name}/*/CLEVRTEX_{config.variant}_NNNNNN.png images in {root}"
  else:
    missing = sorted(set(range(max(index) + 1)) - set(index))
    lacking = [p.name for i, p in sorted(index.items())
               if not (p.with_name(p.stem + "_flat.png").exists()
                       and p.with_suffix(".json").exists())]
    if missing:
      problem = f"image indices missing in {folder}: {missing[:10]}"
    elif lacking:
      problem = f"_flat.png or .json missing next to {lacking[:10]} in {folder}"
  if problem:
    urls = " ".join(f"{DOWNLOAD_URL}/{a}" for a in config.archives)
    raise FileNotFoundError(
        f"clevrtex/{config.name}: {problem}.\nOfficial source: {HOMEPAGE}; download {urls}\n"
        f"extract each with `tar -xzf ARCHIVE -C {root}` (expected files: {folder_name}/"
        f"<chunk>/CLEVRTEX_{config.variant}_<index>.png, _flat.png, .json)\nand prepare with: "
        + PREPARE_COMMAND.format(config=config.name, manual_dir=root))
  return index


def _read_png(path: epath.Path) -> tuple[np.ndarray, str]:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(path.read_bytes())) as image:
    image.load()
    return np.asarray(image), image.mode


def read_example(path: epath.Path) -> dict:
  """Reads one image, its flat mask and its json into the builder's feature dict."""
  flat_path = path.with_name(path.stem + "_flat.png")
  json_path = path.with_suffix(".json")
  current = path
  try:
    image, mode = _read_png(path)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.shape[:2] != (HEIGHT, WIDTH):
      raise ValueError(f"expected an RGB(A) {WIDTH}x{HEIGHT} image, got {mode} {image.shape}")
    current = flat_path
    labels, mode = _read_png(flat_path)
    if labels.ndim != 2 or labels.shape != (HEIGHT, WIDTH):
      raise ValueError(f"expected a single-channel {WIDTH}x{HEIGHT} index mask, got {mode} "
                       f"{labels.shape}")
    current = json_path
    meta = json.loads(json_path.read_text())
    objects = meta["objects"]
    if int(labels.max()) > len(objects):
      raise ValueError(f"mask label {int(labels.max())} > {len(objects)} objects in the json")
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Corrupt ClevrTex file {current}: {type(e).__name__}: {e}") from None
  return {
      "image": np.ascontiguousarray(image[..., :3]),
      "segmentation": labels.astype(np.uint8)[..., None],
      "num_objects": np.int32(len(objects)),
      "source_index": np.int64(int(path.stem.rsplit("_", 1)[-1])),
      "ground_material": str(meta.get("ground_material", "")),
      "objects": {
          "shape": [str(o.get("shape", "")) for o in objects],
          "size": [str(o.get("size", "")) for o in objects],
          "material": [str(o.get("material", "")) for o in objects],
          "rotation": np.asarray([o.get("rotation", 0.0) for o in objects], np.float32),
          "coords_3d": np.asarray([o.get("3d_coords", (0.0,) * 3) for o in objects],
                                  np.float32).reshape(-1, 3),
          "pixel_coords": np.asarray([o.get("pixel_coords", (0.0,) * 3) for o in objects],
                                     np.float32).reshape(-1, 3),
      },
  }


class Builder(tfds.core.GeneratorBasedBuilder):
  """ClevrTex full, CAMO, OOD, PBG, VBG and GrassBG in the object-discovery schema."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = "full"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(HEIGHT, WIDTH, 3)),
            "segmentation": tfds.features.Image(shape=(HEIGHT, WIDTH, 1)),
            "num_objects": tfds.features.Scalar(np.int32),
            "source_index": tfds.features.Scalar(np.int64),
            "ground_material": tfds.features.Text(),
            "objects": tfds.features.Sequence({
                "shape": tfds.features.Text(),
                "size": tfds.features.Text(),
                "material": tfds.features.Text(),
                "rotation": tfds.features.Scalar(np.float32),
                "coords_3d": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "pixel_coords": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            }),
        }),
        homepage=HOMEPAGE,
        disable_shuffling=True)  # Keep the official index order.

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    index = locate_files(dl_manager.manual_dir, self.builder_config)
    n = len(index)
    return {name: self._generate_examples(index, int(lo * n), int(hi * n))
            for name, lo, hi in self.builder_config.splits}

  def _generate_examples(self, index: dict[int, epath.Path], start: int, stop: int):
    for i in range(start, stop):
      yield i, read_example(index[i])

"""CLEVRER-S and CLEVRER-L (MESH paper §5.4, App. F.4) read from the official CLEVRER release.

Release (http://clevrer.csail.mit.edu/, files under http://data.csail.mit.edu/clevrer/):
  video_{train,validation,test}.zip -> video_<lo>-<hi>/video_<index:05d>.mp4
      480x320 RGB, 128 frames (25 fps); train 0-9999, validation 10000-14999, test 15000-19999
  derender_proposals.zip -> derender_proposals/sim_<index:05d>.json (also accepted:
      proposal_<index:05d>.json), one per video:
      {"video_name": ..., "frames": [{"frame_index": i, "frame_filename": ...,
        "objects": [{"color", "material", "shape", "score",
                     "mask": {"size": [320, 480], "counts": COCO compressed RLE}}, ...]}, ...]}
The masks are Mask R-CNN proposals (the release's derendering), not ground truth.

Each example is two frames of one video: frames 0 and 16 (config `s`, CLEVRER-S) or 0 and 127
(config `l`, CLEVRER-L), resized to 64x64 (frames bilinearly, masks by nearest neighbour, the
whole 480x320 frame squeezed to a square, as the MESH reference does). Objects are identified
across the two frames by their (colour, material, shape) triple, as the reference's temporal
consistency does; the k-th proposal with a triple in frame 0 is the k-th with that triple in
frame 1. Segmentation ids number the objects of frame 0 in proposal order, then the new ones of
frame 1; where proposals overlap the earlier proposal of the frame wins (the reference's argmax
over its mask stack). At most 7 objects per frame (the reference's buffer; more is an error).

Splits (MESH reference configs `config/data/clevrer_{s,l}.yaml`): train = videos 0-9999 less
7648 and 9777 (their proposal files are short: 115 and 104 frames), validation 10000-10319,
test 15000-19999, nothing skipped in those two. The skip list is per split and by video index,
as the MESH configs have it (its build script also names 10800 as short, which no MESH split
holds). A short proposal file that the list does not skip is an error naming the video (the
MESH data would hold a blank example in its place).

Decoding: PyAV (`pip install av`, the `clevrer` extra of pyproject.toml) decodes the mp4 files
(frame i = the i-th decoded frame, as OpenCV's sequential reads in the reference); the COCO RLE
strings are decoded by `decode_rle` below (no pycocotools needed; tests compare it with
pycocotools). A mask or video that fails to decode is an error naming the file.

Features (the two-frame schema of datasets/shapes_video):
  video              uint8 [2, 64, 64, 3]
  segmentation       uint8 [2, 64, 64, 1]  0 = background, k = object k in both frames
  num_objects        int32 []   distinct objects over the two frames
  frame_num_objects  int32 [2]  proposals in each frame
  source_index       int64 []   the video index
  objects            Sequence: color, material, shape (ClassLabel), first_frame int32 (0, or
                     1 for an object that appears in the second frame), present int32 [2]
"""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

HOMEPAGE = "http://clevrer.csail.mit.edu/"
DOWNLOAD_URL = "http://data.csail.mit.edu/clevrer"
ARCHIVES = ("videos/train/video_train.zip", "videos/validation/video_validation.zip",
            "videos/test/video_test.zip", "derender_proposals.zip")
PREPARE_COMMAND = ("python datasets/prepare.py clevrer/{config} --manual_dir={manual_dir} "
                   "[--data_dir=DATA_DIR]")
COLORS = ("gray", "red", "blue", "green", "brown", "cyan", "purple", "yellow")
MATERIALS = ("metal", "rubber")
SHAPES = ("cube", "sphere", "cylinder")
SOURCE_HEIGHT, SOURCE_WIDTH = 320, 480
NUM_FRAMES = 128
MAX_OBJECTS_PER_FRAME = 7
MAX_LABELS = 10  # Largest segmentation id (distinct objects over the two frames).
MESH_SPLITS = (("train", 0, 10_000), ("validation", 10_000, 10_320), ("test", 15_000, 20_000))
# Videos left out of each split (MESH configs: `ignore: [7648, 9777]` in train, [] elsewhere).
MESH_SKIP = (("train", (7648, 9777)), ("validation", ()), ("test", ()))


@dataclasses.dataclass
class ClevrerConfig(tfds.core.BuilderConfig):
  """Frame indices, resolution and video-index ranges of one variant."""
  frames: tuple[int, int] = (0, 16)
  resolution: int = 64
  splits: tuple[tuple[str, int, int], ...] = MESH_SPLITS  # (name, first, stop) video indices.
  skip: tuple[tuple[str, tuple[int, ...]], ...] = MESH_SKIP  # (split, video indices left out).
  min_proposal_frames: int = NUM_FRAMES  # Shorter proposal files: skipped, or an error.

  def skipped(self, split: str) -> frozenset[int]:
    return frozenset(dict(self.skip).get(split, ()))


# The fake files of dummy_data/ (datasets/clevrer/make_dummy_data.py): video 2 has short
# proposals and is skipped from train, as 7648 and 9777 are in the release.
FAKE_SPLITS = (("train", 0, 6), ("validation", 10_000, 10_001), ("test", 15_000, 15_001))
FAKE_SKIP = (("train", (2,)), ("validation", ()), ("test", ()))
BUILDER_CONFIGS = [
    ClevrerConfig(name="s", frames=(0, 16), description="CLEVRER-S: frames 0 and 16, 64x64."),
    ClevrerConfig(name="l", frames=(0, 127), description="CLEVRER-L: frames 0 and 127, 64x64."),
    ClevrerConfig(name="s_fake", frames=(0, 16), splits=FAKE_SPLITS, skip=FAKE_SKIP,
                  description="As s, on the fake files of dummy_data/ (tests, smoke runs)."),
    ClevrerConfig(name="l_fake", frames=(0, 127), splits=FAKE_SPLITS, skip=FAKE_SKIP,
                  description="As l, on the fake files of dummy_data/ (tests, smoke runs)."),
]


def _instructions() -> str:
  urls = "\n".join(f"  {DOWNLOAD_URL}/{a}" for a in ARCHIVES)
  fake = "python datasets/clevrer/make_dummy_data.py"
  return (f"Download CLEVRER ({HOMEPAGE}):\n{urls}\nand unzip them into the manual folder "
          "(any sub-folders), which then holds video_<index:05d>.mp4 and "
          "derender_proposals/sim_<index:05d>.json for the videos of the splits "
          f"({', '.join(f'{n} {a}-{b - 1}' for n, a, b in MESH_SPLITS)}).\nThen: "
          + PREPARE_COMMAND.format(config="s|l", manual_dir="MANUAL_DIR")
          + f"\nThe s_fake and l_fake configs read the fake files that `{fake}` writes "
          "(--manual_dir=datasets/clevrer/dummy_data).")


def _error(config: ClevrerConfig, root, problem: str) -> FileNotFoundError:
  urls = " ".join(f"{DOWNLOAD_URL}/{a}" for a in ARCHIVES)
  return FileNotFoundError(
      f"clevrer/{config.name}: {problem}.\nOfficial source: {HOMEPAGE}; download {urls}\n"
      f"unzip each into {root} (expected files: video_<lo>-<hi>/video_<index:05d>.mp4 and "
      "derender_proposals/sim_<index:05d>.json)\nand prepare with: "
      + PREPARE_COMMAND.format(config=config.name, manual_dir=root))


def locate_files(manual_dir, config: ClevrerConfig
                 ) -> dict[int, tuple[pathlib.Path, pathlib.Path]]:
  """{video index: (mp4 path, proposals path)} for every video of the config's splits.

  Raises FileNotFoundError naming the URLs, the expected files and the command when a video or
  its proposals are missing.
  """
  root = pathlib.Path(str(manual_dir)) if manual_dir else None  # Local: rglob is needed.
  videos, proposals = {}, {}
  if root is not None and root.is_dir():
    for path in root.rglob("video_*.mp4"):
      match = re.fullmatch(r"video_(\d{5})\.mp4", path.name)
      if match:
        videos[int(match.group(1))] = path
    for path in root.rglob("*.json"):
      match = re.fullmatch(r"(?:sim|proposal)_(\d{5})\.json", path.name)
      if match:
        proposals[int(match.group(1))] = path
  wanted = [i for _, lo, hi in config.splits for i in range(lo, hi)]  # Skipped ones too.
  if not videos and not proposals:
    raise _error(config, root, f"no video_NNNNN.mp4 or proposal json files in {root}")
  for kind, found in (("video_NNNNN.mp4", videos), ("derender proposals", proposals)):
    missing = [i for i in wanted if i not in found]
    if missing:
      raise _error(config, root, f"{kind} missing for {len(missing)} videos of the splits, "
                   f"e.g. {missing[:10]}")
  return {i: (videos[i], proposals[i]) for i in wanted}


# ------------------------------------------------------------------------------------------
# COCO run-length encoding
# ------------------------------------------------------------------------------------------
def rle_counts(counts: str) -> list[int]:
  """Run lengths of a COCO compressed RLE string (pycocotools `rleFrString`).

  Each count is a sequence of 6-bit groups stored as chr(48 + group): 5 value bits, least
  significant first, and a continuation bit (0x20); the last group's bit 0x10 is the sign.
  From the fourth count on, the stored value is the difference to the count two before.
  """
  values: list[int] = []
  pos = 0
  data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
  while pos < len(data):
    value, shift, more = 0, 0, True
    while more:
      if pos >= len(data):
        raise ValueError("truncated RLE string")
      group = data[pos] - 48
      if not 0 <= group < 64:
        raise ValueError(f"byte {data[pos]!r} at {pos} is not an RLE character")
      value |= (group & 0x1F) << shift
      more = bool(group & 0x20)
      pos += 1
      shift += 5
      if not more and group & 0x10:
        value -= 1 << shift  # Sign-extend.
    if len(values) > 2:
      value += values[-2]
    values.append(value)
  return values


def decode_rle(rle: dict) -> np.ndarray:
  """COCO RLE {"size": [h, w], "counts": str or list of int} -> bool [h, w].

  Runs alternate 0s and 1s, starting with 0s, over the pixels in column-major order.
  Raises ValueError when the counts are malformed or do not cover h * w pixels.
  """
  h, w = (int(v) for v in rle["size"])
  counts = rle["counts"]
  runs = list(counts) if isinstance(counts, list) else rle_counts(counts)
  if any(r < 0 for r in runs) or sum(runs) != h * w:
    raise ValueError(f"RLE runs {runs[:6]}... do not cover {h}x{w} = {h * w} pixels")
  values = np.arange(len(runs)) % 2 == 1
  return np.repeat(values, runs).reshape(w, h).T


# ------------------------------------------------------------------------------------------
# Reading one video
# ------------------------------------------------------------------------------------------
def read_frames(path, indices) -> list[np.ndarray]:
  """Frames `indices` (i = the i-th decoded frame) of an mp4 as uint8 [H, W, 3] RGB."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading CLEVRER videos needs PyAV: pip install 'slot_ot_jax[clevrer]' "
                      "(or pip install av).") from e
  wanted, out = set(indices), {}
  try:
    with av.open(str(path)) as container:
      for i, frame in enumerate(container.decode(video=0)):
        if i in wanted:
          out[i] = frame.to_ndarray(format="rgb24")
        if len(out) == len(wanted):
          break
  except av.error.FFmpegError as e:
    raise ValueError(f"{path}: cannot decode the video ({e})") from e
  missing = sorted(wanted - set(out))
  if missing:
    raise ValueError(f"{path}: the video has no frame {missing} (frames are 0-based)")
  return [out[i] for i in indices]


def _resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
  """Nearest neighbour as OpenCV's INTER_NEAREST: source index floor(i * src / dst)."""
  h, w = mask.shape
  rows = np.floor(np.arange(size) * (h / size)).astype(int)
  cols = np.floor(np.arange(size) * (w / size)).astype(int)
  return mask[np.ix_(rows, cols)]


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  resized = tf.image.resize(image.astype(np.float32), (size, size), method="bilinear",
                            antialias=False)
  return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def _identities(frames: list[list[dict]]) -> tuple[list[list[int]], list[tuple]]:
  """Object ids (1-based) of each proposal of each frame, and the identity key of each id."""
  keys: list[tuple] = []
  ids = []
  for objects in frames:
    seen = collections.Counter()
    frame_ids = []
    for obj in objects:
      triple = (obj["color"], obj["material"], obj["shape"])
      key = triple + (seen[triple],)  # The k-th proposal with this triple.
      seen[triple] += 1
      if key not in keys:
        keys.append(key)
      frame_ids.append(keys.index(key) + 1)
    ids.append(frame_ids)
  return ids, keys


def read_example(index: int, video_path, proposals_path, config: ClevrerConfig) -> dict | None:
  """One two-frame example, or None when the proposals have fewer than
  `config.min_proposal_frames` frames."""
  data = json.loads(epath.Path(proposals_path).read_text())
  frames = data.get("frames")
  if not isinstance(frames, list):
    raise ValueError(f"{proposals_path}: no 'frames' list")
  if len(frames) < config.min_proposal_frames:
    return None
  chosen = []
  for f in config.frames:
    frame = frames[f]
    if int(frame.get("frame_index", f)) != f:
      raise ValueError(f"{proposals_path}: frames[{f}] has frame_index {frame['frame_index']}")
    if len(frame["objects"]) > MAX_OBJECTS_PER_FRAME:
      raise ValueError(f"{proposals_path}: frame {f} has {len(frame['objects'])} proposals, "
                       f"more than {MAX_OBJECTS_PER_FRAME}")
    chosen.append(frame["objects"])
  ids, keys = _identities(chosen)
  if len(keys) > MAX_LABELS:
    raise ValueError(f"{proposals_path}: {len(keys)} distinct objects, more than {MAX_LABELS}")
  res = config.resolution
  segs = []
  for f, objects, frame_ids in zip(config.frames, chosen, ids):
    labels = np.zeros((res, res), np.uint8)
    for j in reversed(range(len(objects))):  # Earlier proposals win where masks overlap.
      obj = objects[j]
      try:
        mask = decode_rle(obj["mask"])
      except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{proposals_path}: frame {f}, object {j}: bad mask ({e})") from e
      if mask.shape != (SOURCE_HEIGHT, SOURCE_WIDTH):
        raise ValueError(f"{proposals_path}: frame {f}, object {j}: mask size {mask.shape}, "
                         f"expected {(SOURCE_HEIGHT, SOURCE_WIDTH)}")
      labels[_resize_nearest(mask, res)] = frame_ids[j]
    segs.append(labels[..., None])
  images = read_frames(video_path, config.frames)
  for image in images:
    if image.shape[:2] != (SOURCE_HEIGHT, SOURCE_WIDTH):
      raise ValueError(f"{video_path}: frames are {image.shape[:2]}, expected "
                       f"{(SOURCE_HEIGHT, SOURCE_WIDTH)}")
  first = {i: t for t in (1, 0) for i in ids[t]}
  return {
      "video": np.stack([_resize_image(im, res) for im in images]),
      "segmentation": np.stack(segs),
      "num_objects": np.int32(len(keys)),
      "frame_num_objects": np.int32([len(o) for o in chosen]),
      "source_index": np.int64(index),
      "objects": {
          "color": [k[0] for k in keys], "material": [k[1] for k in keys],
          "shape": [k[2] for k in keys],
          "first_frame": np.int32([first[i] for i in range(1, len(keys) + 1)]),
          "present": np.int32([[i in ids[0], i in ids[1]] for i in range(1, len(keys) + 1)]
                              ).reshape(len(keys), 2),
      },
  }


class Builder(tfds.core.GeneratorBasedBuilder):
  """CLEVRER two-frame examples (CLEVRER-S/L of the MESH paper)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = "s"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions()

  def _info(self) -> tfds.core.DatasetInfo:
    res = self.builder_config.resolution
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(2, res, res, 3)),
            "segmentation": tfds.features.Video(shape=(2, res, res, 1)),
            "num_objects": tfds.features.Scalar(np.int32),
            "frame_num_objects": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "source_index": tfds.features.Scalar(np.int64),
            "objects": tfds.features.Sequence({
                "color": tfds.features.ClassLabel(names=COLORS),
                "material": tfds.features.ClassLabel(names=MATERIALS),
                "shape": tfds.features.ClassLabel(names=SHAPES),
                "first_frame": tfds.features.Scalar(np.int32),
                "present": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            }),
        }),
        supervised_keys=None,
        homepage=HOMEPAGE,
        disable_shuffling=True,  # Examples stay in video order.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = locate_files(dl_manager.manual_dir, self.builder_config)
    return {name: self._generate_examples(files, name, lo, hi)
            for name, lo, hi in self.builder_config.splits}

  def _generate_examples(self, files, split: str, lo: int, hi: int):
    skipped = self.builder_config.skipped(split)
    for index in range(lo, hi):
      if index in skipped:
        continue
      example = read_example(index, *files[index], self.builder_config)
      if example is None:
        raise ValueError(
            f"{files[index][1]}: the proposals of video {index} have fewer than "
            f"{self.builder_config.min_proposal_frames} frames, and the {split} split does "
            f"not skip it (skipped: {sorted(skipped) or 'none'}, as the MESH configs).")
      yield index, example

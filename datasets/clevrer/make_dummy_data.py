r"""Writes fake CLEVRER files in the release's formats into datasets/clevrer/dummy_data/.

  python datasets/clevrer/make_dummy_data.py

Per fake video index: video_<lo>-<hi>/video_<index:05d>.mp4, a real H.264 mp4 of 480x320 RGB
frames at 25 fps encoded with PyAV (128 frames, fewer for `SHORT_VIDEO`), and
derender_proposals/sim_<index:05d>.json with 128 frames (fewer for `SHORT_PROPOSALS`) whose
objects carry colour, material, shape, score and a mask as a real COCO compressed RLE string
(encoded with pycocotools, `pip install pycocotools`). Scenes: flat-coloured rectangles on a
grey floor that move over time; a new object enters at frame 10 (so frame 16 has it) and
another at frame 100 (so frame 127 has it); one video repeats a (colour, material, shape)
triple. The frames are coloured like their masks, so a test can check that the decoded video
and masks line up.

The builder's configs s_fake and l_fake (`FAKE_CONFIGS`) read these files: train 0-5 (video 2
has short proposals and is skipped, as 7648 and 9777 are in the release), validation 10000,
test 15000.
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

if not __package__:  # Run as a script: make the builder folders importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from clevrer import clevrer_dataset_builder as clevrer  # pylint: disable=g-import-not-at-top

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"
SPLITS = clevrer.FAKE_SPLITS
SHORT_PROPOSALS = 2        # Its proposals stop at frame 103 (skipped in every split).
REPEATED_TRIPLE = 3   # Two objects share one (colour, material, shape).
FAKE_CONFIGS = {c.name: c for c in clevrer.BUILDER_CONFIGS if c.name.endswith("_fake")}
_RGB = {"gray": (128, 128, 128), "red": (200, 30, 30), "blue": (30, 30, 200),
        "green": (30, 160, 30), "brown": (140, 90, 40), "cyan": (30, 190, 190),
        "purple": (130, 40, 160), "yellow": (220, 200, 30)}
H, W = clevrer.SOURCE_HEIGHT, clevrer.SOURCE_WIDTH


def _objects(index: int, rng: np.random.Generator) -> list[dict]:
  """Object tracks: attributes, entry frame, start corner and velocity (pixels per frame)."""
  n = 2 + index % 2
  colours = rng.choice(clevrer.COLORS, size=n + 2, replace=False)
  tracks = []
  for k in range(n + 2):
    tracks.append(dict(
        color=str(colours[k]), material=str(rng.choice(clevrer.MATERIALS)),
        shape=str(rng.choice(clevrer.SHAPES)), enter=0 if k < n else (10, 100)[k - n],
        x=float(rng.uniform(20, 300)), y=float(rng.uniform(20, 200)),
        vx=float(rng.uniform(-0.8, 0.8)), vy=float(rng.uniform(-0.5, 0.5)),
        w=int(rng.integers(16, 40)), h=int(rng.integers(20, 60))))
  if index == REPEATED_TRIPLE:
    for key in ("color", "material", "shape"):
      tracks[1][key] = tracks[0][key]
  return tracks


def _mask(track: dict, t: int) -> np.ndarray:
  x0 = int(round(track["x"] + track["vx"] * t))
  y0 = int(round(track["y"] + track["vy"] * t))
  mask = np.zeros((H, W), bool)
  mask[max(y0, 0):max(y0 + track["h"], 0), max(x0, 0):max(x0 + track["w"], 0)] = True
  return mask


def _frame(tracks: list[dict], t: int) -> tuple[np.ndarray, list[tuple[dict, np.ndarray]]]:
  """Image uint8 [H, W, 3] and the visible (track, mask) pairs of frame t, front first."""
  image = np.full((H, W, 3), 90, np.uint8)
  present = [tr for tr in tracks if t >= tr["enter"]]
  covered = np.zeros((H, W), bool)
  visible = []
  for tr in present:  # The first object is in front.
    mask = _mask(tr, t) & ~covered
    covered |= mask
    if mask.any():
      visible.append((tr, mask))
  for tr, mask in visible:
    image[mask] = _RGB[tr["color"]]
  return image, visible


def write_video(path: pathlib.Path, frames: list[np.ndarray]) -> None:
  """A real H.264 mp4 (yuv420p, 25 fps) written with PyAV."""
  import av  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    stream.options = {"crf": "18", "preset": "ultrafast"}
    for image in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def rle_string(mask: np.ndarray) -> str:
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return rle["counts"].decode("ascii")


def write_video_files(root: pathlib.Path, index: int) -> None:
  rng = np.random.default_rng(index)
  tracks = _objects(index, rng)
  num_frames = clevrer.NUM_FRAMES
  images, frames = [], []
  for t in range(num_frames):
    image, visible = _frame(tracks, t)
    images.append(image)
    frames.append({
        "frame_index": t, "frame_filename": f"video_{index:05d}/{t}.png",
        "objects": [{"color": tr["color"], "material": tr["material"], "shape": tr["shape"],
                     "score": 0.99, "mask": {"size": [H, W], "counts": rle_string(m)}}
                    for tr, m in visible]})
  lo = index // 1000 * 1000
  write_video(root / f"video_{lo:05d}-{lo + 1000:05d}" / f"video_{index:05d}.mp4", images)
  if index == SHORT_PROPOSALS:
    frames = frames[:104]
  proposals = {"video_name": f"video_{index:05d}.mp4", "frames": frames}
  path = root / "derender_proposals" / f"sim_{index:05d}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(proposals, separators=(",", ":")))


def main() -> None:
  for _, lo, hi in SPLITS:
    for index in range(lo, hi):
      write_video_files(DUMMY_DIR, index)
  print(f"Wrote fake CLEVRER files to {DUMMY_DIR}")


if __name__ == "__main__":
  main()

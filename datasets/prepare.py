"""Prepares (builds) one dataset of this project into a TFDS data dir.

    python datasets/prepare.py shapes/32x32 [--data_dir=DIR]
    python datasets/prepare.py multi_object_datasets/clevr6 --manual_dir=SRC [--data_dir=DIR]
    python datasets/prepare.py clevrtex/full --manual_dir=SRC [--data_dir=DIR]
    python datasets/prepare.py clevrer/l --manual_dir=SRC [--data_dir=DIR]   (two-frame videos)
    python datasets/prepare.py clevr_v1/full --manual_dir=SRC [--data_dir=DIR]

NAME is `<builder>/<config>` (see datasets/README.md). The data dir defaults to TFDS's
(~/tensorflow_datasets or $TFDS_DATA_DIR), the manual dir to <data_dir>/downloads/manual.
This is what `tfds build datasets/<builder> --config=<config>` does; tfds 4.9's command line
also needs apache-beam installed, this script does not.
"""
from __future__ import annotations

import argparse

from slot_ot_jax.data import input_pipeline
from slot_ot_jax.tasks import video


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  names = sorted(input_pipeline.PRESETS) + sorted(video.PRESETS)
  parser.add_argument("name", choices=names, metavar="NAME", help="one of: " + ", ".join(names))
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--manual_dir", default=None)
  args = parser.parse_args(argv)
  prepare = video.prepare if args.name in video.PRESETS else input_pipeline.prepare
  builder = prepare(args.name, args.data_dir, args.manual_dir)
  splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
  print(f"{args.name} prepared in {builder.data_path} ({splits})")


if __name__ == "__main__":
  main()

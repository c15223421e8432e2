"""`livedenoise export`: a model as a BioImage Model Zoo package (runs in deepImageJ, ilastik, bioimageio.core)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Package a livedenoise model for the BioImage Model Zoo (bioimage.io, model spec 0.5; TorchScript, ONNX and
state-dict weights).

The package takes raw camera values and returns denoised values: the noise model travels inside it.
That noise model is fitted to --sample, images of the data the package is for (as `livedenoise
denoise` fits one to every dataset); --noise-model stored keeps the checkpoint's own instead (for a
model fine-tuned on this very camera and light level).

  livedenoise export fast -o cells-denoiser.zip --sample cells.tif --author "A. Researcher"
  livedenoise export my-adapted.safetensors -o my-model.zip --noise-model stored

The package also carries the livedenoise checkpoint, so `livedenoise denoise --model my-model.zip`
(or --backbone, or the Python API) runs the very same network again.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export",
                              help="package a model for the BioImage Model Zoo (.zip: TorchScript, ONNX, state dict)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="'fast', 'standard', a .safetensors checkpoint (2-D models)")
    p.add_argument("-o", "--output", type=Path, required=True, help="package to write (.zip)")
    p.add_argument("--sample", type=Path, nargs="+", default=[],
                   help="TIFF images of the data the package is for: the noise model is fitted to them and a crop of "
                        "the first is the package's test image")
    p.add_argument("--noise-model", choices=["fit", "stored"], default="fit",
                   help="fit (default): fit the noise model to --sample; stored: keep the checkpoint's own")
    p.add_argument("--name", help="the package's name (default: 'livedenoise <model name>')")
    p.add_argument("--description", help="one-paragraph description shown on bioimage.io")
    p.add_argument("--author", action="append", default=[], metavar="NAME", help="an author (repeat for several)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from livedenoise.bioimageio import export_bioimageio
    from livedenoise.commands._checkpoint_output import check_output_file
    from livedenoise.commands._frames import read_frames

    # the model file or a sample named as -o (--overwrite must never replace an input), a folder, not a .zip, an
    # existing package without --overwrite, an unwritable folder: refused before the noise fit and the export
    check_output_file(args.output, args.overwrite, [args.model, *args.sample], what="Model Zoo package", suffix=".zip")
    sample = read_frames(args.sample) if args.sample else None
    out = export_bioimageio(args.model, args.output, sample=sample, noise_model=args.noise_model, name=args.name,
                            description=args.description, authors=args.author, overwrite=args.overwrite)
    print(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB): BioImage Model Zoo model (TorchScript, ONNX and "
          "state-dict weights), test image and the livedenoise checkpoint. Validated with bioimageio.spec; ONNX "
          "output matched PyTorch on the test image.")
    return 0

"""The `vq` command line: a thin Typer layer over the vqcli API.

Nothing heavy is imported at module level, so `vq --help` and shell completion stay instant;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import DEFAULT_PRESET, PRESETS

app = typer.Typer(
    name="vq",
    help="Learned image compression with a VQ-VAE: train, compress, decompress, inspect.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

@app.callback()
def _root() -> None:
    """Learned image compression with a VQ-VAE: train, compress, decompress, inspect."""


DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the exit to raise."""
    typer.echo(f"vq: error: {message}", err=True)
    return typer.Exit(code)


def run_guarded(fn, *args, **kwargs):
    """Call into the API, turning user-facing errors into one line and exit code 1."""
    from .errors import VQError

    try:
        return fn(*args, **kwargs)
    except VQError as e:
        raise fail(str(e)) from None
    except BrokenPipeError:
        raise typer.Exit(1) from None


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Folder of training images (searched recursively).")],
    preset: Annotated[str, typer.Option(help=f"Model preset: {', '.join(PRESETS)}.")] = DEFAULT_PRESET,
    steps: Annotated[int, typer.Option(min=1, help="Total optimisation steps.")] = 20000,
    out: Annotated[Path, typer.Option("--out", "-o", help="Release weights to write.")] = Path("vq.safetensors"),
    val: Annotated[Optional[Path], typer.Option(help="Folder of validation images.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Checkpoint to continue from.")] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    crop: Annotated[int, typer.Option(min=16, help="Random crop size in pixels.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    warmup: Annotated[int, typer.Option(min=0)] = 500,
    msssim_weight: Annotated[float, typer.Option(help="Weight of 1-MS-SSIM in the loss (0: MSE only).")] = 0.0,
    workers: Annotated[int, typer.Option(min=0, help="Data loader worker processes.")] = 2,
    ckpt_every: Annotated[int, typer.Option(min=1)] = 1000,
    val_every: Annotated[int, typer.Option(min=1)] = 1000,
    seed: int = 0,
    half: Annotated[bool, typer.Option(help="Store release weights in fp16.")] = True,
) -> None:
    """Train a VQ-VAE on a folder of images and write release weights."""
    if preset not in PRESETS:
        raise fail(f"--preset {preset}: unknown preset (choose from {', '.join(PRESETS)})", 2)
    if not data.is_dir():
        raise fail(f"{data}: not a directory")
    from .config import TrainConfig
    from .train import TrainingInterrupted, train as run_train

    tcfg = TrainConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr, warmup=min(warmup, steps),
                       msssim_weight=msssim_weight, val_every=val_every, ckpt_every=ckpt_every, seed=seed,
                       workers=workers)
    try:
        run_guarded(run_train, data, out, PRESETS[preset], tcfg, val_dir=val, resume=resume, device=device, half=half)
    except TrainingInterrupted as e:
        typer.echo(f"vq: {e}", err=True)
        raise typer.Exit(130) from None


CodecWeightsOpt = Annotated[Optional[Path], typer.Option("--weights",
                                                        help="Weights file (default: the shipped model).")]
CodecForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
CodecJsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]


def _guard_usage(fn):
    """Usage errors (vqcli.codecli.UsageError) exit 2; run_guarded turns other errors into exit 1."""
    from .codecli import UsageError

    def wrapped(*args):
        try:
            return fn(*args)
        except UsageError as e:
            raise fail(str(e), 2) from None
    return wrapped


@app.command()
def compress(
    inputs: Annotated[list[str], typer.Argument(help="Images or folders ('-': stdin).", metavar="IN",
                                                show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output file, or folder for several "
                                                  "inputs ('-': stdout). Default: IN.vqz.")] = None,
    weights: CodecWeightsOpt = None,
    stages: Annotated[Optional[int], typer.Option(
        help="Keep the first N RVQ stages (default: ceil(0.6 S), 6 of 10).")] = None,
    bpp: Annotated[Optional[float], typer.Option(help="Most stages whose file fits X bits per pixel.")] = None,
    psnr: Annotated[Optional[float], typer.Option(help="Fewest stages reaching DB decibels PSNR.")] = None,
    force: CodecForceOpt = False,
    json_out: CodecJsonOpt = False,
    verify: Annotated[bool, typer.Option(help="Decode the result and report PSNR and MS-SSIM.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Compress images to .vqz files."""
    from .codecli import run_compress

    code = run_guarded(_guard_usage(run_compress), inputs, output, weights, device, stages, bpp, psnr, force,
                       json_out, verify)
    raise typer.Exit(code)


@app.command()
def decompress(
    input: Annotated[str, typer.Argument(help=".vqz file ('-': stdin).", metavar="IN", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output image; the extension picks "
                                                  "the format ('-': PNG on stdout). Default: IN.png.")] = None,
    weights: CodecWeightsOpt = None,
    stages: Annotated[Optional[int], typer.Option(help="Decode only the first N stages.")] = None,
    force: CodecForceOpt = False,
    json_out: CodecJsonOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Decompress a .vqz file to an image."""
    from .codecli import run_decompress

    raise typer.Exit(run_guarded(_guard_usage(run_decompress), input, output, weights, device, stages, force,
                                 json_out))


@app.command()
def info(
    file: Annotated[str, typer.Argument(help=".vqz file ('-': stdin).", metavar="FILE", show_default=False)],
    json_out: CodecJsonOpt = False,
) -> None:
    """Show a .vqz file's header, chunks and bits per stage (without loading the model)."""
    from .codecli import run_info

    raise typer.Exit(run_guarded(run_info, file, json_out))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("vq: interrupted", err=True)
        sys.exit(130)

"""The `vq` command line: a thin Typer layer over the vqcli API.

Nothing heavy is imported at module level, so `vq --help` and shell completion stay instant;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import DEFAULT_PRESET, PRESETS
from .limits import MAX_PIXELS
from .rate import DEFAULT_EFFORT, EFFORTS

app = typer.Typer(
    name="vq",
    help="Learned image compression with a VQ-VAE: train, compress, decompress, inspect.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def version_text() -> str:
    """The version and the default model id (read from the weights' header: no torch)."""
    from . import __version__
    from .weightspath import default_weights_path, model_id_in_metadata

    path = default_weights_path()
    mid = model_id_in_metadata(path)
    return f"vq {__version__}\ndefault model {mid} ({path})" if mid else \
        f"vq {__version__}\ndefault model: none ({path} is missing or not weights)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print the version and the default model id, and exit.")] = False,
) -> None:
    """Learned image compression with a VQ-VAE: train, compress, decompress, inspect."""


WEIGHTS_HELP = ("Weights file, or a shipped model's name: default, hifi (24 stages: higher top quality), "
                "ms-ssim (tuned for MS-SSIM) or a model id.")
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the exit to raise."""
    from .errors import one_line

    typer.echo(f"vq: error: {one_line(message)}", err=True)
    return typer.Exit(code)


def run_guarded(fn, *args, **kwargs):
    """Call into the API, turning every error into one line: exit 2 for bad usage, 1 otherwise.

    Anything unexpected is reported as one line too; VQ_DEBUG=1 shows its traceback.
    """
    import os

    from .errors import UsageError, VQError, cli_message, is_out_of_memory
    from .fileio import os_error_message

    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort):
        raise
    except UsageError as e:
        raise fail(cli_message(e), 2) from None
    except VQError as e:
        raise fail(cli_message(e)) from None
    except BrokenPipeError:
        raise typer.Exit(1) from None
    except OSError as e:  # disk full, permissions, a path that vanished
        raise fail(os_error_message(e)) from None
    except Exception as e:
        if is_out_of_memory(e):  # MemoryError, torch.OutOfMemoryError, "CUDA out of memory" RuntimeErrors
            raise fail("out of memory (try a smaller image or --device cpu)") from None
        if os.environ.get("VQ_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        raise fail(f"unexpected {type(e).__name__}: {first} (VQ_DEBUG=1 shows the traceback)") from None


def _check_train_options(data: Path, preset: str, precision: str, init: Optional[Path], resume: Optional[Path],
                         widen: bool, rate_weight: Optional[float]) -> None:
    """Refuse `vq train` options that contradict each other, before any file is touched."""
    if preset not in PRESETS:
        raise fail(f"--preset {preset}: unknown preset (choose from {', '.join(PRESETS)})", 2)
    if not data.is_dir():
        raise fail(f"{data}: not a directory")
    if precision not in ("auto", "bf16", "fp32"):
        raise fail(f"--precision {precision}: expected auto, bf16 or fp32", 2)
    if init is not None and resume is not None:
        raise fail("--init and --resume: choose one (--resume restores a whole training state)", 2)
    if widen and init is None:
        raise fail("--widen needs --init (the weights to grow)", 2)
    if rate_weight is not None and resume is not None:
        raise fail("--rate-weight and --resume: a resumed run keeps its checkpoint's model config", 2)
    if rate_weight is not None and not 0 <= rate_weight < math.inf:
        raise fail(f"--rate-weight {rate_weight}: expected a finite number >= 0", 2)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Folder of training images (searched recursively).")],
    preset: Annotated[str, typer.Option(help=f"Model preset: {', '.join(PRESETS)}.")] = DEFAULT_PRESET,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Total optimisation steps (default 20000; with "
                                                 "--resume, the checkpoint's).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Release weights to write.")] = Path("vq.safetensors"),
    val: Annotated[Optional[Path], typer.Option(help="Folder of validation images.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Checkpoint to continue from.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Release weights to start from (fine-tune: their model "
                                                 "config is used, with a fresh optimizer and --warmup).")] = None,
    widen: Annotated[bool, typer.Option("--widen", help="With --init: grow its network to --preset's sizes "
                                        "(channels, latent, stages), computing the same images at the start.")] = False,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per optimisation step.")] = 16,
    crop: Annotated[int, typer.Option(min=16, help="Random crop size in pixels.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (1e-3 diverged on the cpu preset after warm-up).")] = 5e-4,
    warmup: Annotated[int, typer.Option(min=0, help="Steps of linear learning-rate warm-up.")] = 500,
    msssim_weight: Annotated[float, typer.Option(help="Weight of 1-MS-SSIM in the loss (0: MSE only).")] = 0.0,
    rate_weight: Annotated[Optional[float], typer.Option(
        help="Entropy-constrained code choice: price of a bit, as a share of the stage's mean squared "
        "error (0: nearest code; default: the preset's, or --init's).", show_default=False)] = None,
    workers: Annotated[int, typer.Option(min=0, help="Data loader worker processes.")] = 2,
    ckpt_every: Annotated[int, typer.Option(min=1, help="Write the checkpoint every N steps.")] = 1000,
    val_every: Annotated[int, typer.Option(min=1, help="Validate on --val every N steps.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the crops and the initialisation (a run is reproducible).")] = 0,
    half: Annotated[bool, typer.Option(help="Store release weights in fp16.")] = True,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32: autocast of the conv network (auto: bf16 "
                                           "where the device has it natively).")] = "auto",
    cache: Annotated[bool, typer.Option(help="Keep the decoded training images in memory.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing --out, and start over "
                                        "where a checkpoint of an earlier run lies beside it.")] = False,
) -> None:
    """Train a VQ-VAE on a folder of images and write release weights."""
    _check_train_options(data, preset, precision, init, resume, widen, rate_weight)
    from .config import TrainConfig
    from .train import TrainingInterrupted, check_train_outputs
    from .train import train as run_train

    # On --resume every setting comes from the checkpoint; only an explicit --steps extends the run.
    total = steps if steps is not None else (0 if resume else 20000)
    tcfg = TrainConfig(steps=total, batch_size=batch_size, crop=crop, lr=lr, warmup=min(warmup, total),
                       msssim_weight=msssim_weight, val_every=val_every, ckpt_every=ckpt_every, seed=seed,
                       workers=workers, precision=precision, cache=cache)

    def go() -> None:
        try:
            run_train(data, out, PRESETS[preset], tcfg, val_dir=val, resume=resume, device=device, half=half,
                      init=init, rate_weight=rate_weight, widen=widen)
        except TrainingInterrupted as e:
            typer.echo(f"vq: {e}", err=True)
            raise typer.Exit(130) from None

    run_guarded(check_train_outputs, out, resume, force)
    run_guarded(go)


WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", "-w", help=WEIGHTS_HELP)]
CodecForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
CodecJsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
JobsOpt = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", min=1, show_default=False,
    help="Worker processes for a batch (default: the available cores; shared by the ranks of a node "
         "under torchrun). Outputs do not depend on it.")]
EffortOpt = Annotated[int, typer.Option(
    "--effort", "-e", min=0, max=len(EFFORTS) - 1,
    help="How hard the encoder searches for codes: 0 greedy (fastest), 1 a beam of 4 per position, 2 a "
         "beam of 16. More effort is slower and gives smaller files at equal quality; decoding is the same.")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", help="Refuse images of more pixels (like Pillow's "
                                           "decompression-bomb guard).")]


@app.command()
def compress(
    inputs: Annotated[list[str], typer.Argument(help="Images or folders ('-': stdin).", metavar="IMAGE",
                                                show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output file, or folder for several "
                                                  "inputs ('-': stdout). Default: IMAGE.vqz.")] = None,
    weights: WeightsOpt = None,
    quality: Annotated[Optional[float], typer.Option(
        "--quality", "-q", help="0-100: each 16x16 block keeps the RVQ stages worth their bits at this "
        "quality; above 50, an enhancement layer also refines the image (the shipped default has one: "
        "up to about 38 dB at 100). Default: the weights' default quality, 45 for the shipped model.")] = None,
    bpp: Annotated[Optional[float], typer.Option(help="The highest quality whose file fits BPP bits per pixel.")] = None,
    psnr: Annotated[Optional[float], typer.Option(help="The lowest quality reaching DB decibels of PSNR.")] = None,
    stages: Annotated[Optional[int], typer.Option(
        help="Keep the first N RVQ stages everywhere instead (a plain token grid; larger files).")] = None,
    best_effort: Annotated[bool, typer.Option("--best-effort", help="When no quality meets --bpp or --psnr, "
                                              "write the nearest file (quality 0 or 100) instead of failing.")] = False,
    effort: EffortOpt = DEFAULT_EFFORT,
    force: CodecForceOpt = False,
    json_out: CodecJsonOpt = False,
    verify: Annotated[bool, typer.Option(help="Decode the result and report PSNR and MS-SSIM.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="The full stage table for every file of a "
                                          "batch (default: a line per file and a summary).")] = False,
    device: DeviceOpt = "auto",
    jobs: JobsOpt = None,
    max_pixels: MaxPixelsOpt = MAX_PIXELS,
) -> None:
    """Compress images to .vqz files."""
    from .codecli import run_compress

    code = run_guarded(run_compress, inputs, output, weights, device, stages, bpp, psnr, force,
                       json_out, verify, jobs, max_pixels, quality, effort, best_effort, verbose)
    raise typer.Exit(code)


@app.command()
def decompress(
    inputs: Annotated[list[str], typer.Argument(help=".vqz files or folders ('-': stdin).", metavar="FILE",
                                                show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output image, the extension picks the "
                                                  "format ('-': PNG on stdout); or folder for several inputs. "
                                                  "Default: FILE.png.")] = None,
    weights: WeightsOpt = None,
    stages: Annotated[Optional[int], typer.Option(help="Decode only the first N stages.")] = None,
    force: CodecForceOpt = False,
    json_out: CodecJsonOpt = False,
    device: DeviceOpt = "auto",
    jobs: JobsOpt = None,
    max_pixels: MaxPixelsOpt = MAX_PIXELS,
) -> None:
    """Decompress .vqz files to images."""
    from .codecli import run_decompress

    raise typer.Exit(run_guarded(run_decompress, inputs, output, weights, device, stages, force,
                                 json_out, jobs, max_pixels))


@app.command()
def info(
    file: Annotated[str, typer.Argument(help=".vqz file ('-': stdin).", metavar="FILE", show_default=False)],
    json_out: CodecJsonOpt = False,
) -> None:
    """Show a .vqz file's header, chunks and bits per stage (without loading the model)."""
    from .codecli import run_info

    raise typer.Exit(run_guarded(run_info, file, json_out))


# -- vq stats / vq eval (issue 4) --------------------------------------------------------------

stats_app = typer.Typer(help="Codebook statistics of the weights, a folder of images or one .vqz file.",
                        no_args_is_help=True)
app.add_typer(stats_app, name="stats")


def _print_json(data) -> None:
    import json

    typer.echo(json.dumps(data, indent=2))


def _stats_out(weights, counts, as_json: bool, stderr: bool = False) -> None:
    """The statistics as a table (on stderr when stdout carries a figure) or JSON on stdout."""
    from .usage import codebook_usage, render_table, report_dict

    st = codebook_usage(counts.histogram, counts.code_distance)
    if as_json:
        _print_json(report_dict(st, counts.source, weights, {**counts.extra, "histogram": counts.histogram.tolist()}))
        return
    from rich.console import Console

    console = Console(stderr=stderr)
    console.print(render_table(st, f"Codebook usage: {counts.source} (model {weights.model_id}, "
                                   f"{weights.config.stages} stages x {weights.config.codebook_size} codes)",
                               counts.histogram, console.width))


@stats_app.command("codebook")
def stats_codebook(
    weights: WeightsOpt = None,
    images: Annotated[Optional[Path], typer.Option(help="Recompute the statistics over this folder of images.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG figure of code usage ('-': stdout).")] = None,
    pca: Annotated[bool, typer.Option(help="With --plot: add a PCA projection of each stage's codebook.")] = True,
    force: CodecForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use at most N images of --images.")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Per-stage code usage: used codes, perplexity, entropy, dead codes, top-1% share, distance."""
    def go() -> None:
        from .fileio import STDIO, check_target, one_stdout
        from .plots import codebook_figure, pyplot
        from .usage import codebook_counts, codebook_vectors
        from .weights import load_weights

        to_stdout = one_stdout(json=as_json, plot=plot is not None and str(plot) == STDIO)
        if plot is not None:
            check_target(plot, force)
            pyplot(plot)  # fail before any work when matplotlib is missing
        w = load_weights(weights, device)
        counts = codebook_counts(w, images, limit, progress=not as_json)
        _stats_out(w, counts, as_json, stderr=to_stdout)
        if plot is not None:
            codebook_figure(plot, counts.histogram, f"vq codebook usage: {counts.source} (model {w.model_id})",
                            codebook_vectors(w) if pca else None)
            if not as_json and not to_stdout:
                typer.echo(f"wrote {plot}", err=True)

    run_guarded(go)


@stats_app.command("file")
def stats_file(
    file: Annotated[Path, typer.Argument(help="A .vqz file.")],
    weights: WeightsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """The same per-stage statistics for the indices stored in one .vqz file."""
    def go() -> None:
        from .usage import file_counts
        from .weights import load_weights

        w = load_weights(weights, "cpu")
        _stats_out(w, file_counts(w, file), as_json)

    run_guarded(go)


@app.command("eval")
def eval_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of test images (searched recursively).")],
    weights: WeightsOpt = None,
    codecs: Annotated[str, typer.Option(help="Codecs to compare with: vq-stages (vq without a stage map: "
                                              "uniform stages), jpeg, webp, avif.")] = "vq-stages,jpeg,webp,avif",
    plot: Annotated[Optional[Path], typer.Option(help="Write an RD plot (bpp vs PSNR and MS-SSIM) PNG "
                                              "('-': stdout).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the full report as JSON "
                                                     "('-': stdout).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use at most N images.")] = None,
    effort: EffortOpt = DEFAULT_EFFORT,
    force: CodecForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Rate-distortion of vq (a ladder of qualities) against vq --stages, JPEG, WebP and AVIF, with BD-rates."""
    def go() -> None:
        import json

        from .evaluate import evaluate, parse_codecs, render
        from .fileio import STDIO, check_target, one_stdout, write_target
        from .weights import load_weights

        names = parse_codecs(codecs)
        to_stdout = one_stdout(json=json_out is not None and str(json_out) == STDIO,
                               plot=plot is not None and str(plot) == STDIO)
        for target in (json_out, plot):  # fail now, not after the whole evaluation
            if target is not None:
                check_target(target, force, binary=target is plot)
        if plot is not None:
            from .plots import pyplot

            pyplot(plot)
        w = load_weights(weights, device)
        report = evaluate(w, folder, names, limit=limit, effort=effort)
        from rich.console import Console

        console = Console(stderr=bool(to_stdout))  # stdout carries the JSON or the figure alone
        for r in render(report):
            console.print(r)
        if json_out is not None:
            write_target(json_out, (json.dumps(report, indent=1) + "\n").encode(), force)
        if plot is not None:
            from .plots import rd_figure

            rd_figure(plot, report)
        for target in (json_out, plot):
            if target is not None and str(target) != STDIO:
                typer.echo(f"wrote {target}", err=True)

    run_guarded(go)


@app.command()
def compare(
    image: Annotated[Path, typer.Argument(help="An image file.")],
    bpp: Annotated[Optional[float], typer.Option(help="Byte budget in bits per pixel of the whole image "
                                                 "[default: 0.25].", show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option(help="Byte budget in bytes (instead of --bpp).")] = None,
    crop: Annotated[Optional[str], typer.Option(help="X,Y,W,H of the region to show (default: a 160 px "
                                                "square at the centre).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="PNG figure to write ('-': stdout; "
                                                   "default: IMAGE.compare.png).")] = None,
    codecs: Annotated[str, typer.Option(help="Classical codecs beside vq: jpeg, webp, avif.")] = "jpeg,webp,avif",
    zoom: Annotated[Optional[int], typer.Option(min=1, help="Nearest-neighbour zoom of the crops (default: "
                                                "to about 320 px).")] = None,
    columns: Annotated[Optional[int], typer.Option(min=1, help="Panels per row (default: all in one).")] = None,
    weights: WeightsOpt = None,
    force: CodecForceOpt = False,
    json_out: CodecJsonOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """The image through vq, JPEG, WebP and AVIF at the same file size, side by side as zoomed crops."""
    def go() -> None:
        import io

        from .compare import compare as run
        from .compare import grid_figure, parse_crop, render, target_bytes
        from .evaluate import parse_codecs
        from .fileio import STDIO, check_target, one_stdout, write_target
        from .images import load_image
        from .weights import load_weights

        names = parse_codecs(codecs)
        out = output if output is not None else image.with_suffix(".compare.png")
        to_stdout = one_stdout(json=json_out, output=str(out) == STDIO)
        check_target(out, force)
        rgb = load_image(image).rgb
        h, w = rgb.shape[:2]
        budget = target_bytes(w, h, bpp, size)
        box = parse_crop(crop, w, h)
        entries = run(load_weights(weights, device), rgb, budget, names)
        buf = io.BytesIO()
        grid_figure(entries, box, zoom, columns).save(buf, "PNG", optimize=True)
        write_target(out, buf.getvalue(), force)
        if json_out:
            _print_json({"image": str(image), "width": w, "height": h, "budget_bytes": budget,
                         "crop": list(box), "figure": str(out), "codecs": [e.to_dict() for e in entries]})
            return
        from rich.console import Console

        Console(stderr=to_stdout).print(*render(entries, f"{image}: {w}x{h}, budget {budget:,} bytes "
                                                        f"({8 * budget / (w * h):.3f} bpp)"))
        if not to_stdout:
            typer.echo(f"wrote {out}", err=True)

    run_guarded(go)


METAVARS = {"psnr": "DB", "json_out": "FILE", "plot": "FILE", "output": "PATH", "out": "FILE", "weights": "WEIGHTS",
            "init": "WEIGHTS", "resume": "CKPT", "val": "DIR", "images": "DIR", "data": "DIR", "crop": "X,Y,W,H"}


def command():
    """The Click command behind `app`, with help in the usual style: `--bpp BPP`, `--psnr DB`,
    `--steps N`, flags with no placeholder (Typer would show `<bool>`, `<float>`)."""
    import typer.main

    def name_metavars(cmd) -> None:
        for p in cmd.params:
            if p.param_type_name == "option" and p.metavar is None:
                p.metavar = "" if p.is_flag else "N" if p.bare_type() == "int" else \
                    METAVARS.get(p.name, p.name.upper().replace("_", "-"))
            elif p.param_type_name == "argument":  # its metavar (IN, FILE) says it: no `<list[str]>` column
                p.display_type_rich = lambda ctx: None

        def help_option(ctx, made=cmd.get_help_option):  # Click makes --help anew for each help page
            opt = made(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        cmd.get_help_option = help_option
        for sub in getattr(cmd, "commands", {}).values():
            name_metavars(sub)

    cmd = typer.main.get_command(app)
    name_metavars(cmd)
    return cmd


def _sigterm_as_interrupt() -> None:
    """SIGTERM (kill, a scheduler) stops like Ctrl-C, so that atomic outputs remove their temp
    files; `vq train` installs its own handler (checkpoint between steps, then stop)."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    """Console-script entry point: every usage error is one line on stderr (exit 2), as the
    commands' own errors are, instead of Click's boxed message."""
    from .errors import one_line

    _sigterm_as_interrupt()
    try:
        # prog_name: also under `python -m vqcli`, completion scripts and usage name `vq`
        code = command()(prog_name="vq", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("vq: interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as e:  # Click's usage errors (a bad value, an unknown option) are these
        if not e.format_message().strip():  # a group called bare: Click printed its help already
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and e.exit_code == 2 else ""
        typer.echo(f"vq: error: {one_line(e.format_message())}{hint}", err=True)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)

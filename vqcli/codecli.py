"""What `vq compress`, `vq decompress` and `vq info` do, behind the thin Typer layer in cli.py:
resolving inputs and outputs, batching, tables and JSON. Errors are VQError (exit 1) or
UsageError (exit 2); nothing here prints a traceback or leaves a partial output file.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .batch import Job, console, input_name
from .errors import UsageError, VQError
from .fileio import STDIO, check_target, read_file, write_target
from .limits import MAX_PIXELS, check_max_pixels, check_size

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF"}


def _read_input(src: str) -> bytes:
    if src == STDIO:
        return sys.stdin.buffer.read()
    return read_file(src)


def _open_job(job: Job, force: bool) -> bytes:
    """A job's input bytes, once its output may be written (its folder made, as mkdir -p would)."""
    if job.mkdir:
        Path(job.dst).parent.mkdir(parents=True, exist_ok=True)
    check_target(job.dst, force)
    return _read_input(job.src)


# -- batches ------------------------------------------------------------------------------------
def plan_jobs(inputs: list[str], output: str | None, suffix: str, find, what: str) -> tuple[list[Job], bool]:
    """(jobs, batch) for compress or decompress: each input goes to the same name with `suffix`
    (or into -o). A directory (searched with `find`) or several inputs make a batch, whose -o
    is a directory, made (as mkdir -p would) when the first file is written; its sub-folders are
    mirrored there. A single input's -o is a directory too when it exists as one or ends in '/'."""
    if not inputs:
        raise UsageError("no input given")
    if STDIO in inputs and len(inputs) > 1:
        raise UsageError("'-' (stdin) cannot be mixed with other inputs")
    batch = len(inputs) > 1 or any(Path(i).is_dir() for i in inputs if i != STDIO)
    to_dir = output is not None and output != STDIO and (output.endswith(("/", os.sep)) or Path(output).is_dir())
    if not batch and not (to_dir and inputs[0] != STDIO):
        src = inputs[0]
        dst = output if output is not None else (STDIO if src == STDIO else str(Path(src).with_suffix(suffix)))
        return [Job(src, dst)], False
    out_dir = Path(output) if output is not None else None
    if output == STDIO:
        raise UsageError("-o - (stdout) takes a single input")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: is a file, not a directory (several inputs need -o DIR)")
    if not batch:  # one file into a directory
        src = Path(inputs[0])
        return [Job(str(src), str((out_dir / src.name).with_suffix(suffix)), mkdir=True)], False
    jobs: list[Job] = []
    for i in inputs:
        p = Path(i)
        if p.is_dir():
            files = find(p)
            if not files:
                raise VQError(f"{p}: no {what} found")
            pairs = [(f, f.relative_to(p)) for f in files]
        else:
            pairs = [(p, Path(p.name))]
        for f, rel in pairs:
            dst = (out_dir / rel if out_dir is not None else f).with_suffix(suffix)
            jobs.append(Job(str(f), str(dst), mkdir=out_dir is not None))
    seen: dict[str, str] = {}
    for j in jobs:
        if j.dst in seen:
            raise UsageError(f"{j.src} and {seen[j.dst]} would both be written to {j.dst}")
        seen[j.dst] = j.src
    return jobs, True


def run_jobs(jobs: list[Job], batch: bool, make_one, n_jobs: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Run every job with the runner `make_one()` builds -> (reports, failures). A single job's
    error propagates; a batch (or any run under torchrun) goes through vqcli.batch: --jobs worker
    processes and torchrun shards, each failure reported on one line while the others go on,
    under one progress bar."""
    from .batch import oom_named, run_batch, torchrun_ranks

    if not batch and torchrun_ranks() is None:
        with oom_named(jobs[0]):
            return [make_one()(jobs[0])], 0
    return run_batch(jobs, make_one, n_jobs)


def finish(results: list[dict[str, Any]], failed: int, show, as_json: bool, batch: bool) -> int:
    """Print the summary on the summary rank: the reports as JSON (a list for a batch), or
    `show(results)`; its exit code says whether any file of the whole run failed (other torchrun
    ranks exit 0, so that torchrun lets rank 0 report)."""
    from .batch import is_summary_rank

    if not is_summary_rank():
        return 0
    if as_json:
        print(json.dumps(results if batch else results[0], indent=1))
    else:
        show(results)
    return 1 if failed else 0


def _weights(path: Path | str | None, device: str):
    """The model of a weights file (default: the shipped one), loaded once per process (api.load_model)."""
    from .api import load_model

    return load_model(path, device)


# -- compress -----------------------------------------------------------------------------------
def plan_compress(inputs: list[str], output: str | None) -> tuple[list[Job], bool]:
    from .images import IMAGE_FORMATS, find_images

    return plan_jobs(inputs, output, ".vqz", find_images, f"images ({IMAGE_FORMATS})")


def _compress_one(weights, job: Job, rate: dict, force: bool, verify: bool,
                  max_pixels: int | None = MAX_PIXELS) -> dict[str, Any]:
    from .codec import compress, decompress
    from .images import decode_image
    from .metrics import image_quality

    raw = _open_job(job, force)
    image = decode_image(raw, input_name(job.src), max_pixels)
    n_raw = len(raw)
    del raw  # the input file need not stay in memory while the model runs
    result = compress(weights, image, **rate, name=input_name(job.src))
    for note in (*image.notes, *([result.note] if result.note else [])):  # on stderr, where a script's log keeps it
        console().print(f"vq: note: {input_name(job.src)}: {note}", markup=False)
    h, w = image.rgb.shape[:2]
    info: dict[str, Any] = {"input": input_name(job.src), "output": "<stdout>" if job.dst == STDIO else job.dst,
                            "input_bytes": n_raw, "output_bytes": len(result.data),
                            "ratio_raw_rgb": 3 * w * h / len(result.data), "ratio_input": n_raw / len(result.data),
                            "input_notes": list(image.notes),
                            **result.to_dict()}
    if verify:
        dec = decompress(weights, result.data, name=info["output"])
        info["verify"] = {**image_quality(image.rgb, dec.rgb),
                          "alpha_exact": None if image.alpha is None else bool((dec.alpha == image.alpha).all())}
    write_target(job.dst, result.data, force)
    return info


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def compress_table(info: dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"{info['input']} -> {info['output']}", title_justify="left", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("size", f"{info['width']}x{info['height']} {info['mode']}")
    t.add_row("bytes", f"{info['input_bytes']:,} -> {info['output_bytes']:,}")
    t.add_row("bpp", f"{info['bpp']:.4f}")
    t.add_row("ratio", f"{info['ratio_raw_rgb']:.1f}x raw RGB, {info['ratio_input']:.1f}x input file")
    if info["quality"] is None:
        t.add_row("rate", f"{info['stages']} of {info['model_stages']} stages everywhere ({info['rate']}), "
                          f"{info['entropy_model']} entropy model")
    else:
        where = "every block keeps every stage" if info["stage_map_bytes"] is None else \
            f"stage map {info['stage_map_bytes']:,} bytes"
        t.add_row("rate", f"quality {info['quality']:g} ({info['rate']}): up to {info['stages']} of "
                          f"{info['model_stages']} stages per block, {where}, {info['entropy_model']} entropy model")
    if info["flat_cells"]:
        t.add_row("flat cells", f"{info['flat_cells']:,} latent cells of one colour, painted exactly "
                                f"({info['flat_cell_bytes']:,} bytes)")
    if info.get("enhancement"):
        e = info["enhancement"]
        t.add_row("enhancement", f"layer {e['model_id']} at level {e['level']:.2f} (0 finest): {e['bytes']:,} bytes, "
                                 f"{e['bits_per_symbol']:.3f} bits/symbol over {e['symbols']:,} symbols "
                                 f"(ideal {e['cross_entropy']:.3f})")
    t.add_row("effort", f"{info['effort']} ({'greedy codes' if info['effort'] == 0 else 'codes searched'})")
    if info.get("note"):
        t.add_row("note", info["note"])
    if "verify" in info:
        v = info["verify"]
        extra = f"MS-SSIM {_fmt(v['ms_ssim'], '.4f')}" if v["ms_ssim"] is not None else f"SSIM {_fmt(v['ssim'], '.4f')}"
        t.add_row("verify", f"PSNR {_fmt(v['psnr'])} dB, {extra}"
                  + ("" if v["alpha_exact"] is None else f", alpha exact: {v['alpha_exact']}"))
    s = Table(show_edge=False)
    for col in ("stage", "coverage", "bytes", "bits/index", "entropy", "cross-entropy", "codes used"):
        s.add_column(col, justify="right")
    for st in info["stage_stats"]:
        s.add_row(str(st["stage"]), f"{st['coverage']:.0%}", f"{st['bytes']:,}", f"{st['bits_per_index']:.3f}",
                  f"{st['entropy']:.3f}", f"{st['cross_entropy']:.3f}", str(st["codes_used"]))
    return t, s


def run_compress(inputs: list[str], output: str | None, weights_path: Path | None, device: str,
                 stages: int | None, bpp: float | None, psnr: float | None, force: bool, as_json: bool,
                 verify: bool, n_jobs: int | None = None, max_pixels: int | None = MAX_PIXELS,
                 quality: float | None = None, effort: int | None = None, best_effort: bool = False,
                 verbose: bool = False) -> int:
    """Returns the exit code (0, or 1 when some file of a batch failed); n_jobs: worker processes
    (default: the available cores); max_pixels: larger images are refused (None: no limit)."""
    from .rate import check_effort, check_rate
    from .weightspath import read_config, resolve_weights

    check_max_pixels(max_pixels)
    config = read_config(resolve_weights(weights_path))  # the stage count, from the header: no model load here
    check_rate(stages, bpp, psnr, config.stages if config is not None else None, quality)
    effort = check_effort(effort)
    jobs, batch = plan_compress(inputs, output)
    if jobs[0].dst == STDIO:  # only a single job writes to stdout
        check_target(STDIO, force)
    if as_json and any(j.dst == STDIO for j in jobs):
        raise UsageError("--json cannot be used while the compressed file goes to stdout")
    rate = {"stages": stages, "bpp": bpp, "psnr": psnr, "quality": quality, "effort": effort, "best_effort": best_effort}
    out = console(stderr=any(j.dst == STDIO for j in jobs))
    make_one = functools.partial(compress_runner, weights_path, device, rate, force, verify, max_pixels)
    started = time.perf_counter()
    results, failed = run_jobs(jobs, batch, make_one, n_jobs)

    def show(results: list[dict[str, Any]]) -> None:
        done = [i for i in results if "error" not in i]
        if batch and not verbose:  # a line per file and a summary; the tables with --verbose
            for i in done:
                out.print(f"{i['input']} -> {i['output']}: {i['output_bytes']:,} bytes, {i['bpp']:.3f} bpp")
            n_in, n_out = sum(i["input_bytes"] for i in done), sum(i["output_bytes"] for i in done)
            out.print(f"{len(done)} file{'s' * (len(done) != 1)} compressed"
                      + (f", {failed} failed" if failed else "")
                      + f": {n_in:,} -> {n_out:,} bytes ({n_in / max(n_out, 1):.1f}:1) in "
                      f"{time.perf_counter() - started:.1f} s")
            return
        for info in done:
            for t in compress_table(info):
                out.print(t)

    return finish(results, failed, show, as_json, batch)


def compress_runner(weights_path: Path | None, device: str, rate: dict, force: bool, verify: bool,
                    max_pixels: int | None = MAX_PIXELS):
    """What compresses one job (picklable factory: batch workers call it once)."""
    return functools.partial(_compress_one, _weights(weights_path, device), rate=rate, force=force, verify=verify,
                             max_pixels=max_pixels)


# -- decompress ---------------------------------------------------------------------------------
def output_format(dst: str) -> str:
    """The Pillow format an output's extension names (PNG for stdout), or a UsageError."""
    suffix = ".png" if dst == STDIO else Path(dst).suffix.lower()
    fmt = OUTPUT_FORMATS.get(suffix)
    if fmt is None:
        raise UsageError(f"{dst}: unsupported output format {suffix or '(no extension)'} "
                         f"(use {', '.join(sorted(OUTPUT_FORMATS))})")
    return fmt


def encode_output(dec, dst: str) -> tuple[memoryview, str | None]:
    """The decoded image in the format its extension names (PNG for stdout); returns a note
    when the format cannot hold everything (alpha in JPEG or BMP)."""
    import io

    fmt = output_format(dst)
    im, note = dec.to_pil(), None
    opts: dict[str, Any] = {}
    if fmt in ("JPEG", "BMP") and im.mode in ("RGBA", "LA"):
        im, note = im.convert("RGB" if im.mode == "RGBA" else "L"), f"{fmt} has no alpha: alpha dropped"
    if fmt == "JPEG":
        opts = {"quality": 95}
    elif fmt == "WEBP":
        opts = {"lossless": True}  # the decoded image is the result: do not add a second loss
    elif fmt == "PNG":
        opts = {"optimize": False}
    buf = io.BytesIO()
    im.save(buf, format=fmt, **opts)
    return buf.getbuffer(), note  # no copy: a 100 MP PNG is 100+ MB


def run_decompress(inputs: list[str], output: str | None, weights_path: Path | None, device: str,
                   stages: int | None, force: bool, as_json: bool, n_jobs: int | None = None,
                   max_pixels: int | None = MAX_PIXELS) -> int:
    """Returns the exit code (0, or 1 when some file of a batch failed); n_jobs and max_pixels as
    run_compress."""
    from .rate import check_rate

    check_max_pixels(max_pixels)
    check_rate(stages, None, None)
    jobs, batch = plan_jobs(inputs, output, ".png", lambda d: sorted(d.rglob("*.vqz")), ".vqz files")
    for j in jobs:
        if not batch and j.src != STDIO and not Path(j.src).exists():
            raise VQError(f"{j.src}: no such file")  # before any complaint about the output's name
        if j.dst == STDIO and as_json:
            raise UsageError("--json cannot be used while the image goes to stdout")
        if j.dst == STDIO:
            check_target(STDIO, force)
        output_format(j.dst)
    make_one = functools.partial(decompress_runner, weights_path, device, stages, force, max_pixels)
    results, failed = run_jobs(jobs, batch, make_one, n_jobs)

    def show(results: list[dict[str, Any]]) -> None:
        if not any(j.dst == STDIO for j in jobs):
            con = console(stderr=False)
            for i in results:
                if "error" not in i:
                    con.print(f"{i['input']} -> {i['output']}: {i['width']}x{i['height']} {i['mode']}, "
                              f"{i['stages']} of {i['stages_stored']} stages", markup=False)

    return finish(results, failed, show, as_json, batch)


def decompress_runner(weights_path: Path | None, device: str, stages: int | None, force: bool,
                      max_pixels: int | None = MAX_PIXELS):
    """What decompresses one job (picklable factory). The weights load on first use, so that a
    non-vqz input fails before the model loads; without --weights, each file's model is found by
    the id in its header (every released model stays shipped)."""
    from .weights import find_weights

    def weights(model_id: str, name: str):
        return _weights(weights_path if weights_path is not None else find_weights(model_id, name), device)

    return functools.partial(decompress_one, weights, stages=stages, force=force, max_pixels=max_pixels)


def decompress_one(weights, job: Job, stages: int | None, force: bool,
                    max_pixels: int | None = MAX_PIXELS) -> dict[str, Any]:
    from . import format as vqz
    from .codec import decompress

    data = _open_job(job, force)
    name = input_name(job.src)
    header = vqz.read_header(data, name)
    check_size(header.width, header.height, name, max_pixels)  # before the model loads
    dec = decompress(weights(header.model_id, name), data, stages, name, max_pixels)
    payload, note = encode_output(dec, job.dst)
    write_target(job.dst, payload, force)
    h = dec.header
    err = console()
    if note:
        err.print(f"vq: note: {name}: {note}", markup=False)
    if dec.cut_inside:
        err.print(f"vq: note: {name}: file is cut inside the {dec.cut_inside}; decoded the {dec.stages} "
                  f"stage{'s' * (dec.stages != 1)} before it", markup=False)
    elif dec.truncated:
        err.print(f"vq: note: {name}: file is cut after stage {dec.stages} of {h.stages}; decoded those",
                  markup=False)
    return {"input": name, "output": "<stdout>" if job.dst == STDIO else job.dst, "width": h.width,
            "height": h.height, "mode": h.mode, "stages": dec.stages, "stages_stored": h.stages,
            "truncated": dec.truncated, "model_id": h.model_id, "output_bytes": len(payload), "note": note}


# -- info ---------------------------------------------------------------------------------------
def run_info(src: str, as_json: bool) -> int:
    """Header and chunk summary of a .vqz file (no torch)."""
    from . import format as vqz

    info = vqz.info(_read_input(src), input_name(src))
    if as_json:
        print(json.dumps(info, indent=1))
        return 0
    from rich.table import Table

    t = Table(title=info["file"], title_justify="left", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    rows = [("format version", info["format_version"]), ("size", f"{info['width']}x{info['height']} {info['mode']}"),
            ("bytes", f"{info['bytes']:,} ({info['bpp']:.4f} bpp)"), ("model id", info["model_id"]),
            ("latent grid", f"{info['latent_grid'][0]}x{info['latent_grid'][1]} (factor {info['factor']}, "
                            f"padding {info['padding'][0]} bottom, {info['padding'][1]} right)"),
            ("codebook", info["codebook_size"]),
            ("stages", f"{info['stages_present']} present of {info['stages_stored']} stored, "
                       f"model has {info['model_stages']}"
                       + (" (file cut short)" if info["truncated"] else "")),
            ("entropy model", info["entropy_model"])]
    if info["alpha_bytes"] is not None:
        rows.append(("alpha chunk", f"{info['alpha_bytes']:,} bytes (zlib, lossless)"))
    if info["flat_cell_bytes"] is not None:
        rows.append(("flat cells", f"{info['flat_cells']:,} cells, {info['flat_cell_bytes']:,} bytes "
                                   f"(zlib: cells of one colour, painted exactly)"))
    if info["stage_map_bytes"] is not None:
        rows.append(("stage map", f"{info['stage_map_bytes']:,} bytes (stages kept per block of latent cells)"))
    if info["enhancement"] is not None:
        e = info["enhancement"]
        rows.append(("enhancement", f"{e['bytes']:,} bytes: layer {e['model_id']} at level {e['level']:g} "
                                    f"(0 finest)"))
    for k, v in rows:
        t.add_row(k, str(v))
    s = Table(show_edge=False)
    for col in ("stage", "bytes", "bits", "bits/cell"):
        s.add_column(col, justify="right")
    for st in info["stages"]:
        s.add_row(str(st["stage"]), f"{st['bytes']:,}", f"{st['bits']:,}", f"{st['bits_per_index']:.3f}")
    con = console(stderr=False)
    con.print(t)
    con.print(s)
    return 0

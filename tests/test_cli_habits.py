"""What real users feed vq and expect of it, run as they would run it (the CLI, exit codes, stderr)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image
from PIL import Image
from typer.testing import CliRunner

from vqcli.cli import app

runner = CliRunner()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "photo.png"
    Image.fromarray(make_image(48, 64, 2)).save(p)
    return p


@pytest.mark.parametrize("target", [["--psnr", "200"], ["--bpp", "0.0001"]])
def test_an_unreachable_rate_target_fails_unless_best_effort(photo, tiny_weights, target):
    out = photo.with_suffix(".vqz")
    r = runner.invoke(app, ["compress", str(photo), "--weights", str(tiny_weights), *target])
    assert r.exit_code == 1 and not out.exists()
    assert r.stderr.count("\n") == 1 and str(photo) in r.stderr and "--best-effort" in r.stderr
    r = runner.invoke(app, ["compress", str(photo), "--weights", str(tiny_weights), *target, "--best-effort"])
    assert r.exit_code == 0 and out.exists()
    assert "vq: note:" in r.stderr and "used quality" in r.stderr


def test_output_directories_are_made_as_mkdir_p_would(photo, tiny_weights, tmp_path):
    other = tmp_path / "other.png"
    Image.fromarray(make_image(40, 56, 3)).save(other)
    w = ["--weights", str(tiny_weights)]
    r = runner.invoke(app, ["compress", str(photo), str(other), "-o", str(tmp_path / "out" / "deep"), *w])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out" / "deep").iterdir()) == ["other.vqz", "photo.vqz"]
    r = runner.invoke(app, ["compress", str(photo), "-o", f"{tmp_path / 'single'}/", *w])  # a trailing / is a folder
    assert r.exit_code == 0, r.output
    assert (tmp_path / "single" / "photo.vqz").is_file()
    r = runner.invoke(app, ["decompress", str(tmp_path / "out" / "deep"), "-o", str(tmp_path / "back") + "/", *w])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "back" / "photo.png").is_file()


def test_an_output_path_through_a_file_is_one_line(photo, tiny_weights, tmp_path):
    w = ["--weights", str(tiny_weights)]
    r = runner.invoke(app, ["compress", str(photo), str(photo), "-o", str(photo), *w])
    assert r.exit_code == 2 and "is a file, not a directory" in r.stderr
    r = runner.invoke(app, ["compress", str(photo), "-o", str(photo / "x.vqz"), *w])
    assert r.exit_code == 1 and f"{photo} is not a directory" in r.stderr and r.stderr.count("\n") == 1


def test_dash_is_stdout_for_reports_and_figures(photo, tiny_weights, image_dir, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)  # a file literally named '-' would land here
    w = ["--weights", str(tiny_weights)]
    r = runner.invoke(app, ["eval", str(image_dir), "--codecs", "", "--limit", "1", "--json", "-", *w])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 1
    r = runner.invoke(app, ["compare", str(photo), "--codecs", "jpeg", "-o", "-", *w])
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes.startswith(b"\x89PNG")
    r = runner.invoke(app, ["stats", "codebook", "--plot", "-", *w])
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes.startswith(b"\x89PNG")
    r = runner.invoke(app, ["stats", "codebook", "--plot", "-", "--json", *w])
    assert r.exit_code == 2 and "stdout" in r.stderr
    assert not (tmp_path / "-").exists()


def test_eval_and_stats_do_not_replace_files_without_force(tiny_weights, image_dir, tmp_path):
    report = tmp_path / "eval.json"
    report.write_text("last week's figures")
    r = runner.invoke(app, ["eval", str(image_dir), "--codecs", "", "--limit", "1", "--json", str(report),
                            "--weights", str(tiny_weights)])
    assert r.exit_code == 1 and "already exists" in r.stderr and report.read_text() == "last week's figures"


@pytest.mark.parametrize("spec, fmt", [("DISPLAY_P3", "PNG"), ("ADOBE_RGB", "JPEG")])
def test_tagged_photos_are_converted_to_srgb_as_a_viewer_shows_them(spec, fmt, tiny_weights, tmp_path):
    import io

    import icc
    import numpy as np
    from PIL import ImageCms

    from vqcli.images import decode_image

    rgb = make_image(40, 48, 7)
    tagged = Image.fromarray(rgb)
    buf = io.BytesIO()
    tagged.save(buf, fmt, icc_profile=icc.profile(getattr(icc, spec)), **({"quality": 100} if fmt == "JPEG" else {}))
    loaded = decode_image(buf.getvalue(), "p.img")
    with Image.open(io.BytesIO(buf.getvalue())) as im:  # what a colour-managed viewer shows
        shown = np.asarray(ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"])),
                                                     ImageCms.createProfile("sRGB"), outputMode="RGB"))
        raw = np.asarray(im.convert("RGB"))
    assert np.array_equal(loaded.rgb, shown)
    assert np.abs(shown.astype(int) - raw).max() > 10  # the profile matters for this image
    assert loaded.notes == (f"colours converted from {getattr(icc, spec)[0]} to sRGB",)
    src = tmp_path / f"p.{fmt.lower()}"
    src.write_bytes(buf.getvalue())
    r = runner.invoke(app, ["compress", str(src), "--weights", str(tiny_weights)])
    assert r.exit_code == 0 and "converted from" in r.stderr and "to sRGB" in r.stderr


def test_srgb_grey_and_alpha_images_with_profiles(tmp_path):
    import io

    import icc
    import numpy as np
    from PIL import ImageCms

    from vqcli.images import decode_image

    rgb = make_image(16, 16, 8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    srgb = decode_image(buf.getvalue(), "s.png")
    assert np.array_equal(srgb.rgb, rgb) and srgb.notes == ()
    rgba = Image.fromarray(np.dstack([rgb, np.arange(256, dtype=np.uint8).reshape(16, 16)]), "RGBA")
    buf = io.BytesIO()
    rgba.save(buf, "PNG", icc_profile=icc.profile(icc.DISPLAY_P3))
    with_alpha = decode_image(buf.getvalue(), "a.png")
    assert np.array_equal(with_alpha.alpha, np.asarray(rgba)[..., 3]) and "Display P3" in with_alpha.notes[0]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", icc_profile=b"garbage, not a profile")
    broken = decode_image(buf.getvalue(), "b.png")
    assert np.array_equal(broken.rgb, rgb) and "unreadable" in broken.notes[0]


def test_animated_images_say_only_the_first_frame_is_coded(tiny_weights, tmp_path):
    frames = [Image.fromarray(make_image(24, 24, i)) for i in range(3)]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:])
    r = runner.invoke(app, ["compress", str(src), "--weights", str(tiny_weights)])
    assert r.exit_code == 0 and "animated (3 frames): coded the first frame only" in r.stderr


def test_progressive_decoding_of_a_folder_is_at_most_n_stages(image_dir, tiny_weights, tmp_path):
    w = ["--weights", str(tiny_weights)]
    files = tmp_path / "vqz"
    files.mkdir()
    for i, n in enumerate((1, 3)):  # files holding different numbers of stages, as stage maps make them
        r = runner.invoke(app, ["compress", str(image_dir / f"img{i}.png"), "-o", str(files / f"f{i}.vqz"),
                                "--stages", str(n), *w])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["decompress", str(files), "-o", str(tmp_path / "back"), "--stages", "2", "--json", *w])
    assert r.exit_code == 0, r.output
    import json

    assert sorted(e["stages"] for e in json.loads(r.stdout)) == [1, 2]


def test_a_file_cut_inside_a_later_stage_still_gives_the_stages_before_it(image_dir, tiny_weights, tmp_path):
    from vqcli import format as vqz

    src = tmp_path / "a.vqz"
    r = runner.invoke(app, ["compress", str(image_dir / "img0.png"), "-o", str(src), "--stages", "3",
                            "--weights", str(tiny_weights)])
    assert r.exit_code == 0
    data = src.read_bytes()
    sizes = vqz.read(data).chunk_sizes
    cut = tmp_path / "cut.vqz"
    cut.write_bytes(data[:vqz.HEADER_SIZE + sizes[0][1] + sizes[1][1] + 7])  # 7 bytes into stage 3's chunk
    r = runner.invoke(app, ["decompress", str(cut), "--stages", "1", "--weights", str(tiny_weights)])
    assert r.exit_code == 0, r.output
    assert "cut inside the stage 3 chunk; decoded the 1 stage before it" in r.stderr
    r = runner.invoke(app, ["decompress", str(cut), "-f", "--weights", str(tiny_weights)])  # all stages: the cut is an error
    assert r.exit_code == 1 and "truncated at byte" in r.stderr


def _vq(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vqcli", *args], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "COLUMNS": "200"})


def test_help_reads_as_a_person_expects():
    for cmd in ("compress", "decompress", "train", "eval", "compare"):
        r = _vq(cmd, "--help")
        assert r.returncode == 0, r.stderr
        assert not any(t in r.stdout for t in ("<bool>", "<float>", "<int", "<list", "<str>", "<path>")), r.stdout
    text = _vq("compress", "--help").stdout
    assert "--bpp  " in text and " BPP " in text and " DB " in text and "-w" in text and "IMAGE" in text
    assert "fits BPP bits per pixel" in text and "reaching DB decibels" in text


@pytest.mark.parametrize("args, says", [(["compress", "x.png", "-e", "3"], "'--effort' / '-e'"),
                                        (["compress", "x.png", "-q", "abc"], "'--quality' / '-q'"),
                                        (["frobnicate"], "No such command")])
def test_a_bad_option_value_is_one_line_with_exit_2(args, says):
    r = _vq(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("vq: error: ") and says in r.stderr


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from vqcli.errors import VQError
    from vqcli.fileio import write_atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(VQError, match=r"out\.vqz: cannot write \(No space left on device\)"):
        write_atomic(tmp_path / "out.vqz", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_decompress_messages_name_the_real_problem(photo, tiny_weights, tmp_path):
    w = ["--weights", str(tiny_weights)]
    r = runner.invoke(app, ["decompress", str(tmp_path / "missing.vqz"), "-o", str(tmp_path / "x.xyz"), *w])
    assert r.exit_code == 1 and "missing.vqz: no such file" in r.stderr
    assert runner.invoke(app, ["compress", str(photo), *w]).exit_code == 0
    adir = tmp_path / "adir"
    adir.mkdir()
    r = runner.invoke(app, ["decompress", str(photo.with_suffix(".vqz")), "-o", str(adir), *w])
    assert r.exit_code == 0 and (adir / "photo.png").is_file()


def test_a_folder_prints_a_line_per_file_and_a_summary(image_dir, tiny_weights, tmp_path):
    r = runner.invoke(app, ["compress", str(image_dir), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 9 and all(" bytes, " in ln and ln.endswith(" bpp") for ln in lines[:8])
    assert lines[-1].startswith("8 files compressed: ") and ":1) in " in lines[-1]
    r = runner.invoke(app, ["compress", str(image_dir), "-o", str(tmp_path / "v"), "-v", "--weights", str(tiny_weights)])
    assert r.exit_code == 0 and r.stdout.count("bits/index") == 8  # a stage table per file

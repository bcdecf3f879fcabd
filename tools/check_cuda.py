"""Every CUDA check in one go (`make check-cuda`), with a short report.

1. The CUDA tests (tests/test_cuda.py and the CUDA test of test_codec.py): CUDA-written files
   decoding to the same indices on the CPU, `--device cuda` in the CLI, bf16 training steps,
   tiling's out-of-memory fallback, NCCL DDP where there are two GPUs.
2. The shipped default model on a sample photo: compressed on CUDA, decompressed on CUDA and on
   the CPU (the same indices; pixels within one level), the greedy indices of both devices
   compared, and the time of each.

Without CUDA it says so, runs the CPU halves (the tests skip, the sample photo is coded on the
CPU) and exits 0. On a lent machine the repository needs beside it only constriction and
pytorch-msssim (carried as wheels: see the README's development section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TESTS = ["tests/test_cuda.py", "tests/test_codec.py::test_cuda_written_file_decodes_identically_on_cpu"]


def run_tests(log: Path) -> dict:
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", *TESTS],
                       capture_output=True, text=True, cwd=ROOT)
    log.write_text(r.stdout + r.stderr)
    summary = next((ln for ln in reversed(r.stdout.splitlines()) if " in " in ln and ("passed" in ln or "skipped" in ln
                                                                                     or "failed" in ln)), "")
    return {"ok": r.returncode == 0, "summary": summary.strip(" ="), "seconds": round(time.time() - t, 1)}


def sample_photo(cuda: bool) -> dict:
    import numpy as np

    from vqcli.codec import compress, decompress, encode_indices
    from vqcli.images import load_image
    from vqcli.weights import load_weights

    image = load_image(ROOT / "docs/sample/ladybird.jpg")
    devices = ["cuda", "cpu"] if cuda else ["cpu"]
    w = {d: load_weights(None, d) for d in devices}
    out: dict = {"model_id": w["cpu"].model_id, "size": list(image.rgb.shape[:2])}
    t = time.time()
    res = compress(w[devices[0]], image)
    out[f"compress_{devices[0]}_s"], out["bytes"] = round(time.time() - t, 3), len(res.data)
    decoded = {}
    for d in devices:
        t = time.time()
        decoded[d] = decompress(w[d], res.data)
        out[f"decompress_{d}_s"] = round(time.time() - t, 3)
    ref = decoded["cpu"]
    out["ok"] = bool(ref.rgb.shape == image.rgb.shape)
    if cuda:
        same = np.array_equal(decoded["cuda"].indices, ref.indices)
        diff = int(np.abs(decoded["cuda"].rgb.astype(int) - ref.rgb.astype(int)).max())
        greedy = {d: encode_indices(w[d], image.rgb) for d in devices}
        out.update(indices_equal=same, max_pixel_diff=diff,
                   greedy_agreement=float((greedy["cuda"] == greedy["cpu"]).mean()))
        out["ok"] = out["ok"] and same and diff <= 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/check-cuda"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available()
    report: dict = {"torch": torch.__version__, "cuda": cuda,
                    "device": torch.cuda.get_device_name() if cuda else None,
                    "gpus": torch.cuda.device_count()}
    if not cuda:
        print("check-cuda: no CUDA device here; running the CPU halves only", flush=True)
    report["tests"] = run_tests(a.out / "pytest.log")
    print(f"check-cuda: tests: {report['tests']['summary']}", flush=True)
    try:
        report["sample"] = sample_photo(cuda)
    except Exception as e:  # a report, not a traceback: the check goes on to write it
        report["sample"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(f"check-cuda: sample photo: {json.dumps(report['sample'])}", flush=True)
    ok = report["tests"]["ok"] and report["sample"]["ok"]
    report["ok"] = ok
    (a.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"check-cuda: {'all passed' if ok else 'FAILED'}{'' if cuda else ' (no CUDA: CPU halves only)'}; "
          f"report in {a.out}/report.json", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

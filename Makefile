# The single truth of set-up: `make demo` (install + run on the shipped weights), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch: on this project's machines `pip install torch==2.13.0` takes a local CPU build.
# Elsewhere, to avoid a multi-GB CUDA download, point TORCH_PIP at PyTorch's CPU wheel index, e.g.
#   make install TORCH_PIP="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP ?= torch==2.13.0
VAL    ?= ../shared/data/val
OUT    ?= out
# make fuzz: .vqz cases, image-reader cases and the seed of tools/fuzz.py
CASES  ?= 100000
IMAGES ?= 10000
SEED   ?= 0

# The GPU burst: RUNPY=python3 on a lent machine, whose python already holds torch (no venv there).
RUNPY  ?= $(BIN)/python
GPU_DATA ?= ../shared/data/permissive ../shared/data/train/debian_wallpapers
GPU_SECONDS ?= 380
# The next burst continues the shipped hifi model (the default grown to the hifi preset and trained
# 8,000 CPU steps); from scratch, 4,153 steps of 256 crops reached only 25.5 dB on val (weights/README.md).
GPU_INIT ?= --init weights/hifi.safetensors
GPU_BATCH ?= 64
GPU_LR ?= 3e-4
NEEDS_VENV := $(if $(filter $(BIN)/python,$(RUNPY)),install)

.PHONY: install test demo bench lint clean fuzz bench-speed check-cuda gpu-cache train-gpu train-gpu-enhance

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest

demo: install
	@mkdir -p $(OUT)
	$(BIN)/vq compress docs/sample/ladybird.jpg -o $(OUT)/ladybird.vqz -f --verify
	$(BIN)/vq decompress $(OUT)/ladybird.vqz -o $(OUT)/ladybird.png -f
	$(BIN)/vq info $(OUT)/ladybird.vqz
	$(BIN)/vq stats codebook

bench: install
	@mkdir -p $(OUT)
	$(BIN)/vq eval $(VAL) --plot $(OUT)/rd.png --json $(OUT)/eval.json

# Mutated .vqz files and images against the reader: a report and a summary line, exit 1 on any
# crash, hang, memory blowup, output left behind or stray stderr (a small run is part of `make test`).
fuzz: install
	OMP_NUM_THREADS=1 $(BIN)/python tools/fuzz.py --cases $(CASES) --images $(IMAGES) --seed $(SEED)

bench-speed: install
	$(BIN)/python tools/bench_speed.py --val $(VAL) --out $(OUT)/bench-speed --vq-quality 45

# Every CUDA test and check, with a report under $(OUT)/check-cuda (the CPU halves without CUDA).
check-cuda: $(NEEDS_VENV)
	$(RUNPY) tools/check_cuda.py --out $(OUT)/check-cuda

# The permissive training folders packed small (.gpu/data, ~36 MB) to travel with a GPU burst.
gpu-cache: install
	$(BIN)/python tools/make_gpu_cache.py $(GPU_DATA) --out .gpu/data

# Train the hifi preset for GPU_SECONDS on CUDA from .gpu/data; release in parts under $(OUT)/gpu.
train-gpu: $(NEEDS_VENV)
	$(RUNPY) tools/train_gpu.py --data .gpu/data --out $(OUT)/gpu --seconds $(GPU_SECONDS) $(GPU_INIT) \
		--batch-size $(GPU_BATCH) --lr $(GPU_LR)

# Continue the shipped enhancement layer for GPU_SECONDS on CUDA from .gpu/data (crops and the
# base's reconstructions are made on the GPU at the start), then tune its synthesis on the symbols its
# encoder sends for a minute (tools/tune_synthesis.py): enhance_tuned.safetensors under $(OUT)/gpu is the one to ship.
train-gpu-enhance: $(NEEDS_VENV)
	@mkdir -p $(OUT)/gpu
	$(RUNPY) tools/train_enhance.py --data .gpu/data --device cuda --init weights/enhance/default.safetensors \
		--coder-contexts --minutes $$(( $(GPU_SECONDS) / 60 )) --batch 32 --ckpt $(OUT)/gpu/enhance.ckpt \
		--trained-on "permissive/ + train/debian_wallpapers (make gpu-cache)" --out $(OUT)/gpu/enhance.safetensors
	$(RUNPY) tools/tune_synthesis.py --data .gpu/data --device cuda --init $(OUT)/gpu/enhance.safetensors \
		--minutes 1 --batch 32 --out $(OUT)/gpu/enhance_tuned.safetensors

lint: install
	$(BIN)/python -m ruff check vqcli tests tools

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache

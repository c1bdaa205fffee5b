# One command each, on a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data/mir1k

.PHONY: venv demo test bench train-default train-paper clean

venv: $(STAMP)

# The environment: pinned dependencies (CPU TensorFlow) from the lock file, then this package.
$(STAMP): requirements-lock.txt setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## Separate the bundled demo clip with the shipped model into separated/falcon69/.
demo: venv
	$(BIN)/keras-svs separate data/demo/falcon69.flac -o separated --overwrite

## The test suite (core tests synthesise their audio; real-data tests skip without ../shared).
test: venv
	$(BIN)/python -m pytest -q

## Speed benchmarks: they print numbers (issue 5). Open-Unmix is timed too where the
## [bench] extra is installed (`$(BIN)/python -m pip install -e .[bench]`), else skipped.
bench: venv
	$(BIN)/python benchmarks/separate_speed.py
	$(BIN)/python benchmarks/long_file.py

## Regenerate the shipped model from MIR-1K (see the model card in keras_svs/assets/): one
## `keras-svs train` run on all 175 clips of the two training singers, from scratch: 1
## autoencoder epoch, then 47 fine-tuning epochs of the magnitude-weighted cross-entropy,
## batch 32, Adam 1.5e-3 with cosine decay, keeping the mean of the last 3 epochs' weights;
## the NumPy loader, as in the shipped run (the same batches for the same seed). The shipped
## file was made on a lent H200 with KERAS_BACKEND=jax (about 9 min); on 2 CPU cores it
## takes about 19 hours, or at least 3 hours on one with AVX-512 BF16 (BENCHMARKS.md).
train-default: venv
	$(BIN)/keras-svs train --data $(DATA) --preset unet --train-split train+valid \
	  --pretrain-epochs 1 --epochs 47 --steps-per-epoch 100 --batch-size 32 \
	  --learning-rate 1.5e-3 --cosine --precision mixed_bfloat16 --pitch 0.75 --loss weighted \
	  --average-last 3 --gnsdr-clips 0 --seed 0 --loader numpy --workers 3 -o runs/default
	$(BIN)/keras-svs shrink runs/default/model.keras keras_svs/assets/default.keras

## The faithful `paper` preset (Lin et al. 2018: 22.05 kHz, 9 x 2049 patches, 19,489,049
## parameters) on MUSDB18-7 train with the paper's Adam 1e-4 and batch 107, scaled to a
## 2-core CPU: 4 x 50 autoencoder steps, then 8 x 50 fine-tuning steps (the paper: 300 + 300
## epochs). 32 minutes on a 2-core AVX-512 CPU on 2026-12-01 (BENCHMARKS.md, "Issue 21").
MUSDB ?= ../shared/data/musdb7
train-paper: venv
	$(BIN)/keras-svs train --data $(MUSDB) --preset paper \
	  --pretrain-epochs 4 --epochs 8 --steps-per-epoch 50 --batch-size 107 --learning-rate 1e-4 \
	  --precision float32 --seed 0 --gnsdr-clips 3 -o runs/paper_musdb7

clean:
	rm -rf $(VENV) separated runs .pytest_cache

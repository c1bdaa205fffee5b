# One command each, on a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data/mir1k

.PHONY: venv demo test bench train-default clean

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

## Regenerate the shipped model from MIR-1K (see the model card in keras_svs/assets/):
## stage 1 (from scratch: autoencoder epoch, 17 fine-tuning epochs), stage 2 (warm start from
## stage 1: 20 more epochs, a new cosine from 5e-4), stage 3 (18 epochs on train + valid, a
## cosine from 3e-4), stage 4 (9 epochs on train + valid with the magnitude-weighted loss, a
## cosine from 3e-4), stage 5 (5 epochs of that loss at a constant 1e-4, keeping the mean of the
## last 3 epochs' weights). About 75 + 90 + 85 + 45 + 25 min on 2 CPU cores.
train-default: venv
	$(BIN)/keras-svs train --data $(DATA) --preset unet --epochs 17 --pretrain-epochs 1 \
	  --steps-per-epoch 100 --cosine --pitch 0.5 --precision auto --seed 0 -o runs/default
	$(BIN)/keras-svs train --data $(DATA) --preset unet --init runs/default/model.keras \
	  --pretrain-epochs 0 --epochs 20 --steps-per-epoch 100 --learning-rate 5e-4 --cosine \
	  --pitch 0.5 --precision float32 --seed 1 --gnsdr-every 2 -o runs/default-warm
	$(BIN)/keras-svs train --data $(DATA) --preset unet --init runs/default-warm/model.keras \
	  --pretrain-epochs 0 --epochs 18 --steps-per-epoch 100 --learning-rate 3e-4 --cosine \
	  --pitch 0.75 --precision float32 --seed 2 --train-split train+valid --gnsdr-clips 0 \
	  -o runs/default-all
	$(BIN)/keras-svs train --data $(DATA) --preset unet --init runs/default-all/model.keras \
	  --pretrain-epochs 0 --epochs 9 --steps-per-epoch 100 --learning-rate 3e-4 --cosine \
	  --pitch 0.75 --precision float32 --seed 4 --train-split train+valid --gnsdr-clips 0 \
	  --loss weighted -o runs/default-weighted
	$(BIN)/keras-svs train --data $(DATA) --preset unet --init runs/default-weighted/model.keras \
	  --pretrain-epochs 0 --epochs 5 --steps-per-epoch 100 --learning-rate 1e-4 \
	  --pitch 0.75 --precision float32 --seed 6 --train-split train+valid --gnsdr-clips 0 \
	  --loss weighted --average-last 3 -o runs/default-swa
	$(BIN)/keras-svs shrink runs/default-swa/model.keras keras_svs/assets/default.keras

clean:
	rm -rf $(VENV) separated runs .pytest_cache

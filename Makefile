# Two commands: `make demo` and `make test`. Both set up everything first.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
UV_VER  := 0.13.9
UV      := $(PY) -m uv
# CPU torch: from the local wheel directory when PIP_FIND_LINKS names one, else PyTorch's CPU index.
TORCH_SRC := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu)
DATA    := data/evals_prompts.parquet data/adult.parquet
WORDNET := data/wordnet_glosses.parquet

.PHONY: setup data services demo demo-full test bench bench-demo bench-kmq bench-quad bench-equity bench-valuation bench-cache bench-scale bench-knn-index bench-tmc lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet "uv==$(UV_VER)"
	@test -x $(VPY) || $(UV) venv --quiet --python $(PY) $(VENV)
	# --compile-bytecode: every Ray worker imports torch + sentence-transformers; without .pyc files
	# (and with PYTHONDONTWRITEBYTECODE set) each one recompiles them, ~10 s per actor start
	$(UV) pip install --quiet --compile-bytecode --python $(VPY) $(TORCH_SRC) -r requirements.lock
	$(UV) pip install --quiet --python $(VPY) --no-deps -e .
	@touch $@

data: $(DATA)

data/evals_prompts.parquet: | $(VENV)/.installed
	$(VPY) infra/data/fetch_evals.py --out $@

# the script as a prerequisite: after it changes, it runs again (it refetches only what is stale)
data/adult.parquet: infra/data/fetch_fairness.py | $(VENV)/.installed
	$(VPY) infra/data/fetch_fairness.py --out data

# The quickstart: static-minilm vectors (distilled once from the packaged MiniLM), ~1 min on 2 cores.
demo: setup data
	HF_HUB_OFFLINE=1 $(VENV)/bin/curate build examples/quickstart.yaml
	HF_HUB_OFFLINE=1 $(VENV)/bin/curate report out/instruction-mix-quick --html out/instruction-mix-quick.html

# The same job on full MiniLM vectors (~15 min on 2 cores: 55k prompts through the transformer).
demo-full: setup data
	HF_HUB_OFFLINE=1 $(VENV)/bin/curate build examples/instructions.yaml

# Servers the tests start on loopback (and stop): Debian's PostgreSQL; and Debian's Chromium, which
# opens the HTML report headless (tests/flows/test_report_page.py). Installed once (needs root).
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql)
	@test -x /usr/bin/chromium || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

test: setup data services
	$(VPY) -m ruff check curation connectors flows tests infra
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(VPY) -m pytest

bench: setup data
	HF_HUB_OFFLINE=1 $(VPY) bench/embed.py

# Time to a first result: the quickstart cold and warm, against MiniLM's throughput (bench/results/demo.md)
bench-demo: setup data
	HF_HUB_OFFLINE=1 $(VPY) bench/demo.py

bench-kmq: setup data
	HF_HUB_OFFLINE=1 $(VPY) bench/kmq.py

# WordNet glosses come from the Debian package wordnet-base (apt-get; needs root)
$(WORDNET): | $(VENV)/.installed
	$(VPY) infra/data/fetch_wordnet.py --install --out $(WORDNET)

bench-quad: setup $(WORDNET)
	HF_HUB_OFFLINE=1 $(VPY) bench/quad.py

bench-equity: setup data $(WORDNET)
	$(VPY) bench/equity.py
	HF_HUB_OFFLINE=1 $(VPY) bench/equity.py --datasets wordnet --group-features 0 --out bench/results/equity_text.md

# Embedding-cache lookup against cache size, indexed vs the old read-every-part (bench/results/cache.md)
bench-cache: setup data
	HF_HUB_OFFLINE=1 $(VPY) bench/cache.py

# Stages against raw components at 100k and 1M, fixed costs, KNN-Shapley at 1M (bench/results/scale.md)
bench-scale: setup
	HF_HUB_OFFLINE=1 $(VPY) bench/scale.py

# Truncated KNN-Shapley's exact shard search against a faiss IVF index (bench/results/knn_index.md)
bench-knn-index: setup
	HF_HUB_OFFLINE=1 $(VPY) bench/knn_index.py

# pyDVL only in its own environment (.venv-bench); it pins numpy<2, overridden with ours
BENCH_VPY := .venv-bench/bin/python
.venv-bench/.installed: requirements.lock pyproject.toml
	@test -x $(BENCH_VPY) || $(UV) venv --quiet --python $(PY) .venv-bench
	grep '^numpy==' requirements.lock > /tmp/curation-bench-override.txt
	$(UV) pip install --quiet --python $(BENCH_VPY) $(TORCH_SRC) -r requirements.lock pydvl==0.10.0 matplotlib \
		--override /tmp/curation-bench-override.txt
	$(UV) pip install --quiet --python $(BENCH_VPY) --no-deps -e .
	@touch $@

# TMC-Shapley, Data Banzhaf and Beta(16,1)-Shapley at n = 500 until their standard-error rule stops them
# (bench/results/tmc_convergence.md, bench/results/banzhaf_convergence.md, bench/results/beta_convergence.md)
bench-tmc: .venv-bench/.installed
	$(BENCH_VPY) infra/data/fetch_valuation.py
	$(BENCH_VPY) bench/tmc_convergence.py
	$(BENCH_VPY) bench/tmc_convergence.py --methods banzhaf
	$(BENCH_VPY) bench/tmc_convergence.py --methods beta --stderr-tol 0.01 0.005

bench-valuation: .venv-bench/.installed
	$(BENCH_VPY) infra/data/fetch_valuation.py
	$(BENCH_VPY) bench/valuation.py

# Re-pin every dependency (run after editing pyproject.toml's dependencies).
lock:
	echo "torch==2.13.0+cpu" > /tmp/curation-constraints.txt
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 $(TORCH_SRC) \
		-c /tmp/curation-constraints.txt -o requirements.lock

clean:
	rm -rf $(VENV) out .pytest_cache

# The README's commands. Every target sets up .venv idempotently first (and rebuilds the compiled
# kernels when a source under csrc/ changed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.i2f_fast-installed
OUT    ?= i2f-results
CSRC   := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh')
# The CPU-only torch check (CI): a second venv with torch 2.13.0, a regular (non-editable) install,
# the C++ tests through CMake/ctest, and the kernel tests run against the installed package.
CPU_VENV  := .venv-cpu
CPU_TORCH := torch==2.13.0
export MAX_JOBS ?= 2

.PHONY: setup demo test bench gpu-suite check-cpu-torch clean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements-dev.txt setup.py pyproject.toml $(CSRC)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/i2f-fast demo --out $(OUT)

test: setup
	$(PY) -m pytest python_tests -q

# pytest-benchmark runs every comparison (candidate and baseline in one group, the interleaved ratio in
# extra_info) and saves the run; run.py prints the ratio table from it. Compare with a saved run:
# $(PY) -m pytest benchmarks --benchmark-only --benchmark-compare (see benchmarks/README.md).
BENCH_JSON ?= benchmarks/results/latest.json
bench: setup
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-json=$(BENCH_JSON) -p no:cacheprovider -q $(BENCH_ARGS)
	$(PY) benchmarks/run.py --table $(BENCH_JSON)

# On a machine with one CUDA card: build with CUDA, run the tests on the GPU and every benchmark,
# one table of ratios with the card's name, under 10 minutes (benchmarks/gpu_suite.py). Uses
# .venv when it exists, else $(PYTHON) (an environment that already has torch with CUDA).
SUITE_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-suite:
	$(SUITE_PY) benchmarks/gpu_suite.py $(SUITE_ARGS)

check-cpu-torch:
	$(PYTHON) -m venv $(CPU_VENV)
	sed 's/^torch==.*/$(CPU_TORCH)/' requirements-dev.txt > $(CPU_VENV)/requirements.txt
	$(CPU_VENV)/bin/pip install --quiet --upgrade pip
	$(CPU_VENV)/bin/pip install --quiet -r $(CPU_VENV)/requirements.txt
	$(CPU_VENV)/bin/pip install --quiet --no-build-isolation --no-deps .
	cd /tmp && $(CURDIR)/$(CPU_VENV)/bin/i2f-fast env
	cd /tmp && $(CURDIR)/$(CPU_VENV)/bin/python -c "import i2f_fast, i2f_fast._C; assert i2f_fast.backend.resolve('cpu') == 'native'"
	cd /tmp && $(CURDIR)/$(CPU_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		$(CURDIR)/python_tests/test_cg_step.py $(CURDIR)/python_tests/test_backend.py $(CURDIR)/python_tests/test_solvers.py \
		$(CURDIR)/python_tests/test_engine_kernels.py $(CURDIR)/python_tests/test_fused_ops.py
	$(CPU_VENV)/bin/cmake -S . -B build/cmake-cpu -G Ninja -DCMAKE_MAKE_PROGRAM=$(CURDIR)/$(CPU_VENV)/bin/ninja \
		-DCMAKE_PREFIX_PATH="$$($(CPU_VENV)/bin/python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
	$(CPU_VENV)/bin/cmake --build build/cmake-cpu -j $(MAX_JOBS)
	$(CPU_VENV)/bin/ctest --test-dir build/cmake-cpu --output-on-failure

clean:
	rm -rf $(VENV) $(CPU_VENV) build *.egg-info $(OUT) i2f_fast/*.so i2f_fast/_build_config.py

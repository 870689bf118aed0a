# The two commands of the README: `make book` and `make test`. Both set up their own virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Which jax build `make venv` installs: cpu (the default), or cuda12 / cuda13 for an NVIDIA GPU (`make venv JAX=cuda12`:
# jax[cuda12] with NVIDIA's CUDA wheels, within pyproject.toml's jax range).
JAX ?= cpu
ifeq ($(filter $(JAX),cpu cuda12 cuda13),)
$(error JAX must be cpu, cuda12 or cuda13 (e.g. make venv JAX=cuda12), got '$(JAX)')
endif
STAMP := $(VENV)/.installed-$(JAX)
ENV := FQL_SCALE=$${FQL_SCALE:-ci} MUJOCO_GL=$${MUJOCO_GL:-osmesa} PYOPENGL_PLATFORM=$${PYOPENGL_PLATFORM:-osmesa} \
	XLA_PYTHON_CLIENT_PREALLOCATE=$${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
RUN := MPLBACKEND=Agg $(ENV)
# A JAX compilation cache in a new temporary folder for one command, deleted when it ends, also on Ctrl-C or a kill
# (a cache entry read back is XLA's own executable; only programs that took over 0.1 s to compile are stored).
CACHE := cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && trap 'exit 130' INT && trap 'exit 143' TERM && \
	JAX_COMPILATION_CACHE_DIR=$$cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.1
# GNU make 4 prints each side-by-side run's report whole; an older make (macOS's 3.81) interleaves their lines.
SYNC := $(if $(filter output-sync,$(.FEATURES)),--output-sync=target)

.PHONY: venv book test test-lib test-book clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[book,ogbench,d4rl,dev]" $(if $(filter cuda%,$(JAX)),"jax[$(JAX)]")
	rm -f $(VENV)/.installed-*
	touch $@

# Every test: the library's unit tests and every chapter under nbval, as two pytest runs side by side (each is mostly
# one busy core: compiling, stepping MuJoCo, a kernel's Python), each printing its report when it ends. They share
# one fresh JAX compilation cache (CACHE), removed at the end: many tests compile the same programs, and an executable
# read back from it is the one XLA compiled, so results are unchanged.
test: $(STAMP)
	@echo "make test: tests/ (with chapters 9 and 10) and the other chapters run side by side; each prints its report when it ends"
	@$(CACHE) $(MAKE) --no-print-directory -j2 $(SYNC) test-lib test-book

# The two halves end at about the same time when the environment chapters (OGBench, D4RL) run with the unit tests.
NBVAL := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg
ENV_CHAPTERS := book/09_ogbench.ipynb book/10_d4rl.ipynb

test-lib: $(STAMP)
	$(RUN) $(BIN)/pytest tests $(ENV_CHAPTERS) $(NBVAL)

test-book: $(STAMP)
	$(RUN) $(BIN)/pytest book $(addprefix --ignore=,$(ENV_CHAPTERS)) $(NBVAL) -o cache_dir=.pytest_cache/book

# The HTML book, every chapter executed; warnings are errors.
book: $(STAMP)
	$(CACHE) $(ENV) $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "open _build/html/index.html"

clean:
	rm -rf _build

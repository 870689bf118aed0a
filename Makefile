# The two commands of the README: `make book` and `make test`. Both set up their own virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ENV := FQL_SCALE=$${FQL_SCALE:-ci} MUJOCO_GL=$${MUJOCO_GL:-osmesa} PYOPENGL_PLATFORM=$${PYOPENGL_PLATFORM:-osmesa}
RUN := MPLBACKEND=Agg $(ENV)

.PHONY: venv book test test-lib test-book clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[book,ogbench,d4rl,dev]"
	touch $@

# Every test: the library's unit tests and every chapter under nbval, in one pytest run.
test: $(STAMP)
	$(RUN) $(BIN)/pytest tests book --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

test-lib: $(STAMP)
	$(RUN) $(BIN)/pytest tests

test-book: $(STAMP)
	$(RUN) $(BIN)/pytest book --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

# The HTML book, every chapter executed; warnings are errors.
book: $(STAMP)
	$(ENV) $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "open _build/html/index.html"

clean:
	rm -rf _build

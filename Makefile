# edge-mla: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= train,export,runtime,dev
SYSTEM_PACKAGES := libportaudio2 libsndfile1 pulseaudio pulseaudio-utils mosquitto mosquitto-clients systemd
# Tests and benchmarks read the real data here (also EDGE_MLA_DATA).
export EDGE_MLA_DATA ?= $(abspath ../shared/data)

.PHONY: help setup system-deps demo test bench clean

help:
	@echo "make demo   - set up and run the end-to-end demo on built-in data"
	@echo "make test   - set up and run the test suite"
	@echo "make bench  - rerun the benchmarks behind BENCHMARKS.md (long)"

# System packages: PortAudio for sounddevice, PulseAudio for a real capture device on
# headless machines, Mosquitto for the MQTT tests (a private broker per test; the
# system service is not used), systemd for `systemd-analyze verify` of deploy/.
# Installed only when missing, only as root with apt-get.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: missing system packages:$$missing (install them as root)"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

setup: system-deps $(VENV)/.installed

demo: setup
	$(VENV)/bin/edge-mla demo --force

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out bench-out

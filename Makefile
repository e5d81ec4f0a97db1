# OptSAR Fusion — developer and CI entry points.  Each target sets up what it needs.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(ROOT)/.venv/bin/python
QGIS_ENV := QT_QPA_PLATFORM=offscreen QGIS_PLUGINPATH=$(ROOT)/.qgis-plugins \
	QGIS_CUSTOM_CONFIG_PATH=$(ROOT)/.qgis-profile PYTHONUSERBASE=$(ROOT)/.venv TMPDIR=$(ROOT)/.qgis-tmp
QGIS_PROCESS := $(QGIS_ENV) /usr/bin/qgis_process.bin
VERSION := $(shell sed -n 's/^version=//p' metadata.txt)
ARGS ?=

.PHONY: env test demo bench package lint qgis_process clean help

help:
	@echo "make env | test | demo | bench | package | lint | qgis_process ARGS='...' | clean"

env:  ## Debian packages if missing, .venv with pinned packages, QGIS profile with the plugin enabled
	@bash scripts/setup_env.sh

test: env  ## the whole test suite (what CI runs)
	cd $(ROOT) && $(QGIS_ENV) $(PY) -m pytest -q

demo: env  ## generate a sample scene, train each network briefly, classify with qgis_process, assess
	cd $(ROOT) && $(QGIS_ENV) $(PY) scripts/demo.py --out demo_output

bench:  ## benchmarks: printed figures and ratios (not part of make test); also installs GRASS for bench_accuracy
	@bash scripts/setup_env.sh grass-core
	cd $(ROOT) && for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(QGIS_ENV) $(PY) $$b || exit 1; done

package: env  ## build optsar_fusion.VERSION.zip with qgis-plugin-ci from a staged optsar_fusion/ folder
	cd $(ROOT) && $(PY) scripts/package.py --version $(VERSION) --out dist

lint: env
	cd $(ROOT) && $(PY) -m ruff check .

qgis_process: env  ## e.g. make qgis_process ARGS='run optsar:checkenvironment --json'
	cd $(ROOT) && $(QGIS_PROCESS) $(ARGS)

clean:
	rm -rf .venv .qgis-profile .qgis-plugins .qgis-tmp dist build demo_output bench_output .pytest_cache .ruff_cache ext-libs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

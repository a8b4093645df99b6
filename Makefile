# The two commands a user needs: `make run` and `make test`.
# Both set up everything they need (venv, dependencies, model) and are
# idempotent: a second run reuses the venv, the download cache and the model.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 5000

# glibc's malloc settings for the service (large tensors from mmap, given back
# on free, on huge pages): malloc.env says which and why; bench/ and tests/
# read the same file. glibc reads them at process start, so they are exported
# to everything make runs. Another value: on make's command line
# (`make run GLIBC_TUNABLES=`), which wins over the file.
include malloc.env
export $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' malloc.env)
# onnxruntime must not phone home.
export ORT_DISABLE_TELEMETRY := 1

.PHONY: setup dev-setup model browser nginx removebg-client run test fuzz bench clean image image-test

# What running needs: the service's dependencies and the model build's `onnx`
# (requirements-build.txt). The test tools come with `make test` only.
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-build.txt
	@echo "isnet-wsgi: installing the runtime into $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-build.txt
	touch $@

dev-setup: $(VENV)/.dev-installed

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	@echo "isnet-wsgi: installing the test tools into $(VENV)"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Builds models/isnet-general-tiny.onnx (cached; a no-op when it is up to date).
model: setup
	$(PY) -m models.build

# gunicorn prints the docs' address once it listens (gunicorn.conf.py, when_ready).
run: model
	PORT=$(PORT) exec $(VENV)/bin/gunicorn -c gunicorn.conf.py

# Headless Chromium and its driver from Debian, for tests/system/test_browser.py.
# A no-op once both are installed (CI and the Dockerfile run as root).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi

# Debian's nginx, for tests/system/test_nginx.py: the test runs its own in the
# foreground on loopback with deploy/nginx/'s configuration (the package's
# service, started where an init system runs, is not used). A no-op once installed.
nginx:
	@if [ ! -x /usr/sbin/nginx ]; then \
		apt-get update && apt-get install -y --no-install-recommends nginx; \
	fi

# remove.bg's npm client, for tests/system/test_removebg_client.py: node and
# npm from Debian if missing, the pinned package (package-lock.json) installed
# with `npm ci` inside the venv. A no-op, offline, once it is installed.
REMOVEBG_CLIENT := tests/system/removebg_client
removebg-client: $(VENV)/removebg-client/.installed

$(VENV)/removebg-client/.installed: $(REMOVEBG_CLIENT)/package.json $(REMOVEBG_CLIENT)/package-lock.json
	@if ! command -v npm >/dev/null; then \
		apt-get update && apt-get install -y --no-install-recommends nodejs npm; \
	fi
	mkdir -p $(VENV)/removebg-client
	cp $(REMOVEBG_CLIENT)/package.json $(REMOVEBG_CLIENT)/package-lock.json $(VENV)/removebg-client/
	cd $(VENV)/removebg-client && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: model dev-setup browser nginx removebg-client
	$(PY) -m pytest

# `make test` draws the same examples every run; this draws fresh ones: the
# property tests, then the OpenAPI contract test FUZZ_RUNS times, each seed
# printed for replay (CONTRACT_SEED=SEED).
FUZZ_RUNS ?= 5
fuzz: model dev-setup
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_color_properties.py \
		tests/test_multipart_properties.py tests/test_png.py
	for run in $$(seq $(FUZZ_RUNS)); do \
		CONTRACT_SEED=random $(PY) -m pytest -q -s tests/system/test_openapi_contract.py || exit 1; \
	done

# bench/README.md: the sections; `python -m bench SECTION --help`.
bench: model dev-setup
	$(PY) -m bench all
	$(PY) -m bench slow-clients

# The Dockerfile, both stages, built with buildah (no Docker daemon) on a local
# Debian bookworm base; then the image run and checked (deploy/README.md).
# Root only; installs buildah and debootstrap with apt-get if missing.
image: dev-setup
	$(PY) -m deploy.image.build

image-test: image
	$(PY) -m deploy.image.smoke

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis models/*.onnx
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

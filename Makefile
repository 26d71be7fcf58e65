# Two commands on a fresh Debian 12 / Raspberry Pi OS machine:  make run  and  make test.
SHELL := /bin/bash
PY    := .venv/bin/python
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: PortAudio + a sound server for real microphone tests, TTS engines, sox, the
# MQTT broker, libsystemd for systemd-python, compilers for the firmware's host and Cortex-M4 builds.
APT_PACKAGES := python3-venv python3-dev build-essential pkg-config libsystemd-dev \
	libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins \
	espeak-ng flite sox festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	pocketsphinx-testdata mosquitto mosquitto-clients socat systemd time openssl \
	gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm

.PHONY: setup run test lint bench clean
.DEFAULT_GOAL := run

setup: .setup-stamp

.setup-stamp: pyproject.toml Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	[ -x $(PY) ] || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pi,train,dev]'
	@# The fallback interpreter, tflite-runtime 2.14, needs numpy<2: it gets its own small venv,
	@# which tests/test_tflite_runtime.py uses when it exists.
	[ -x .venv-tflite/bin/python ] || python3 -m venv .venv-tflite
	.venv-tflite/bin/python -m pip install -q "numpy<2" tflite-runtime python-speech-features scipy threadpoolctl \
		|| echo "warning: tflite-runtime fallback venv not installed (no wheel for this platform?)"
	.venv-tflite/bin/python -m pip install -q --no-deps -e .
	touch $@

# The main job on its embedded defaults: the default microphone if there is one, else the demo
# recording in models/demo/; detections printed, and published to MQTT if a broker answers on localhost.
run: setup
	.venv/bin/kws-edge run --demo

test: setup
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff check kws_edge training benchmarks tests
	.venv/bin/mypy kws_edge

bench: setup
	$(PY) benchmarks/pipeline_bench.py --out benchmarks/results/

clean:
	rm -rf .venv .venv-tflite .setup-stamp

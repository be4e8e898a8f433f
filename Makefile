# faceverify: the two commands a new user needs.
#   make run    bootstrap, build, migrate, then serve faceverifyd on
#               127.0.0.1:$PORT (default 8000); DATABASE=postgres serves on
#               a local PostgreSQL cluster instead of SQLite
#   make test   bootstrap, build, then every test (C unit tests, Python parity
#               and CLI tests, the C tests again under ASan+UBSan, format and
#               static checks)
# Other targets: build, models, deb, asan, check-format, check-layers, cppcheck, install
# (PREFIX=/usr/local), clean, fuzz (libFuzzer targets into build-fuzz/),
# test-fuzz (each for FUZZ_SECONDS), fuzz-merge (new inputs into
# fuzz/corpus); see docs/fuzzing.md.

PREFIX ?= /usr/local
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
export FUZZ_BUILD FUZZ_SECONDS
JOBS ?= $(shell nproc)
PY ?= .venv/bin/python
PORT ?= 8000
FACEVERIFY_DATA ?= $(abspath ../shared/data)
export FACEVERIFY_DATA

.PHONY: all bootstrap models build deb asan fuzz run test test-c test-py test-asan test-server test-fuzz fuzz-merge check-format cppcheck format install clean

all: build

bootstrap:
	@scripts/bootstrap.sh

models:
	@scripts/fetch_models.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

asan:
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFV_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

# fuzz: the libFuzzer targets (clang; -fsanitize=fuzzer,address,undefined).
fuzz:
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DFV_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(FUZZ_BUILD) --target fuzz -j$(JOBS)

# test-fuzz: each fuzz target for FUZZ_SECONDS (default 20) from the seeds
# in fuzz/corpus, after replaying fuzz/regressions; fails on any finding.
test-fuzz: fuzz
	@scripts/fuzz.sh run

# fuzz-merge: adds the inputs test-fuzz found that grow coverage to the
# committed corpus (fuzz/corpus/TARGET); commit them.
fuzz-merge: fuzz
	@scripts/fuzz.sh merge

# run: migrate the database (SQLite under var/ unless FACEVERIFY_DATABASE_URL
# says otherwise), create the collection `default` on first start (its API
# key is printed once), then serve on 127.0.0.1:$(PORT) until Ctrl-C/SIGTERM,
# with the demo page at http://127.0.0.1:$(PORT)/ (--demo: keyless, local
# only, bound to the collection `demo`).
# DATABASE=postgres: the same on this machine's Debian PostgreSQL cluster,
# started (and given the role and database faceverify) by
# scripts/pg_local.sh as .ci/run does; it needs root, so a user runs it
# through sudo.  The URL it printed is shown, for FACEVERIFY_DATABASE_URL.
DATABASE ?= sqlite
run: bootstrap build
	@set -e; \
	if [ "$(DATABASE)" = postgres ]; then \
	  pg="env FV_PG_DB=faceverify scripts/pg_local.sh"; \
	  [ "$$(id -u)" = 0 ] || pg="sudo $$pg"; \
	  url=$$($$pg | tail -n 1); \
	  case "$$url" in postgres://*) ;; \
	  *) echo "make run: scripts/pg_local.sh printed no URL" >&2; exit 1 ;; esac; \
	  echo "database: FACEVERIFY_DATABASE_URL=$$url"; \
	  export FACEVERIFY_DATABASE_URL="$$url"; \
	elif [ "$(DATABASE)" != sqlite ]; then \
	  echo "make run: DATABASE is sqlite (default) or postgres" >&2; exit 2; \
	fi; \
	$(BUILD)/bin/faceverifyd migrate; \
	$(BUILD)/bin/faceverifyd createcollection default --if-missing; \
	exec $(BUILD)/bin/faceverifyd serve --listen 127.0.0.1:$(PORT) --demo

test: bootstrap build asan
	@$(MAKE) --no-print-directory check-format check-layers cppcheck test-c test-py test-asan test-server test-fuzz

test-c:
	@cd $(BUILD) && ctest --output-on-failure

test-py:
	@FACEVERIFY_BUILD=$(abspath $(BUILD)) FACEVERIFY_MODELS=$(abspath models) \
	  $(PY) -m pytest -q tests/py

# test-server: the faceverifyd integration tests (the hostile-input
# matrix, the metrics and the bulk import and export too) again, with the
# server built under ASan+UBSan (its reports fail the test that stops it).
# On PostgreSQL too when FACEVERIFY_PG_URL is set (.ci/run sets it).
test-server:
	@FACEVERIFY_BUILD=$(abspath $(ASAN_BUILD)) FACEVERIFY_MODELS=$(abspath models) \
	  $(PY) -m pytest -q tests/py/test_server.py tests/py/test_security.py tests/py/test_hostile.py \
	  tests/py/test_chaos.py tests/py/test_metrics.py tests/py/test_import_export.py

test-asan:
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

FORMAT_FILES = $(shell git ls-files '*.c' '*.h')

check-format:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "clang-format: clean"

format:
	@clang-format -i $(FORMAT_FILES)

# check-layers: no folder of src/ includes a folder above it
# (docs/architecture.md).
check-layers:
	@python3 scripts/check_layers.py && echo "check-layers: clean"

cppcheck:
	@cppcheck --quiet --error-exitcode=1 --enable=warning,portability --std=c11 \
	  --inline-suppr -Iinclude -Isrc src && echo "cppcheck: clean"

# deb: a Debian package of this build (build/faceverify_VERSION_ARCH.deb),
# installing under /usr with faceverifyd.service; the models are fetched
# on the target by `faceverifyd fetch-models` (README, "Debian package").
deb: build
	@cd $(BUILD) && FV_PACKAGE=1 cpack -G DEB >/dev/null && ls $(abspath $(BUILD))/faceverify_*.deb

# install: the library (static and shared), faceverify.h, faceverify.pc, the
# CMake package, faceverify, faceverifyd, the models and config
# (share/faceverify) and the server's assets (share/faceverify/server) under
# PREFIX.  Installed binaries find these from their own location, so no
# environment variable is needed (README, "Build options and install").
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

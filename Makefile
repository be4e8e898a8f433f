# faceverify: the two commands a new user needs.
#   make run    bootstrap, build, then start the service (for now: CLI usage)
#   make test   bootstrap, build, then every test (C unit tests, Python parity
#               and CLI tests, the C tests again under ASan+UBSan, format and
#               static checks)
# Other targets: build, models, asan, check-format, cppcheck, install
# (PREFIX=/usr/local), clean.

PREFIX ?= /usr/local
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
PY ?= .venv/bin/python
FACEVERIFY_DATA ?= $(abspath ../shared/data)
export FACEVERIFY_DATA

.PHONY: all bootstrap models build asan run test test-c test-py test-asan check-format cppcheck format install clean

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

run: bootstrap build
	@$(BUILD)/bin/faceverify --help

test: bootstrap build asan
	@$(MAKE) --no-print-directory check-format cppcheck test-c test-py test-asan

test-c:
	@cd $(BUILD) && ctest --output-on-failure

test-py:
	@FACEVERIFY_BUILD=$(abspath $(BUILD)) FACEVERIFY_MODELS=$(abspath models) \
	  $(PY) -m pytest -q tests/py

test-asan:
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

FORMAT_FILES = $(shell git ls-files '*.c' '*.h')

check-format:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "clang-format: clean"

format:
	@clang-format -i $(FORMAT_FILES)

cppcheck:
	@cppcheck --quiet --error-exitcode=1 --enable=warning,portability --std=c11 \
	  --inline-suppr -Iinclude -Isrc -Isrc/core src && echo "cppcheck: clean"

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# sso_auth: build, install and test the OpenSIPS module.
#
#   make             build sso_auth.so for the OpenSIPS found via $OPENSIPS or PATH
#   make install     copy it into that OpenSIPS's modules directory (MODULES_DIR= overrides)
#   make test        unit + layout tests, then the end-to-end suite against that OpenSIPS
#   make demo        build, install into a scratch modules dir, run OpenSIPS + reference SSO, play the story
#   make bench       benchmark (not part of CI)
#   make memcheck    core unit tests under valgrind memcheck
#   make fuzz        run the fuzz targets (cargo-fuzz; RUSTC_BOOTSTRAP=1 on a stable toolchain)

CARGO ?= cargo
PYTHON ?= python3
# The OpenSIPS the module is built for: $OPENSIPS, else `opensips` on PATH.
OPENSIPS ?= $(shell command -v opensips 2>/dev/null)
export OPENSIPS

MODULE := target/release/libsso_auth.so
OUT := target/sso_auth.so

# Modules directory of the target OpenSIPS: <prefix>/lib64/opensips/modules or
# <prefix>/lib/opensips/modules next to <prefix>/sbin/opensips, or Debian's multiarch path.
OPENSIPS_PREFIX = $(patsubst %/,%,$(dir $(patsubst %/,%,$(dir $(OPENSIPS)))))
MODULES_DIR ?= $(firstword $(wildcard \
	$(OPENSIPS_PREFIX)/lib64/opensips/modules \
	$(OPENSIPS_PREFIX)/lib/opensips/modules \
	$(OPENSIPS_PREFIX)/lib/x86_64-linux-gnu/opensips/modules))

.PHONY: all build install uninstall test unit e2e panic-build demo bench fuzz memcheck clean

all: build

build:
	$(CARGO) build --release
	cp $(MODULE) $(OUT)
	@echo "built $(OUT) for $${OPENSIPS:-<no OpenSIPS found: newest supported ABI>}"

install: build
	@test -n "$(MODULES_DIR)" || { echo "cannot find the modules directory of '$(OPENSIPS)'; run: make install MODULES_DIR=/path/to/opensips/modules"; exit 1; }
	install -m 0644 $(OUT) $(MODULES_DIR)/sso_auth.so
	@echo "installed $(MODULES_DIR)/sso_auth.so"

uninstall:
	@test -n "$(MODULES_DIR)" || { echo "cannot find the modules directory; run: make uninstall MODULES_DIR=..."; exit 1; }
	rm -f $(MODULES_DIR)/sso_auth.so
	@echo "removed $(MODULES_DIR)/sso_auth.so"

test: unit e2e

unit:
	$(CARGO) test

# The e2e suite also gets a build with the test-only `panic-test` feature, to prove the guard.
PANIC_MODULE := target/panic-test/release/libsso_auth.so

e2e: build panic-build
	SSO_AUTH_PANIC_MODULE=$(CURDIR)/$(PANIC_MODULE) $(PYTHON) tests/e2e/run.py
	$(PYTHON) tests/e2e/phones.py
	$(PYTHON) tests/e2e/glewlwyd.py

panic-build:
	$(CARGO) build --release --features panic-test --target-dir target/panic-test

demo: build
	$(PYTHON) examples/demo.py

bench: build
	$(CARGO) bench --bench core_paths --bench jwt_vs_introspection
	$(PYTHON) bench/run.py

fuzz:
	cd fuzz && ./run.sh

# The core's unit tests under valgrind memcheck (0 errors expected). Tests that measure
# wall-clock budgets are skipped: under valgrind everything is 20-50x slower.
memcheck:
	$(CARGO) test --lib --no-run 2>&1 | tee target/memcheck-build.log
	bin=$$(sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' target/memcheck-build.log | tail -1); \
	valgrind --error-exitcode=9 --suppressions=tests/valgrind.supp --child-silent-after-fork=no \
		$$bin --test-threads=1 --skip body_at_the_limit --skip times_out --skip timeout --skip silent_server

clean:
	$(CARGO) clean

# sso_auth: build, install and test the OpenSIPS module.
#
#   make             build sso_auth.so for the target OpenSIPS (see below)
#   make install     copy it into that OpenSIPS's modules directory (MODULES_DIR= overrides)
#   make opensips    build every supported OpenSIPS from the tarballs in OPENSIPS_SRC_DIR
#                    into OPENSIPS_CACHE (default target/opensips/<version>/)
#   make test        unit + layout tests, then the end-to-end suites against each OpenSIPS
#   make e2e         the end-to-end suites against the target OpenSIPS only
#   make demo        build, run OpenSIPS + the reference SSO and play the story
#   make bench       benchmark (not part of CI)
#   make memcheck    core unit tests under valgrind memcheck
#   make fuzz        run the fuzz targets (cargo-fuzz; RUSTC_BOOTSTRAP=1 on a stable toolchain)
#
# The target OpenSIPS: $OPENSIPS when set; else the newest version built from the tarballs
# (built on first use); else `opensips` on PATH. `make test` without OPENSIPS tests every
# version the tarballs provide.

CARGO ?= cargo
PYTHON ?= python3
OPENSIPS_SRC_DIR ?= $(abspath $(CURDIR)/../shared/opensips-src)
OPENSIPS_CACHE ?= $(CURDIR)/target/opensips
export OPENSIPS_SRC_DIR OPENSIPS_CACHE

# Resolved only by the targets that need one binary (a recipe-time lookup, so `make test`
# and `make opensips` never trigger it).
TARGET_OPENSIPS = $${OPENSIPS:-$$(tools/build-opensips.sh --newest || command -v opensips)}

MODULE := target/release/libsso_auth.so
OUT := target/sso_auth.so

# Modules directory of an OpenSIPS binary: <prefix>/lib64/opensips/modules or
# <prefix>/lib/opensips/modules next to <prefix>/sbin/opensips, or Debian's multiarch path.
MODULES_DIR_OF = p=$$(dirname $$(dirname "$$bin")); for d in lib64/opensips/modules lib/opensips/modules lib/x86_64-linux-gnu/opensips/modules; do [ -d "$$p/$$d" ] && { echo "$$p/$$d"; break; }; done

.PHONY: all build install uninstall opensips deps test-deps test unit e2e demo bench fuzz memcheck clean

all: build

deps:
	@tools/deps.sh build

test-deps:
	@tools/deps.sh test

opensips: deps
	tools/build-opensips.sh

build: deps
	bin=$(TARGET_OPENSIPS); OPENSIPS="$$bin" $(CARGO) build --release && cp $(MODULE) $(OUT) \
		&& echo "built $(OUT) for $${bin:-<no OpenSIPS found: newest supported ABI>}"

install: build
	bin=$(TARGET_OPENSIPS); dir=$${MODULES_DIR:-$$($(MODULES_DIR_OF))}; \
	test -n "$$dir" || { echo "cannot find the modules directory of '$$bin'; run: make install MODULES_DIR=/path/to/opensips/modules"; exit 1; }; \
	install -m 0644 $(OUT) "$$dir/sso_auth.so" && echo "installed $$dir/sso_auth.so"

uninstall:
	bin=$(TARGET_OPENSIPS); dir=$${MODULES_DIR:-$$($(MODULES_DIR_OF))}; \
	test -n "$$dir" || { echo "cannot find the modules directory; run: make uninstall MODULES_DIR=..."; exit 1; }; \
	rm -f "$$dir/sso_auth.so" && echo "removed $$dir/sso_auth.so"

# Unit + layout tests once, then each OpenSIPS (OPENSIPS=, else every tarball version).
test: test-deps
	tools/test.sh

unit:
	$(CARGO) test

# The end-to-end suites against one OpenSIPS (the target one).
e2e: deps
	OPENSIPS=$(TARGET_OPENSIPS) tools/test.sh --e2e-only

demo: deps
	bin=$(TARGET_OPENSIPS); test -n "$$bin" || { echo "no OpenSIPS: set OPENSIPS= or OPENSIPS_SRC_DIR= (see README)"; exit 2; }; \
	OPENSIPS="$$bin" $(CARGO) build --release && cp $(MODULE) $(OUT) && OPENSIPS="$$bin" $(PYTHON) examples/demo.py

bench: build
	$(CARGO) bench --bench core_paths --bench jwt_vs_introspection
	OPENSIPS=$(TARGET_OPENSIPS) $(PYTHON) bench/run.py

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

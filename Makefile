# mailbridge: the two commands of a fresh Debian 12 machine are `make run` and `make test`.
# CMake does the building; this file installs what is missing and runs the steps in order.

BUILD ?= build
JOBS ?= 2
CMAKE ?= cmake
SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]')

.PHONY: all deps test-deps build run test asan clang fuzz format format-check bench clean

all: build

deps:
	@scripts/install-deps.sh

test-deps:
	@scripts/install-deps.sh --test

build: deps
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build $(BUILD) -j$(JOBS)

# The gateway in the foreground on the built-in defaults, with its data under ./var.
run: build
	@mkdir -p var
	$(BUILD)/mailbridge serve --set server.data_dir=./var

# Every test, through CTest, on a build with warnings as errors.
test: test-deps
	scripts/install-peers.sh
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWERROR=ON
	$(CMAKE) --build $(BUILD) -j$(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# Unit and golden tests again under AddressSanitizer and UndefinedBehaviorSanitizer.
asan: test-deps
	$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWERROR=ON -DSANITIZE=address,undefined
	$(CMAKE) --build build-asan -j$(JOBS)
	cd build-asan && ctest --output-on-failure -L 'unit|golden'

# The same code under clang, warnings as errors (STYLE.md: gcc and clang).
clang: test-deps
	CC=clang $(CMAKE) -S . -B build-clang -DWERROR=ON >/dev/null
	$(CMAKE) --build build-clang -j$(JOBS)

fuzz: test-deps
	scripts/fuzz.sh 20

format:
	clang-format -i $(SOURCES)

format-check:
	clang-format --dry-run --Werror $(SOURCES)

bench:
	bench/intake

# The Debian package, build/mailbridge_<version>_<arch>.deb: scripts/build-deb.sh compiles in
# its own tree (build-deb) with Debian's flags. The test deps bring cmocka, which configuring
# needs. docs/packaging.md.
.PHONY: deb
deb: test-deps
	scripts/build-deb.sh --build-dir build-deb --out $(BUILD) --jobs $(JOBS)

clean:
	rm -rf $(BUILD) build-asan build-clang build-fuzz

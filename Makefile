# Flagpole developer commands. `make run` and `make test` are the quick start.
GO        ?= go
ADDR      ?= 127.0.0.1:8080
DATA_DIR  ?= .data
FUZZTIME  ?= 15s
BENCHTIME ?= 1s
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps vet lint fuzz bench build clean

build:
	$(GO) build -o bin/flagpole ./cmd/flagpole

## run: the server on the embedded store with the example flags; prints an admin key.
run:
	$(GO) run ./cmd/flagpole serve --addr $(ADDR) --data-dir $(DATA_DIR) --flags examples/flags.yaml --env default

## deps: installs the Debian packages the integration tests need, when missing.
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v prometheus   >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

vet:
	$(GO) vet ./...

## test: vet, the import-rule test, then every test with the race detector.
test: deps vet
	$(GO) test -count=1 -run 'TestImportRules' .
	$(GO) test -race -shuffle=on -timeout 20m ./...

## fuzz: short runs of every fuzz target.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## bench: every benchmark, with allocations.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

clean:
	rm -rf bin $(DATA_DIR)

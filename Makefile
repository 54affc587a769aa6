# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: install install-test demo test

install:
	scripts/install.sh

install-test:
	scripts/install.sh --test

demo: install
	.venv/bin/enclave demo

test: install-test
	scripts/run-tests.sh

# The two commands: `make run` (serve the whole product) and `make test` (the whole suite).
# make run starts the processes in Procfile.dev; the sandbox gateway only when no WSAPME_TOKEN is set.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
ADDR ?= 127.0.0.1:8000

.PHONY: run test test-pgbouncer lint format install requirements audit bench bench-smoke

# Production's packages and the tools to test it, exactly as pinned and hashed (requirements-dev.txt
# includes requirements.txt; a server installs requirements.txt alone, see the README).
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	touch $@

# After editing requirements.in or requirements-dev.in: pin and hash again (pip-tools, in its own
# virtualenv). Pins already in the .txt files stay unless the .in files need otherwise.
requirements:
	test -x .venv-tools/bin/pip-compile || ($(PYTHON) -m venv .venv-tools && \
		.venv-tools/bin/pip install --quiet --disable-pip-version-check pip-tools==7.6.2)
	for name in requirements requirements-dev; do .venv-tools/bin/pip-compile --quiet --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o $$name.txt $$name.in || exit 1; done

# A local .env with a random SECRET_KEY and admin password, made once.
.env:
	@$(PYTHON) -c "import secrets; t = secrets.token_urlsafe; \
	print('# Made by make run for local development; every variable is in .env.example.'); \
	print('DEBUG=true'); print('SECRET_KEY=' + t(50)); print('DJANGO_SUPERUSER_PASSWORD=' + t(12)); \
	print('WSAPME_WEBHOOK_SECRETS=' + t(24))" > $@
	@echo "Wrote .env (local development settings)."

run: install .env
	@grep -q '^WSAPME_WEBHOOK_SECRETS=.' .env || $(PYTHON) -c "import secrets; \
	print('WSAPME_WEBHOOK_SECRETS=' + secrets.token_urlsafe(24))" >> .env
	$(PY) manage.py migrate --noinput
	@$(PY) manage.py shell -c "import os; from django.contrib.auth import get_user_model as U; \
	U().objects.filter(username='admin').exists() or \
	U().objects.create_superuser('admin', '', os.environ['DJANGO_SUPERUSER_PASSWORD'])"
	@echo ""
	@echo "  Sign in at http://$(ADDR)/login/ as admin (the admin is at /admin/), password: $$(sed -n 's/^DJANGO_SUPERUSER_PASSWORD=//p' .env)"
	@echo ""
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ADDR=$(ADDR) $(VENV)/bin/honcho -f Procfile.dev start $$($(PY) manage.py \
	shell -v 0 -c "from django.conf import settings; print('web worker poller applier sandbox' if settings.WSAPME_SANDBOX else 'web worker poller applier')")

test: install
	$(PY) -m pytest

# The PostgreSQL suite through a local PgBouncer in transaction mode, as Neon's pooled hosts serve the app
# (needs Debian's pgbouncer package). Not part of .ci/run, to keep CI under 20 minutes.
test-pgbouncer: install
	.ci/pgbouncer

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Known vulnerabilities in the pinned requirements (pip-audit, PyPI's advisory data): any found
# fails the build. Where the advisory data cannot be reached, it says so and does not pretend.
audit: install
	test -x .venv-audit/bin/pip-audit || ($(PYTHON) -m venv .venv-audit && \
		.venv-audit/bin/pip install --quiet --disable-pip-version-check pip-audit==2.10.1)
	@if $(PY) -c "import urllib.request as u; u.urlopen('https://pypi.org/pypi/django/5.2.19/json', timeout=10)" 2>/dev/null; then \
		.venv-audit/bin/pip-audit --strict --no-deps --disable-pip -r requirements.txt; \
	else \
		echo "AUDIT NOT RUN: PyPI's per-version advisory data (pypi.org/pypi/<name>/<version>/json) is unreachable from this machine."; \
	fi

# Benchmarks (bench/): one table, written to bench/RESULTS.md. They need PostgreSQL and pgbench, and
# make and drop their own database <name>_bench on DATABASE_URL's server (without DATABASE_URL:
# postgres://postgres@127.0.0.1:5432/blasts_bench). bench-smoke: tiny sizes, seconds long, no timing
# verdicts; it fails if a script crashes or loses work. `make bench SCALE=10` (not part of the default
# run): only bench/reporting.py at 10x its blasts (10,000,000 recipients), recorded in its own section
# of bench/RESULTS.md's hand-kept part.
bench: install
	$(PY) -m bench.run $(if $(SCALE),--scale $(SCALE))

bench-smoke: install
	$(PY) -m bench.run --smoke

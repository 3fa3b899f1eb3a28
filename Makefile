# The two commands: `make run` (the whole stack, embedded defaults) and `make test`.
# Both create .venv and install the pinned versions from constraints.txt when needed.

VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/nudge dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/followups.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/menus.py
	$(BIN)/python bench/menu_checks.py
	$(BIN)/python bench/automations.py
	$(BIN)/python bench/credits.py

clean:
	rm -rf $(VENV) .nudge .mypy_cache .pytest_cache .ruff_cache

# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates .venv (Python 3.11) if missing and installs the pinned set.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: run test venv bench validate clean

venv: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[numpyro,pyro,test]"
	@rm -f $(VENV)/.installed-*; touch $@

run: venv
	@mkdir -p out
	$(VENV)/bin/pplpatterning compare --model product --n 1000 --gamma 1 \
	    --backends numpyro pyro --samplers nuts mala sgld rmsprop_sgld sgnht \
	    --option nuts.target_accept=0.95 --step-size sgld=1e-3 --step-size rmsprop_sgld=1e-2 \
	    --step-size sgnht=1e-2 --draws 1000 --burnin 500 --csv out/compare.csv --plot out/compare.png

test: venv
	$(PY) -m pytest -q

validate: venv
	$(PY) validation/run_validation.py

bench: venv
	$(PY) validation/benchmark_llc.py

clean:
	rm -rf $(VENV) .jax_cache build dist *.egg-info

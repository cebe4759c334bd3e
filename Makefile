# Two entry points: `make demo` (the main job on the offline default) and `make test`.
# Both create or reuse a local virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[emd,test]"
	touch $(STAMP)

venv: $(STAMP)

# SA and SA-MESH side by side on random objects at sigma = 1 (MESH paper, Table 1): a few
# minutes on 2 CPU cores. A full-length cell (20,000 steps) is its own command, e.g.
#   $(PY) main.py --config=configs/random_objects.py:attention=mesh,sigma=0.01 --workdir=workdirs/random_objects_mesh_0.01
demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 tests

benchmark: $(STAMP)
	$(PY) benchmarks/transport_speed.py

clean:
	rm -rf $(VENV) workdirs

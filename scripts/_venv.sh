# Helpers shared by setup_env.sh, smoke.sh and update_lock.sh (sourced, not run).
LOCK=constraints.txt

# new_venv DIR: a fresh virtual environment at DIR (python3, or $PYTHON)
new_venv() {
  "${PYTHON:-python3}" -m venv "$1"
}

# lock_pin NAME: the lock's "NAME==VERSION" line (empty when the lock has none)
lock_pin() {
  grep -i "^$1==" "$LOCK" || true
}

# ensure_torch VENV PIN: keep any torch already in VENV (a GPU user's build stays); else install PIN,
# the CPU build: from the configured indexes and wheel folders when they have it, else from PyTorch's
# CPU index (PyPI itself serves only the CUDA builds).
ensure_torch() {
  local venv=$1 pin=$2
  if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    return 0
  fi
  "$venv/bin/python" -m pip install -q "$pin" 2>/dev/null ||
    "$venv/bin/python" -m pip install -q --retries 1 --timeout 30 "$pin" \
      --extra-index-url https://download.pytorch.org/whl/cpu
}

# torch_version VENV: the installed torch's version string
torch_version() {
  "$1/bin/python" -c "import torch; print(torch.__version__)"
}

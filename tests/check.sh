#!/usr/bin/env bash
# Everything CI checks, in order. Run from the repository root with the venv's bin on PATH:
#   PATH="$PWD/.venv/bin:$PATH" bash tests/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# One BLAS/OpenMP thread per process: nbdev_test and the sweep tests run processes side by side on 2 cores, and
# oversubscribed torch threads are ~10x slower there (measured: 0.19 s vs 1.66 s per tiny ResNet step under load).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
step() { printf '\n==> %s\n' "$*"; }

step "nbdev_export: the package equals what the notebooks produce"
nbdev_export
git diff --exit-code -- loss_lin_slope || { echo "loss_lin_slope/ differs from the notebooks: run nbdev_export and commit"; exit 1; }
test -z "$(git status --porcelain -- loss_lin_slope)" || { git status --porcelain -- loss_lin_slope; echo "untracked generated files"; exit 1; }

step "nbdev_clean: notebooks are committed clean"
nbdev_clean
git diff --exit-code -- nbs || { echo "notebooks are not clean: run nbdev_clean and commit"; exit 1; }

step "README.md (+ README_files/) is generated from nbs/index.ipynb"
python tests/make_readme.py
git diff --exit-code -- README.md README_files || { echo "README.md differs from nbs/index.ipynb: run python tests/make_readme.py"; exit 1; }
test -z "$(git status --porcelain -- README.md README_files)" || { git status --porcelain -- README_files; echo "untracked README files"; exit 1; }

step "ruff"
ruff check loss_lin_slope tests benchmarks

step "nbdev_test"
nbdev_test --n_workers 2 --timing

step "pytest tests/"
set +e
python -m pytest tests/ -ra --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi
exit "$rc"

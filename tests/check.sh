#!/usr/bin/env bash
# Everything CI checks, in order. Run from the repository root with the venv's bin on PATH:
#   PATH="$PWD/.venv/bin:$PATH" bash tests/check.sh           # all of it, as CI runs it; extra arguments go to pytest
#       (`-m "slow or not slow"` adds the tests marked slow; `LLS_TEST_WORKERS=N`: pytest-xdist's workers, default 3)
#   PATH="$PWD/.venv/bin:$PATH" bash tests/check.sh --quick   # the inner loop (≤ 3 minutes): export, clean, README,
#       ruff, and nbdev_test of the notebooks that differ from main (committed or not; `LLS_BASE=branch` for another)
# The full run requires a committed tree (it checks that the generated files equal what is committed); --quick
# checks that the notebooks are exported and clean and the README rendered (it does that work and says so if it
# changed anything), so it runs on work in progress.
set -euo pipefail
cd "$(dirname "$0")/.."
# One BLAS/OpenMP thread per process: nbdev_test and the sweep tests run processes side by side on 2 cores, and
# oversubscribed torch threads are ~10x slower there (measured: 0.19 s vs 1.66 s per tiny ResNet step under load).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
quick=""
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
t0=$SECONDS
step() { printf '\n==> %s (%d s)\n' "$*" "$((SECONDS - t0))"; }

# The working tree's state of PATHS: tracked changes against HEAD and untracked files, with their contents.
state() { git diff HEAD --binary -- "$@"; git ls-files -o --exclude-standard -z -- "$@" | xargs -0 -r sha1sum; }

# generated WHAT CMD PATHS…: run CMD; the generated PATHS must come out as committed (full run) or unchanged (--quick)
generated() {
  local what="$1" cmd="$2"; shift 2
  local before
  before="$(state "$@")"
  $cmd
  if [ -n "$quick" ]; then
    [ "$(state "$@")" = "$before" ] || { git status --short -- "$@"; echo "$what changed the files above: review and commit them"; return 1; }
  else
    git diff --exit-code -- "$@" || { echo "$what: the files above differ from what is committed: run it and commit"; return 1; }
    test -z "$(git status --porcelain -- "$@")" || { git status --porcelain -- "$@"; echo "$what: untracked generated files"; return 1; }
  fi
}

step "nbdev_export: the package equals what the notebooks produce"
generated nbdev_export nbdev_export loss_lin_slope

step "nbdev_clean: notebooks are committed clean"
generated nbdev_clean nbdev_clean nbs

step "README.md (+ README_files/) is generated from nbs/index.ipynb"
generated "python tests/make_readme.py" "python tests/make_readme.py" README.md README_files

step "ruff"
ruff check loss_lin_slope tests benchmarks

if [ -n "$quick" ]; then
  base="$(git merge-base HEAD "${LLS_BASE:-main}" 2>/dev/null || git rev-parse HEAD)"
  changed="$({ git diff --name-only "$base" -- nbs; git ls-files -o --exclude-standard -- nbs; } |
             grep -E '^nbs/[^/]+\.ipynb$' | sort -u | while read -r f; do [ -f "$f" ] && basename "$f" .ipynb; done)"
  if [ -z "$changed" ]; then
    step "nbdev_test: no notebook differs from ${LLS_BASE:-main}"
  else
    step "nbdev_test of the notebooks that differ from ${LLS_BASE:-main}: $(echo $changed)"
    nbdev_test --n_workers 2 --timing --path nbs --file_re "^($(echo $changed | tr ' ' '|'))\.ipynb$"
  fi
  step "quick checks passed; the full run: bash tests/check.sh"
  exit 0
fi

step "nbdev_test"
nbdev_test --n_workers 2 --timing

# pytest on 3 workers (pytest-xdist): one mostly waits for the Slurm cluster, two keep the 2 cores busy; a module
# runs on one worker (`--dist loadscope`: its module fixtures are built once), in conftest.py's order (longest
# first, not xdist's reordering by test count). Tests marked `slow` (torch.compile's inductor backend, ~3 min) are left out: `-m slow`
# runs only them, `-m "slow or not slow"` everything; `-n 0` runs in one process; other arguments go to pytest.
step "pytest tests/ on ${LLS_TEST_WORKERS:-3} workers"
set +e
python -m pytest tests/ -n "${LLS_TEST_WORKERS:-3}" --dist loadscope --no-loadscope-reorder -m "not slow" -ra --durations=25 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi
step "done: pytest exited $rc"
exit "$rc"

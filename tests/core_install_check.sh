#!/usr/bin/env bash
# The core install, as the README gives it (`pip install -e .`, no extras), in a fresh
# virtualenv outside the repository: train (which writes the report) -> evaluate ->
# predict on a test image, then every command that needs an extra must refuse with one
# line naming it and exit status 2. CI runs this after the test suite (.ci/run).
#
#   bash tests/core_install_check.sh      (PYTHON=python3.12 to pick the interpreter)
#
# torch is installed first at the version pinned in requirements.lock (the CPU build there):
# left to pip, pyproject's looser range would pull a multi-GB CUDA build. Needs the dataset
# where `fmnist train` finds it (run.sh setup puts it there). Fails loudly, exit status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON="${PYTHON:-python3}"
work=$(mktemp -d "${TMPDIR:-/tmp}/fmnist-core-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

step() { echo "core install check: [${SECONDS}s] $*" >&2; }
fail() {
    echo "core install check: FAILED: $*" >&2
    exit 1
}

torch_pin=$(grep -E '^torch==' requirements.lock) || fail "no torch== pin in requirements.lock"
step "virtualenv in $work with $torch_pin and fmnist, no extras"
"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
fmnist="$work/venv/bin/fmnist"
echo "$torch_pin" >"$work/constraints.txt"  # nothing below may move torch
"$py" -m pip install -q --disable-pip-version-check "$torch_pin" || fail "pip install $torch_pin"
"$py" -m pip install -q --disable-pip-version-check -c "$work/constraints.txt" -e "$repo" || fail "pip install -e $repo"

installed_torch=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
[ "torch==$installed_torch" = "$torch_pin" ] || fail "torch is $installed_torch, expected ${torch_pin#torch==}"
for module in cleanlab onnx onnxruntime fastapi uvicorn python_multipart prometheus_client tensorboard mlflow optuna sqlalchemy psycopg; do
    if "$py" -c "import $module" 2>/dev/null; then
        fail "$module is importable: this is not a core-only environment"
    fi
done

cd "$work"
no_traceback() {  # FILE WHAT
    if grep -q "Traceback" "$1"; then
        cat "$1" >&2
        fail "$2 printed a traceback"
    fi
}

step "fmnist train --subset 2000 --epochs 1 (with its report)"
"$fmnist" train --subset 2000 --epochs 1 --out run >train.out 2>train.err || {
    cat train.out train.err >&2
    fail "fmnist train exited $?"
}
no_traceback train.err "fmnist train"
[ -f run/model.safetensors ] && [ -f run/report.html ] && [ -f run/metrics.json ] || fail "fmnist train wrote no model, report or metrics"
[ "$(grep -c 'needs the analysis extra' train.err)" = 1 ] || {
    cat train.err >&2
    fail "fmnist train did not say once that the label-error section needs the analysis extra"
}
grep -q 'fmnist\[analysis\]' run/report.html || fail "the report does not name the analysis extra"

step "fmnist evaluate"
"$fmnist" evaluate run >evaluate.out 2>evaluate.err || {
    cat evaluate.out evaluate.err >&2
    fail "fmnist evaluate exited $?"
}
no_traceback evaluate.err "fmnist evaluate"
grep -q '^test accuracy' evaluate.out || fail "fmnist evaluate printed no test accuracy"

step "fmnist predict on a test image"
"$py" - <<'EOF' || fail "could not write a test image"
from PIL import Image

from fmnist.data import load

Image.fromarray(load("test", download=False, progress=False).images[0]).save("image.png")
EOF
"$fmnist" predict run image.png --raw --format json >predict.out 2>predict.err || {
    cat predict.out predict.err >&2
    fail "fmnist predict exited $?"
}
"$py" -c 'import json, sys; rows = json.load(open("predict.out")); sys.exit(not (len(rows) == 1 and rows[0]["label"]))' ||
    fail "fmnist predict gave no prediction: $(cat predict.out)"

refuses() {  # EXPECTED-FRAGMENT COMMAND...: exit 2 and one line "fmnist: error: ...FRAGMENT..."
    local expected=$1 status=0
    shift
    "$fmnist" "$@" >refusal.out 2>refusal.err || status=$?
    [ "$status" = 2 ] || fail "fmnist $* exited $status, expected 2: $(cat refusal.err)"
    [ "$(wc -l <refusal.err)" = 1 ] || fail "fmnist $* printed more than one line: $(cat refusal.err)"
    grep -qF "fmnist: error: " refusal.err && grep -qF -- "$expected" refusal.err ||
        fail "fmnist $*: expected '$expected', got: $(cat refusal.err)"
}
step "commands that need an extra refuse in one line"
refuses "fmnist serve needs the serve extra (install fmnist[serve]" serve run
refuses "needs the serve extra (install fmnist[serve]" serve run --workers 2 --port 0
refuses "needs the serve extra (install fmnist[serve]" serve run --backend onnxruntime
refuses "fmnist export --format onnx needs the export extra (install fmnist[export]" export run --format onnx --out model.onnx
refuses "needs the export extra (install fmnist[export]" export run --format onnx --int8 --out model.int8.onnx
refuses "fmnist predict --backend onnxruntime needs the export extra (install fmnist[export]" predict run image.png --backend onnxruntime
refuses "needs the analysis extra (install fmnist[analysis]" analyze run
refuses "fmnist train --log tensorboard needs the tensorboard extra (install fmnist[tensorboard]" train --log tensorboard --out tracked
refuses "fmnist train --log mlflow needs the mlflow extra (install fmnist[mlflow]" train --log mlflow --out tracked
refuses "fmnist tune needs the tune extra (install fmnist[tune]" tune space.yaml --out study
[ ! -e tracked ] || fail "a refused --log trained a run"
[ ! -e model.onnx ] && [ ! -e model.int8.onnx ] || fail "a refused export wrote a file"
step "passed"

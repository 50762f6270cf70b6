#!/usr/bin/env bash
# Checks ganforge on a CUDA machine: the test suite with the GPU tests, the default digits job
# and an MNIST run on the GPU, with wall times, the training seconds to an MNIST Fréchet
# distance of 100, then the DCGAN-64 throughput against the textbook loop (bf16,
# channels_last, fused Adam; eager, then CUDA graphs via compile=graphs).
# Needs torch with CUDA; installs nothing.
# Usage: benchmarks/gpu_check.sh OUT_DIR [MNIST_FOLDER]
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [MNIST_FOLDER]}
mnist=${2:-../shared/data/mnist}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$out"
runs=$(mktemp -d)
{
  nvidia-smi -L
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  python3 -m pytest -m "gpu or not slow" -p no:cacheprovider 2>&1 | tail -4
  for job in "digits:--data digits" "mnist:--data mnist:$mnist --steps 3000"; do
    name=${job%%:*}
    TIMEFORMAT="$name: wall %R s"
    time python3 -m ganforge train ${job#*:} --out "$runs/$name" --device cuda --quiet
    tail -n 1 "$runs/$name/metrics.jsonl"
    cp "$runs/$name/samples/final.png" "$out/${name}_final.png"
  done
  TIMEFORMAT="time to quality mnist (FD <= 100): wall %R s"
  time python3 benchmarks/time_to_quality.py --case mnist --mnist "$mnist" --fd 100 --device cuda \
    --json "$out/time_to_quality_mnist.json"
  for compile in off graphs; do
    TIMEFORMAT="throughput dcgan64 compile=$compile: wall %R s"
    time python3 benchmarks/throughput.py --case dcgan64 --device cuda --precision bf16 --channels_last on \
      --compile "$compile" --rounds 3 --seconds 1 --json "$out/throughput_dcgan64_$compile.json"
  done
} 2>&1 | tee "$out/gpu_check.log"

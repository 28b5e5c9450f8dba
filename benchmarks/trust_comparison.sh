#!/usr/bin/env bash
# Issue 13's GPU comparison: every policy on the same azure_conv requests at one load.
#   bash benchmarks/trust_comparison.sh RATE [NUM_REQUESTS] [extra overrides...]
# Needs HARNESS_TRACES pointing at a folder with AzureLLMInferenceTrace_conv.csv.
set -euo pipefail
rate=${1:?rate in req/s}; n=${2:-600}; shift $(( $# > 1 ? 2 : 1 ))
python scripts/compare_policies.py \
  --policies 'fcfs,prefill_priority,decode_priority,chunked_prefill,chunked_prefill:budget.max_num_batched_tokens=8192,preempt_cpu,static' \
  engine=cuda workload=azure_conv workload.max_requests="$n" workload.target_rate="$rate" \
  logger=none "$@"

#!/usr/bin/env bash
# The main job on the embedded demo data: demo source → shards → a small ablation study (baseline and no_lrn,
# three seeds each) on the CPU, each job ending with its 10-crop eval → every run in MLflow (./mlflow.db) → the
# ablation table with 95% intervals → the link that opens the study's curves in the MLflow UI. `make demo` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${VENV:-.venv}/bin/python
study=${DEMO_STUDY:-demo-$(date +%Y%m%d-%H%M%S)}
seeds=${DEMO_SEEDS:-1,2,3}  # three: with two per experiment Welch's interval has 1-2 degrees of freedom

echo "== 1/3 demo data: digits on real ImageNet photos, in ImageNet's layout, packed into shards"
"$py" -m data_prep.demo out=demo
"$py" -m data_prep.verify out=demo/shards

echo "== 2/3 the study: baseline and no_lrn, seeds $seeds (study tag: $study)"
"$py" -m pipeline.train -m profile=demo +experiment=baseline,no_lrn seed="$seeds" study="$study"

echo "== 3/3 the ablation table (also logged as a report run, with figures), and the study in the MLflow UI"
"$py" -m pipeline.compare study="$study" out="reports/$study"
# Each change is shown with its paired interval (the seeds are pairs: same weights, same data stream) and
# Welch's beside it; the same table in Markdown, for docs/ablations.md:
echo "Markdown table (paired and Welch intervals): reports/$study/table.md"

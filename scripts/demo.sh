#!/usr/bin/env bash
# The main job on the embedded demo data: demo source → shards → a small ablation study (baseline and no_lrn,
# two seeds each) on the CPU → every run in MLflow (./mlflow.db) → the ablation table. `make demo` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${VENV:-.venv}/bin/python
study=${DEMO_STUDY:-demo-$(date +%Y%m%d-%H%M%S)}

echo "== 1/3 demo data: digits on real ImageNet photos, in ImageNet's layout, packed into shards"
"$py" -m data_prep.demo out=demo
"$py" -m data_prep.verify out=demo/shards

echo "== 2/3 the study: baseline and no_lrn, seeds 1 and 2 (study tag: $study)"
"$py" -m pipeline.train -m profile=demo +experiment=baseline,no_lrn seed=1,2 study="$study"

echo "== 3/3 the ablation table (also logged as a report run, with figures)"
"$py" -m pipeline.compare study="$study" out="reports/$study"

cat <<MSG

Open the runs in the MLflow UI (filter: tags.study = "$study", select the runs, press Compare):
  ${VENV:-.venv}/bin/mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db --host 127.0.0.1 --port 5000
MSG

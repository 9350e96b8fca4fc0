"""Evaluate a model id, local folder or MLflow run's checkpoint; results go to MLflow.

    python evals/evaluate.py configs/eval/quick.yaml model=smollm2-135m
    python evals/evaluate.py configs/eval/acceptance.yaml

Same as ``emo-ray eval``.
"""
import sys

from emo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))

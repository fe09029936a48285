"""Train the sample iris classifier and write ``model.joblib`` beside this file (if absent).

Uses scikit-learn's bundled iris data set (no network). Run ``python train.py`` once, or let
``gateways.mlserver_process.MLServerProcess`` run it when the artifact is missing. ``--force``
retrains (e.g. after a scikit-learn upgrade makes the old pickle unreadable).
"""
from __future__ import annotations

import sys
from pathlib import Path

ARTIFACT = Path(__file__).resolve().parent / "model.joblib"


def train(path: Path = ARTIFACT, force: bool = False) -> Path:
    if path.exists() and not force:
        return path
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    tmp = path.with_suffix(".tmp")
    joblib.dump(model, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return path


if __name__ == "__main__":
    print(train(force="--force" in sys.argv[1:]))

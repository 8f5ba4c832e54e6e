"""The seed's serving stack, as a baseline for the load test: FastAPI + scikit-learn MLPClassifier.

    python -m benchmarks.fastapi_sklearn --data data/classification_data.csv --target label [--port 8001]

Fits ``StandardScaler`` + ``MLPClassifier(hidden_layer_sizes=(128, 64))`` on (up to
``--train-rows``) rows of the CSV at start-up, then serves on uvicorn (its defaults: uvloop
and httptools when installed, as ours):

- ``POST /predict`` ``{"features": [numbers]}`` -> ``{"label": .., "probabilities": [..], "classes": [..]}``
  (one row; a pydantic body, as a FastAPI service is usually written);
- ``GET /health``.

Only for benchmarks: it exists so :mod:`benchmarks.serve_load` can compare our service with
the stack it replaced in the same run, on the same machine, with the same client.
"""

import argparse
import warnings

import numpy as np


def build(data: str, target: str, train_rows: int, max_iter: int):
    import pandas as pd
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = pd.read_csv(data, nrows=train_rows)
    y = frame.pop(target).to_numpy()
    x = frame.to_numpy(np.float64)
    model = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=max_iter, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    width = x.shape[1]

    class PredictRequest(BaseModel):
        features: list[float]

    class PredictResponse(BaseModel):
        label: int | str
        probabilities: list[float]
        classes: list[int | str]

    app = FastAPI()

    @app.post("/predict", response_model=PredictResponse)
    def predict(req: PredictRequest) -> PredictResponse:
        if len(req.features) != width:
            from fastapi import HTTPException

            raise HTTPException(422, f"expected {width} features, got {len(req.features)}")
        proba = model.predict_proba(np.asarray([req.features], dtype=np.float64))[0]
        return PredictResponse(label=classes[int(proba.argmax())], probabilities=proba.tolist(), classes=classes)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fastapi_sklearn", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--target", default="label")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--train-rows", type=int, default=5_000)
    p.add_argument("--max-iter", type=int, default=10)
    args = p.parse_args(argv)
    import uvicorn

    app = build(args.data, args.target, args.train_rows, args.max_iter)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serve the deployments of prefect.yaml from this process (needs ``prefect server start`` running)."""

from __future__ import annotations

from prefect import serve

from flows.chain import retrain_flow
from flows.generate import generate_flow

if __name__ == "__main__":
    serve(
        generate_flow.to_deployment(
            name="nightly-generation",
            cron="0 2 * * *",
            parameters={"num_samples": 200000, "class_targets": {"bicycle": 2.0}},
        ),
        retrain_flow.to_deployment(name="weekly-retrain", cron="0 3 * * 0"),
    )

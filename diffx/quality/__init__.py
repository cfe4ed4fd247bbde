"""Quality gates: per-sample statistics, great_expectations suites and the gate runner."""

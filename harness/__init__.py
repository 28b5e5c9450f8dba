"""The serving-scheduler research harness: engine, run, metrics, results."""

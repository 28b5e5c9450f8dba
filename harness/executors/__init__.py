"""Executors run one flat batch: the model on cuda or cpu (`model_runner`)."""

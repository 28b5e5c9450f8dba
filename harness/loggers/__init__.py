"""Where a run's results go: local files (always the source of truth), W&B, or nowhere."""

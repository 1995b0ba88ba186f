"""kaggle-orchestrate: run long training on Kaggle across many sessions without losing work."""

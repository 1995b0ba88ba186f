"""A local stand-in for Kaggle's kernels API that really runs the kernels it is sent."""

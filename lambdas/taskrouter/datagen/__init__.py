"""Synthetic data for evaluation and training (`taskrouter data generate`); never in a Lambda."""

"""Experiments: one absl-flag module per question the project answers, configs in `configs/`."""

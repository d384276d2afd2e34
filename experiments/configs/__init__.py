"""Experiment configs (ml_collections ConfigDicts, selected as `file.py:variant`)."""

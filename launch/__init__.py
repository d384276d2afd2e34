"""Launchers: sweeps, reports, many devices and hosts. Knows nothing about models."""

"""Composition root: settings, clients, the worker and the `trading` command line."""

"""Scenario strategies: one module per scenario of the source document, each with pure
decision functions and `install(app, pipeline)` (see app/strategies.py, docs/scenarios.md)."""

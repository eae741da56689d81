"""Scenario strategies: one module per scenario of the source document, each with pure
decision functions and `install(app, services)` (see app/pipeline/strategy.py and
docs/scenarios.md)."""

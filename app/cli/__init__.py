"""The `recovery` command line: the group in main.py, one module per verb."""

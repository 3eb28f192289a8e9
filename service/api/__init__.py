"""The HTTP gateway (FastAPI): jobs, STOW-RS, health and metrics. Imports no torch and no task code."""

"""The torch-free job layer every process stands on: the job contract (``options``), the manifest, the job store,
claims and leases, the queue's names and Celery configuration, and the settings all processes share.

Imports ``dicomrt``, pydantic and Celery (configuration only); never ``model``, ``workers``, ``service``, torch or
fastapi (import-linter contracts in pyproject.toml keep it so).
"""

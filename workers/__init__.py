"""Celery worker and the job pipeline (see ARCHITECTURE.md). Built in the service issue."""

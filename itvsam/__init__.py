"""The ``itvsam`` command, split by command group: the only package that imports every other one.

- ``common``: the Typer app, consoles, exit codes, output folder checks, progress bars, settings errors;
- ``study_commands``: ``phantom``, ``inspect``, ``contour`` (the DICOM core, no model);
- ``engine_commands``: ``run``, ``merge``, ``train``, ``eval``, ``demo`` (SAM 3; torch is imported by the command);
- ``service_commands``: ``serve``, ``worker``, ``submit``, ``apikey``;
- ``dicom_commands``: ``scp``, ``submit-dir``, ``echo``;
- ``demo``: the demo's pipeline run and scoring; ``cli``: the entry point that registers the groups.

Commands import what only they need inside their function (torch, uvicorn, Celery), so ``itvsam inspect`` starts
without loading torch and the gateway image, which has no torch, can run ``itvsam serve``.
"""

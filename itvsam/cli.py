"""The ``itvsam`` entry point (``[project.scripts]``): the app with every command group registered."""

from __future__ import annotations

from itvsam import dicom_commands, engine_commands, model_commands, service_commands, study_commands
from itvsam.common import app

COMMAND_GROUPS = (study_commands, engine_commands, model_commands, service_commands, dicom_commands)

__all__ = ["COMMAND_GROUPS", "app"]

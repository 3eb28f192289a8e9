"""Gateway, job store, DICOM listener and the ``itvsam`` command line (never imports torch or ``model``)."""

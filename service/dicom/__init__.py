"""DICOM networking: the C-STORE listener (``itvsam scp``), the 4DCT-aware study collector, and delivery of results
to planning systems (C-STORE back, C-ECHO checks).

Modules: ``peers`` (allow-list and destinations, pure), ``collector`` (instances on disk, grouped by study, and when a
study is ready), ``scp`` (the pynetdicom Storage/Verification SCP and its event handlers), ``delivery`` (sending
outputs with retries, the delivery loop, C-ECHO). Only ``scp`` and ``delivery`` import pynetdicom.
"""

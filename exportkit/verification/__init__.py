"""Verification, in one place: an export is reloaded in a fresh process and its outputs compared
with the source model's.

- ``cases``: the inputs each graph is run on (``verify.inputs``' real examples, or generated).
- ``compare``: outputs against the source's, within tolerances, top-1 agreement.
- ``protocol``: the typed request and reply between the exporting and the verification process.
- ``worker``: the verification process itself (``python -m exportkit.verification.worker``).
- ``process``: that process seen from the exporting side (``Verifier``: started early, shared by a
  sweep or a ``shared_verifier()`` block, replaced when it dies or hangs).
- ``latency``: the latency the process measures, as recorded and told.
- ``kept``: the cases kept inside an export (``assets.extra/``).
- ``check``: verifying the export being made (the verify stage's work).
- ``existing``: verifying an export that already exists (``exportkit verify PATH``).
"""

"""Where manifests come from: a directory, one manifest file, or a revision of a git repository.

A source yields a ``Snapshot``: a directory or file to read plus the revision it represents.
What a SOURCE argument is, and which forms are refused, is decided in one place
(:func:`classify`); every URL shown or stored goes through one redaction (:func:`redact`).
Sources know nothing of what the manifests mean.
"""

from reconciler.sources.kinds import Kind, SourceError, SourceRef, classify
from reconciler.sources.redact import redact, shown
from reconciler.sources.snapshot import Snapshot, open_source

__all__ = [
    "Kind",
    "Snapshot",
    "SourceError",
    "SourceRef",
    "classify",
    "open_source",
    "redact",
    "shown",
]

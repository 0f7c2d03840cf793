"""Where manifests come from: a directory, or a revision of a git repository.

A source yields a ``Snapshot``: a directory to read plus the revision it represents. Sources know
nothing of what the manifests mean.
"""

from reconciler.sources.snapshot import Snapshot, SourceError, open_source

__all__ = ["Snapshot", "SourceError", "open_source"]

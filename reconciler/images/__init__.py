"""Bytecode from container images: references, a registry client that trusts nothing it
downloads, a content-addressed cache, and bpfman's image format (labels plus one layer with the
ELF object at its root).

The parts, each in its own module:

- :mod:`~reconciler.images.reference`: what ``quay.io/org/prog:v1@sha256:...`` names;
- :mod:`~reconciler.images.content`: media types, descriptors and the bounds on every document;
- :mod:`~reconciler.images.store`: the cache (blobs by digest, what each tag resolved to);
- :mod:`~reconciler.images.remote`: talking to a registry (oras for the protocol and its auth),
  every byte checked against its digest and size before it is kept;
- :mod:`~reconciler.images.layout`: bpfman's image format, read (platform choice, labels, the
  ELF out of the layer) and written (``bpfman image build``);
- :mod:`~reconciler.images.pull`: the pull policies, tying the above together.

Nothing here knows about manifests or the kernel.
"""

from reconciler.images.errors import ImageError

__all__ = ["ImageError"]

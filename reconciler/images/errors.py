"""The one error of the images package."""

from __future__ import annotations


class ImageError(Exception):
    """An image cannot be used; the message names the reference (or registry) and what to do."""


class NotFound(ImageError):
    """The registry has no such manifest or blob (HTTP 404)."""

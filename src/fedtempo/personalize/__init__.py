"""Pruning masks and global/personal parts (SPEC section E)."""

from fedtempo.personalize.masks import (
    MaskedUpload,
    kept_count,
    last_layer,
    magnitude_mask,
    masked_average,
    personal_mask,
    upload_bytes,
)

__all__ = [
    "MaskedUpload",
    "kept_count",
    "last_layer",
    "magnitude_mask",
    "masked_average",
    "personal_mask",
    "upload_bytes",
]

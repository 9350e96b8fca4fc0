"""Corpora -> packed token blocks (``prepare_blocks``) -> Ray Data for the workers."""
from emo_ray.data.packing import PackedData, prepare_blocks
from emo_ray.data.sources import DataError, read_documents

__all__ = ["DataError", "PackedData", "prepare_blocks", "read_documents"]

"""File writing helpers shared by osteonet: every file is written whole or not at all."""

from .atomic import atomic_write, write_json, write_text, write_with

__all__ = ["atomic_write", "write_json", "write_text", "write_with"]

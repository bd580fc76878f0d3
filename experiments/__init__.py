"""Experiments of gcnjax (scripts; not part of the library)."""

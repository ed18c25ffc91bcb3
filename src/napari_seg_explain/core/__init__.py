"""Core engine: no Qt, no napari. Usable from scripts, the CLI, notebooks and batch jobs."""

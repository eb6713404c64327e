"""DVC projects, read to import them (``tether import dvc``)."""

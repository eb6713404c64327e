"""Holds ``sitecustomize.py``, which ``tether run`` puts on the child's PYTHONPATH. This
folder is never imported as a package by tether itself."""

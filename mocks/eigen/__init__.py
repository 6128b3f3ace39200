"""Mock family "eigen": its own readers, physics and instrument (see mocks/family_eigen.py)."""

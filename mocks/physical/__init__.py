"""Mock family "physical": spectra built from first principles (see mocks/family_physical.py)."""

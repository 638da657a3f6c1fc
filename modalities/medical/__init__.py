"""CT and MR adapters: DICOM series and NIfTI volumes to HU-windowed or z-scored tiles."""

"""domainclust's bundled modality adapters (registered through `domainclust.modalities`).

Not the unrelated PyPI project of the same import name: everything here is domainclust's.
"""

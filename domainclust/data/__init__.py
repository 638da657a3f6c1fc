"""Tiles on disk: the TileStore, ingest (serial and on Dask), the adapters' interface, channel names and how stored tiles become network input."""

"""Multi-band GeoTIFF adapter: band selection, dataset statistics, nodata-aware tiles."""

"""Photograph adapters: RGB image folders and RGB + depth pairs."""

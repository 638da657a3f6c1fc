"""Reproducing the paper: its reference recipes by name, readers for the reference dataset
layouts (ImageNet, Places365, VOC2007, image folders), a runner that ingests, pretrains and
evaluates a recipe in one run dir, and the comparison of our figures with the paper's.
"""

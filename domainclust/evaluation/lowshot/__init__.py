"""The low-shot experiment: frozen features or fine-tuning on a few labelled tiles, against what a practitioner tries first."""

"""PASCAL VOC 2007 classification: the layout reader, images, protocols."""

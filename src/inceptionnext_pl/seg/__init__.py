"""Semantic segmentation networks (smp decoders), backbone transfer and overlays."""

"""Segmentation models: backbones, PSP / aux heads, the (group) context module, discriminators."""

"""pss: personalized semantic segmentation workbench (engine).

Adapts a segmentation model trained on labelled PASCAL VOC to one person's unlabelled photos, with the
PSS method (ICCV 2021) and the baselines it compares against. See README.md and DESIGN.md.
"""
__version__ = "0.1.0"

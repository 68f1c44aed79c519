"""Datasets: label space, the PSS and VOC layouts, the embedded demo, transforms, loaders, the dataset doctor."""

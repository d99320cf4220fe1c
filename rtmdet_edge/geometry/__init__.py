"""Box geometry in torch: priors, distance coding, IoU/GIoU (rotated boxes and masks go beside it)."""

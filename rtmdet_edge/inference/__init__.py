"""Inference: pre-processing, decoding + NMS, the Detector, drawing, and `predict`."""

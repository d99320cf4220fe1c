"""Heads, one file each: detection (RTMDetSepBNHead); instance masks and rotated boxes go beside it."""

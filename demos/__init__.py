"""Camera and video demo scripts, and the drawing shared with `rtmdet-edge predict`."""

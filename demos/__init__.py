"""Camera and video demo scripts (plain scripts; drawing lives in rtmdet_edge.inference.draw)."""

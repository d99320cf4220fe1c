"""The network: layers, blocks (dw5/dw3/dw7 and the re-parameterised rep3/qarep3), CSPNeXt, CSPNeXtPAFPN, heads, build_model and fuse."""

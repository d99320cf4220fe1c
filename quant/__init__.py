"""INT8 quantization (PTQ, QAT, sensitivity analysis). Not implemented in this version yet: `rtmdet-edge quantize`
and `rtmdet-edge gap` say so and exit with code 2."""

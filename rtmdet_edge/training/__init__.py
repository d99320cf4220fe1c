"""Training: dynamic soft-label assigner, losses and criterion, optimiser/LR schedule, EMA, the epoch engine, `train`."""

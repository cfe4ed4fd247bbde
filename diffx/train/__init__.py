"""Training loops (CPU, one GPU, many processes through torchrun/accelerate), checkpoints and EMA."""

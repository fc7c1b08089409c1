import torch

# Two cores are shared by the whole suite; more threads only add contention.
torch.set_num_threads(2)

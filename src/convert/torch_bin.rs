//! (being written) Reader for PyTorch zip checkpoints (`pytorch_model.bin`).

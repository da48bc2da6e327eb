"""Reusable layers: ConvLSTM, residual up/down blocks, shape checks."""

from kinema.nn.blocks import DisBlock3d, OptimizedDisBlock3d, UpBlock2d, downsample3d
from kinema.nn.convlstm import ConvLSTM, ConvLSTMCell
from kinema.nn.shapes import assert_shape

__all__ = [
    "ConvLSTM",
    "ConvLSTMCell",
    "DisBlock3d",
    "OptimizedDisBlock3d",
    "UpBlock2d",
    "assert_shape",
    "downsample3d",
]

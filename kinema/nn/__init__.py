"""Reusable layers: ConvLSTM, residual up/down blocks, shape checks."""

from kinema.nn.batch import BatchRows
from kinema.nn.blocks import DisBlock3d, OptimizedDisBlock3d, UpBlock2d, downsample3d
from kinema.nn.convlstm import ConvLSTM, ConvLSTMCell
from kinema.nn.shapes import assert_shape
from kinema.nn.sync_batchnorm import DistributedBatchNorm, convert_batchnorm

__all__ = [
    "BatchRows",
    "ConvLSTM",
    "ConvLSTMCell",
    "DisBlock3d",
    "DistributedBatchNorm",
    "OptimizedDisBlock3d",
    "UpBlock2d",
    "assert_shape",
    "convert_batchnorm",
    "downsample3d",
]

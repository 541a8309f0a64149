"""LightningDataModules over in-memory tensors: digits, moons, function, regression, idx, volumes,
adding."""

from reglab.data.adding import AddingDataModule
from reglab.data.base import TensorDataModule
from reglab.data.digits import DigitsDataModule
from reglab.data.idx import IdxDataModule, read_idx
from reglab.data.images import ImageDataModule
from reglab.data.synthetic import FunctionDataModule, MoonsDataModule, RegressionDataModule
from reglab.data.volumes import VolumesDataModule

__all__ = [
    "AddingDataModule",
    "DigitsDataModule",
    "FunctionDataModule",
    "IdxDataModule",
    "ImageDataModule",
    "MoonsDataModule",
    "RegressionDataModule",
    "TensorDataModule",
    "VolumesDataModule",
    "read_idx",
]

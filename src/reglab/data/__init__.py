"""LightningDataModules over in-memory tensors: digits, moons, function, regression, idx, volumes,
adding, the real data sets cifar10, cifar100, svhn, mnist, fashion_mnist, kmnist, image folders
(streamed when too large for memory), tables from CSV/Parquet, and the bundled tables
breast_cancer, iris, wine."""

from reglab.data.adding import AddingDataModule
from reglab.data.base import TensorDataModule
from reglab.data.cifar import Cifar10DataModule, Cifar100DataModule
from reglab.data.digits import DigitsDataModule
from reglab.data.idx import IdxDataModule, read_idx
from reglab.data.image_folder import ImageFolderDataModule
from reglab.data.images import ImageDataModule
from reglab.data.mnist import MnistFamilyDataModule
from reglab.data.photos import PhotoDataModule
from reglab.data.svhn import SvhnDataModule
from reglab.data.synthetic import FunctionDataModule, MoonsDataModule, RegressionDataModule
from reglab.data.tables import TableDataModule
from reglab.data.tabular import TabularDataModule
from reglab.data.volumes import VolumesDataModule

__all__ = [
    "AddingDataModule",
    "Cifar100DataModule",
    "Cifar10DataModule",
    "DigitsDataModule",
    "FunctionDataModule",
    "IdxDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MnistFamilyDataModule",
    "MoonsDataModule",
    "PhotoDataModule",
    "RegressionDataModule",
    "SvhnDataModule",
    "TableDataModule",
    "TabularDataModule",
    "TensorDataModule",
    "VolumesDataModule",
    "read_idx",
]

"""Write .gpu/cifar15k.npz: the first 15,000 training and 4,000 test images of the CIFAR-10
copy in ../shared/data, read through grownet (so `npz:.gpu/cifar15k.npz` gives the very
tensors `cifar10` with data.limit_train 15000 / data.limit_test 4000 gives; checked with
torch.equal). The whole CIFAR-10 set does not fit the device tool's 64 MiB working tree."""

from pathlib import Path

import numpy as np

from grownet.data import load_dataset

ds = load_dataset("cifar10", data_dir="../shared/data", limit_train=15000, limit_test=4000)
Path(".gpu").mkdir(exist_ok=True)
np.savez_compressed(".gpu/cifar15k.npz", x_train=ds.x_train.numpy(), y_train=ds.y_train.numpy(), x_test=ds.x_test.numpy(),
                    y_test=ds.y_test.numpy(), classes=np.array(ds.classes))

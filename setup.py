"""The packages of the wheel: those under src/, and the top-level conf/ as reglab.conf.

pyproject.toml holds everything else. Its `packages.find` cannot add a package that lives
outside its search folders, and conf/ stays at the top level (no second copy of the configs):
Hydra finds them as `pkg://reglab.conf` from an editable install and from a built wheel.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages("src", include=["reglab*", "hydra_plugins*"]),
        "reglab.conf",
    ],
    package_dir={"": "src", "reglab.conf": "conf"},
)

"""Package discovery; the metadata lives in pyproject.toml.

The adapters (`modalities/`) and the recipes (`recipes/`) sit at the top of the repository but
install inside the `domainclust` namespace: `modalities` is another PyPI project's import name.
Every subpackage below these folders is found, so none can be left out of a wheel.
"""

from setuptools import find_packages, setup

MAPPED = {"domainclust.modalities": "modalities", "domainclust.recipes": "recipes"}


def packages() -> list[str]:
    found = find_packages(include=["domainclust", "domainclust.*"])
    for name, folder in MAPPED.items():
        found += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]
    return found


setup(packages=packages(), package_dir=MAPPED)

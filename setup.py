"""Packaging from settings.ini (the nbdev 2 template): one place for name, version and requirements."""
from configparser import ConfigParser

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
tensorboard_requirements = cfg.get("tensorboard_requirements", "").split()
prune_requirements = cfg.get("prune_requirements", "").split()
scripts = [s.strip() for s in cfg.get("console_scripts", "").split("\n") if s.strip()]

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license="Apache-2.0",
    url=cfg["git_url"],
    keywords=cfg["keywords"],
    python_requires=">=" + cfg["min_python"],
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    include_package_data=True,
    # The job notebooks (`nbs/train.ipynb`, `nbs/validate_metrics.ipynb`) ship inside the package: the files in
    # loss_lin_slope/notebooks/ are symlinks to nbs/ (one source), copied as real files into the wheel.
    package_data={cfg["lib_name"]: ["notebooks/*.ipynb"]},
    install_requires=requirements,
    extras_require={"dev": dev_requirements, "tensorboard": tensorboard_requirements, "prune": prune_requirements},
    entry_points={"console_scripts": scripts, "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)

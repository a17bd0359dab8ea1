"""Installs nnunet_mm next to upstream nnU-Net v2.

Besides the library, the install drops ``nnunet_mm_ext.pth`` into site-packages. Python runs it at start-up; it
appends the folder with our trainer shims to ``nnUNet_extTrainer`` (keeping any value the user set), which is how
nnU-Net 2.8 finds trainers that live outside its own package. See ``_nnunet_mm_ext.py``.
"""
from __future__ import annotations

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH_NAME = "nnunet_mm_ext.pth"


class BuildPyWithPth(build_py):
    """Copies the start-up hook ``nnunet_mm_ext.pth`` to the root of the built library (non-editable installs)."""

    def run(self) -> None:
        super().run()
        self.copy_file(os.path.join(HERE, PTH_NAME), os.path.join(self.build_lib, PTH_NAME), preserve_mode=0)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return list(super().get_outputs(include_bytecode)) + [os.path.join(self.build_lib, PTH_NAME)]


cmdclass = {"build_py": BuildPyWithPth}

try:  # setuptools >= 64: PEP 660 editable installs ("pip install -e .") need the hook too
    from setuptools.command.editable_wheel import editable_wheel

    class EditableWheelWithPth(editable_wheel):
        """Adds the start-up hook to editable wheels, which otherwise carry only the path finder."""

        def _create_wheel_file(self, bdist_wheel):  # noqa: ANN001 - setuptools' own signature
            wheel_path = super()._create_wheel_file(bdist_wheel)
            import zipfile

            from wheel.wheelfile import WheelFile

            with zipfile.ZipFile(wheel_path) as existing:
                if PTH_NAME in existing.namelist():
                    return wheel_path
            with WheelFile(wheel_path, "a") as wheel_file:
                wheel_file.write(os.path.join(HERE, PTH_NAME), PTH_NAME)
            return wheel_path

    cmdclass["editable_wheel"] = EditableWheelWithPth
except ImportError:  # pragma: no cover - very old setuptools
    pass

library_packages = find_packages(include=["nnunet_mm", "nnunet_mm.*"])
setup(
    name="nnunet_mm",
    version="0.1.0",
    description="Multimodal (misregistered, missing, unlabeled) segmentation as an nnU-Net v2 plugin",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=library_packages + ["nnunet_mm.trainers", "nnunet_mm.planners", "nnunet_mm.dataset_conversion"],
    package_dir={
        "nnunet_mm.trainers": "trainers",
        "nnunet_mm.planners": "planners",
        "nnunet_mm.dataset_conversion": "dataset_conversion",
    },
    py_modules=["_nnunet_mm_ext"],
    install_requires=[
        "torch>=2.1",
        "nnunetv2>=2.8.1,<2.9",
        "batchgenerators>=0.25",
        "batchgeneratorsv2>=0.3",
        "dynamic-network-architectures>=0.4",
        "acvl-utils>=0.2",
        "SimpleITK>=2.3",
        "numpy",
        "scipy",
        "tqdm",
        "matplotlib",
        "monai>=1.4",  # generative blocks (autoencoder, diffusion UNet, schedulers), registration warps
        "scikit-image",  # Otsu / watershed for pseudo masks
        "connected-components-3d",  # cc3d: lesion-wise detection in nnunet_mm compare
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "filelock"]},  # make test: 2 workers sharing fixtures
    entry_points={
        "console_scripts": ["nnunet_mm=nnunet_mm.cli.main:main"],
        # each method package registers its keys of the dataset.json "nnunet_mm" block (nnunet_mm.settings)
        "nnunet_mm.settings": [f"{method} = nnunet_mm.{method}.settings"
                               for method in ("cmg", "cmc", "synthesis", "weak", "atlas")],
    },
    cmdclass=cmdclass,
)

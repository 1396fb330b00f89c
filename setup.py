"""Build script for i2f_fast.

The compiled extensions (``i2f_fast._C`` for C++/OpenMP CPU kernels and ``i2f_fast._C_cuda``) are
added by the compiled-spine work; until then the package is pure Python and every op runs its
reference kernel.  Install for development with::

    pip install --no-build-isolation -e .
"""
from setuptools import find_packages, setup

setup(
    name="i2f_fast",
    version="0.1.0",
    description="Fast Inversion Influence Function (I²F): how much private data leaks through shared gradients",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["i2f_fast", "i2f_fast.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4,<3",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "scikit-image>=0.21",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pytorch-msssim>=1.0,<2",
    ],
    extras_require={"test": ["pytest>=7"], "datasets": ["torchvision"], "lpips": ["lpips>=0.1.4"]},
    entry_points={"console_scripts": ["i2f-fast = i2f_fast.cli:main"]},
)

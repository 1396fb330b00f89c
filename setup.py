"""Build script for i2f_fast: the Python package plus its compiled kernels.

Extensions (DESIGN.md §3):

- ``i2f_fast._C``: C++17/OpenMP CPU kernels (``csrc/cpu``), built whenever torch is importable.
- ``i2f_fast._C_cuda``: CUDA kernels (``csrc/cuda``), built when the installed torch has CUDA and
  ``nvcc`` is found.

Environment variables:

- ``I2F_FAST_NO_EXT=1``: pure-Python install; every op runs its reference (or Triton) kernel.
- ``I2F_FAST_CUDA=auto|0|1`` (default ``auto``): ``1`` fails the build when CUDA cannot be built.
- ``TORCH_CUDA_ARCH_LIST``: CUDA architectures; when unset and no GPU is visible (build hosts),
  ``DEFAULT_CUDA_ARCHS`` is used.

Install for development (the build needs the torch that is already installed)::

    pip install --no-build-isolation -e .
"""
import glob
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
# sm_75 Turing, sm_80 Ampere (also runs on sm_86/sm_89), sm_90 Hopper; PTX for newer GPUs.
DEFAULT_CUDA_ARCHS = "7.5;8.0;9.0+PTX"
BUILD_CONFIG = ROOT / "i2f_fast" / "_build_config.py"


def _rel(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(str(ROOT / pattern)))


def _extensions():
    """Returns (ext_modules, cmdclass, facts); facts are written to i2f_fast/_build_config.py."""
    facts = {"torch": None, "cpu": "not built", "cuda": "not built", "cuda_archs": None}
    if os.environ.get("I2F_FAST_NO_EXT", "0") == "1":
        facts["cpu"] = facts["cuda"] = "not built: pure-Python install (I2F_FAST_NO_EXT=1)"
        return [], {}, facts
    # torch derives the toolkit from `which nvcc`, which a wrapper script in /usr/local/bin defeats.
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and Path("/usr/local/cuda/bin/nvcc").exists():
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        facts["cpu"] = facts["cuda"] = "not built: torch was not importable at build time"
        return [], {}, facts
    facts["torch"] = torch.__version__

    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    common = dict(include_dirs=[str(ROOT / "csrc" / "include")])
    ext_modules = [
        cpp_extension.CppExtension(
            "i2f_fast._C",
            ["csrc/python_module.cpp", "csrc/ops_cpu.cpp", *_rel("csrc/cpu/*.cpp")],
            define_macros=[("I2F_FAST_MODULE", "_C")],
            extra_compile_args={"cxx": ["-O3", "-fno-math-errno", *openmp]},  # errno-free sqrt vectorises
            extra_link_args=openmp,
            **common,
        )
    ]
    facts["cpu"] = "built"

    cuda_mode = os.environ.get("I2F_FAST_CUDA", "auto")
    if cuda_mode not in ("auto", "0", "1"):
        raise SystemExit(f"I2F_FAST_CUDA must be auto, 0 or 1, got {cuda_mode!r}")
    missing = []
    if not torch.version.cuda:
        missing.append(f"torch {torch.__version__} is a CPU-only build")
    if cpp_extension.CUDA_HOME is None:
        missing.append("nvcc not found (set CUDA_HOME)")
    elif not Path(cpp_extension.CUDA_HOME, "include", "cuda_runtime.h").exists():
        missing.append(f"CUDA_HOME={cpp_extension.CUDA_HOME} has no include/cuda_runtime.h (set CUDA_HOME)")
    if cuda_mode == "1" and missing:
        raise SystemExit("I2F_FAST_CUDA=1 but the CUDA extension cannot be built: " + "; ".join(missing))
    if cuda_mode == "0":
        facts["cuda"] = "not built: I2F_FAST_CUDA=0"
    elif missing:
        facts["cuda"] = "not built: " + "; ".join(missing)
    else:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        facts["cuda_archs"] = os.environ.get("TORCH_CUDA_ARCH_LIST") or "the visible GPU's"
        ext_modules.append(
            cpp_extension.CUDAExtension(
                "i2f_fast._C_cuda",
                ["csrc/python_module.cpp", "csrc/ops_cuda.cpp", *_rel("csrc/cuda/*.cu")],
                define_macros=[("I2F_FAST_MODULE", "_C_cuda")],
                extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
                **common,
            )
        )
        facts["cuda"] = "built"
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}
    return ext_modules, cmdclass, facts


def _write_build_config(facts: dict) -> None:
    BUILD_CONFIG.write_text(
        '"""Written by setup.py: what the last build compiled, and why not (read by i2f_fast._loader)."""\n'
        f"BUILD = {facts!r}\n"
    )


ext_modules, cmdclass, facts = _extensions()
_write_build_config(facts)

setup(
    name="i2f_fast",
    version="0.1.0",
    description="Fast Inversion Influence Function (I²F): how much private data leaks through shared gradients",
    long_description=open(ROOT / "README.md", encoding="utf-8").read(),
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
        "pyarrow>=14",
    ],
    extras_require={"test": ["pytest>=7"], "datasets": ["torchvision"], "lpips": ["lpips>=0.1.4"],
                    "dp": ["opacus>=1.4"], "flower": ["flwr>=1.42"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["i2f-fast = i2f_fast.cli:main"]},
)

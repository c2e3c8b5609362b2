"""Builds pyfastcnn's native extensions (_C, and _cuda when a CUDA compiler is found) with CMake.

Environment:
  PYFASTCNN_CUDA=1  require the CUDA module (fail if no CUDA compiler)
  PYFASTCNN_CUDA=0  never build it
  (unset)           build it when CMake finds a CUDA compiler
  PYFASTCNN_BUILD_TYPE  CMake build type (default Release)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _tool(module: str, attr: str, name: str) -> str:
    """Prefer the cmake/ninja wheels of the (isolated) build env, then PATH."""
    try:
        mod = __import__(module)
        path = Path(getattr(mod, attr)) / name
        if path.exists():
            return str(path)
    except (ImportError, AttributeError):
        pass
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"pyfastcnn build needs '{name}' (pip install {module})")
    return found


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        cmake = _tool("cmake", "CMAKE_BIN_DIR", "cmake")
        args = [
            f"-S{ROOT}",
            f"-B{build_temp}",
            "-G", "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja', 'BIN_DIR', 'ninja')}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('PYFASTCNN_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        cuda = os.environ.get("PYFASTCNN_CUDA", "")
        if cuda:
            args.append(f"-DPYFASTCNN_CUDA={'ON' if cuda not in ('0', 'OFF', 'off') else 'OFF'}")
        subprocess.check_call([cmake, *args])
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call([cmake, "--build", str(build_temp), "-j", jobs])
        if self.inplace:
            # setuptools copies only the extension it knows (_C) back into the source tree.
            for module in out_dir.glob("_cuda*.so"):
                shutil.copy2(module, ROOT / "pyfastcnn" / module.name)


setup(ext_modules=[CMakeExtension("pyfastcnn._C")], cmdclass={"build_ext": CMakeBuild})

"""Installs avgmm: GMM-guided adaptive loss for balanced audio-visual learning."""

import setuptools

# Everything a run needs; nothing here is pinned beyond the versions the project was
# tested with as a floor (jax 0.10 / flax 0.12 / orbax 0.12).
INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.12",
    "numpy>=1.26",
    "librosa>=0.10",
    # AVE's reference spectrogram recipe is scipy.signal.spectrogram itself.
    "scipy>=1.10",
    "soundfile>=0.12",
    # Audio from video containers (AVE's mp4): PyAV's wheels bundle FFmpeg, so no system
    # ffmpeg binary is needed.
    "av>=12",
    # Headless wheel: servers and CI have no GUI libraries (libGL), which the plain
    # opencv-python wheel needs at import time.
    "opencv-python-headless>=4.8",
    "tensorflow-datasets>=4.9.6",
    "array_record>=0.5",
    # tfds needs it (lazily) to locate builders that live in a package, like avsynth.
    "importlib_resources",
    "absl-py",
    "ml-collections>=0.1.1",
    "tqdm",
    # TensorBoard event files without TensorFlow.
    "tensorboardX>=2.6",
    "matplotlib>=3.7",
]

setuptools.setup(
    name="avgmm",
    version="0.1.0",
    description="GMM-guided adaptive loss for balanced audio-visual learning (JAX/Flax).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # configs/ holds config files loaded by path (--config=configs/crema.py), not a
    # package: a top-level `configs` package would collide with other projects'.
    packages=setuptools.find_packages(include=["avgmm", "avgmm.*", "data_prep", "data_prep.*"]),
    license="Apache-2.0",
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "cuda12": ["jax[cuda12]"],
        "test": ["pytest>=7", "scikit-learn>=1.3"],
        # benchmarks/train_step.py's PyTorch reference. Pinned: on the project's CPU
        # machines 2.13.0 is a local CPU wheel; an unpinned torch pulls a multi-GB CUDA
        # build. On a GPU machine install the CUDA torch of your choice instead.
        "bench": ["torch==2.13.0"],
    },
)

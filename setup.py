"""imagen-jax: Imagen and DALL-E 2 (unCLIP) in JAX/Flax, TPU-native."""

from setuptools import find_packages, setup

# Ranges are the ones the test suite runs against; the upper bounds keep a fresh
# install from picking up a major release with a changed API (jax.sharding, Flax
# linen, Orbax) before it has been tried.
INSTALL_REQUIRES = [
    "jax>=0.10,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.12,<0.13",
    "ml-collections>=1.0",
    "clu>=0.0.12",
    "sentencepiece>=0.2",
    # tfds and clu's metric writers need TensorFlow; the CPU build is enough for
    # tf.data and keeps a plain machine from downloading CUDA libraries.
    "tensorflow-cpu>=2.21,<2.22",
    "tensorflow-datasets>=4.9.9",
    # tfds imports it on every Python but declares it only for < 3.9
    # (tensorflow/datasets#11212): without it download_and_prepare fails.
    "importlib_resources",
    "tensorboard>=2.21",
    "numpy>=1.26",
    "pillow>=10",
    "tqdm>=4.66",
    "absl-py>=2.1",
    "scipy>=1.11",  # ShapesBench: connected components
    "tokenizers>=0.20",  # Hugging Face tokenizer.json (pretrained CLIP's BPE)
]

TEST_REQUIRES = [
    "pytest>=8",
    "pytest-xdist>=3.5",  # launch/test.sh: 2 workers, one test file each at a time
    # Property-based tests of the tokenizers and the prompt path (tests/hostile/test_properties.py).
    "hypothesis>=6.100",
    # Parity tests build small random PyTorch models with transformers. torch is
    # pinned to the CPU wheel the machines carry locally (pip finds it through
    # find-links); an unpinned torch would pull a multi-GB CUDA build from PyPI.
    "torch==2.13.0",
    "transformers>=5,<6",
    "safetensors>=0.4",
    # tests/diffusion/test_dpm_solver.py: DPM-Solver++ step for step against diffusers'
    # DPMSolverMultistepScheduler (the test uses only its scheduler, on CPU torch).
    "diffusers>=0.30,<1",
    # libtpu, the TPU compiler: tests/parallel/test_tpu_compile.py compiles a train step
    # for a TPU topology on a machine without one (benchmarks/tpu_compile.py's path).
    # The extra pins libtpu to the installed jax's release.
    "jax[tpu]>=0.10,<0.11",
    # tests/test_notebooks.py executes notebooks/ in a kernel.
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
]

setup(
    name="imagen-jax",
    version="0.1.0",
    description="Imagen and DALL-E 2 (unCLIP) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["imagen_jax", "imagen_jax.*", "unclip_jax", "unclip_jax.*",
                                    "configs", "configs.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)

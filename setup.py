"""Package definition for `alignment`.

The pins are the versions that were installed together and tested on the
2-core CPU machine (Python 3.11); BUILD_NOTES.md records them and why.
"""
import setuptools

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "ml-collections==1.1.0",
    "gin-config==0.5.0",
    "clu==0.0.12",
    "sentencepiece==0.2.3",
    "tensorboard==2.21.0",
    "matplotlib==3.11.2",
    "numpy==2.4.6",
    # Not 0.7.0: its import registers its ufunc loops in 0.7 s (numpy's PyUFunc_AddLoop
    # scans a ufunc's loops once per loop added), paid by every process; 0.6.0 takes
    # 0.01 s and has every dtype jax 0.10.2 and TensorFlow 2.21 use (BUILD_NOTES.md).
    "ml-dtypes==0.6.0",
    "pyarrow==26.0.1",
    "jinja2==3.1.6",
]

EXTRAS = {
    # The test extra carries the Hugging Face stack: parity tests need it.
    "test": ["pytest==9.2.0", "pytest-xdist==3.8.0"],
    # `pip install torch==2.13.0` takes the CPU wheel that lies on disk here.
    "hf": ["torch==2.13.0", "transformers==5.24.0", "safetensors==0.8.0"],
    # On a Cloud TPU VM: pip install -e '.[tpu]' (pulls libtpu for the same jax).
    "tpu": ["jax[tpu]==0.10.2"],
}

setuptools.setup(
    name="alignment",
    version="0.1.0",
    description="Online and offline preference optimisation in JAX/Flax, "
    "from a CPU test to a TPU pod slice.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["alignment", "alignment.*"]),
    package_data={"alignment": ["data/assets/*"]},
    install_requires=CORE,
    extras_require=EXTRAS,
)

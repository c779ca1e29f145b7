"""tasu: DeepSpeed-based distributed training of Speech LLMs."""

from setuptools import find_packages, setup

setup(
    name="tasu",
    version="0.1.0",
    description="Distributed training of Speech LLMs: CTC encoder -> projector -> LLM, text-only alignment (TASU)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tasu", "tasu.*"]),
    package_data={"tasu": ["config/presets/*.yaml", "text/*.jsonl", "assets/*", "assets/*/*"]},
    install_requires=[
        "torch==2.13.0",
        "deepspeed==0.19.8",
        "transformers==5.23.0",
        "peft==0.21.2",
        "webdataset==1.0.2",
        "sentencepiece==0.2.3",
        "jiwer==4.0.0",
        "rapidfuzz>=3",
        "sacrebleu>=2.4",
        "soundfile>=0.12",
        "safetensors>=0.4",
        "tokenizers>=0.21",
        "pyyaml>=6",
        "tqdm>=4.66",
        "tensorboard==2.21.0",
        "numpy>=1.26",
    ],
    extras_require={
        "dev": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6"],
        "triton": ["triton==3.9.0"],
        "demo": ["gguf>=0.10", "matplotlib>=3.8"],  # tasu demo: read SmolLM2's GGUF once; the loss-curve PNG
        "npu": ["torch-npu==2.13.0"],  # Ascend only; needs Huawei CANN; never installed by default
    },
    entry_points={"console_scripts": ["tasu=tasu.cli:main"]},
)

from setuptools import find_packages, setup

# Every folder of the library installs under one package, `epalm` (`epalm.models`, `epalm.training` ...), so that
# no generic top-level name (`models`, `dataset`, `training`) shadows a user's own packages or is shadowed by
# them (docs/architecture.md#packaging-one-package-epalm). The folders stay where the project's layout puts them.
HOMES = ["common", "models", "dataset", "training", "inference", "demo", "studies"]
packages = [f"epalm.{home}{'.' + sub if sub else ''}" for home in HOMES for sub in ["", *find_packages(home)]]

setup(
    name="epalm-trainer",
    version="0.1.0",
    description="Efficient perceptual augmentation of frozen language models (eP-ALM) trainer",
    python_requires=">=3.10",
    packages=packages,
    package_dir={f"epalm.{home}": home for home in HOMES},
    package_data={"epalm.models": ["architectures/*.json", "architectures/encoders/*.json", "demo_weights/**/*"]},
    install_requires=[
        # Floors, never pins: installed into an environment that has its own torch (a CUDA build, a cluster's
        # module), the project keeps it. torch 2.6 is what transformers 5 and accelerate 1.x ask for; timm
        # imports torchvision, which must come from the same index as torch (docs/installation.md: the
        # versions the tests ran on, and the CPU-only wheel that PyPI's torchvision does not import beside).
        "torch>=2.6",
        "torchvision>=0.21",
        "transformers>=5.0",
        "accelerate>=1.0",
        "timm>=1.0.3",  # VisionTransformer.forward_intermediates (tests/test_timm_loading.py runs 1.0.3)
        # LoRA on the LM (model.lm.train: lora); 0.21.2 is the version tested with transformers 5.24.
        "peft>=0.21",
        "safetensors",
        "tokenizers",
        "pyyaml",
        "numpy",
        "pillow",
        "tqdm",
        "av",
        "librosa",
        "pycocoevalcap",
        "matplotlib",
    ],
    # DeepSpeed is in the test extra so that its engine's checkpoints are tested (one CPU process), and so is
    # tensorboardX (90 kB and protobuf): the TensorBoard tracker's event files are read back by the tests.
    # `trackers` is what train.log_with needs (TensorBoard itself to view the logs; wandb, a 26 MB wheel,
    # whose offline-run test skips where it is not installed).
    # scikit-image (about 37 MB installed with imageio and tifffile; scipy, networkx and lazy_loader come with the
    # stack already) ships real photographs in its wheel: the tests save them in every image kind a user brings.
    # `web` is `main.py serve`'s page (Gradio, tested with 6.31); the test extra adds it and selenium so that the
    # browser test runs (docs/installation.md: their install time and size). `open_clip` serves the open_clip
    # image encoder (encoder type open_clip; 3.3.0 tested), in the test extra too: its tests must run, not skip.
    extras_require={"test": ["pytest", "deepspeed", "tensorboardX", "scikit-image>=0.22", "gradio>=6.0",
                             "selenium>=4.11", "open_clip_torch>=3.0"],
                    "deepspeed": ["deepspeed"], "trackers": ["tensorboard", "wandb"], "web": ["gradio>=6.0"],
                    "open_clip": ["open_clip_torch>=3.0"]},
)

"""jaxopt_lab: optimizer and LLM-training experiments in JAX."""

import setuptools

setuptools.setup(
    name="jaxopt_lab",
    version="0.1.0",
    description=(
        "Design and run optimizer experiments in JAX: whole hyperparameter sweeps "
        "as one compiled, vmapped program, with statistics and reports."
    ),
    packages=setuptools.find_packages(include=["jaxopt_lab", "jaxopt_lab.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.5.0,<0.11",
        "flax>=0.10.4,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11.0,<0.13",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "scikit-learn>=1.3,<2",
        "matplotlib>=3.8,<4",
        "absl-py>=2.0,<3",
        "ml_collections>=0.1.1,<2",
    ],
    extras_require={
        # BLEU and ROUGE-L of generated text (config.eval.generation); the tests cover them.
        "text": ["sacrebleu>=2.3,<3", "rouge-score>=0.1.2,<0.2"],
        # TensorBoard event files during training (config.train.tensorboard).
        "tb": ["tensorboardX>=2.6,<3"],
        # The 'optuna' design (config.sweep.design); its 'gp' sampler also needs torch.
        "optuna": ["optuna>=4.0,<6", "cmaes>=0.10,<1"],
        "test": ["pytest>=8,<10", "ruff>=0.6,<1", "sacrebleu>=2.3,<3", "rouge-score>=0.1.2,<0.2",
                 "tensorboardX>=2.6,<3", "optuna>=4.0,<6", "cmaes>=0.10,<1"],
        # Only for the optional PyTorch baselines in benchmarks/ (torch.nn.RMSNorm: 2.4).
        "bench": ["torch>=2.4"],
    },
)

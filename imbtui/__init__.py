"""imbtui: a terminal workbench for how class imbalance shapes the learning dynamics of networks."""

__version__ = "0.1.0"

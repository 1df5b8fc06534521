"""Everything that trains: datasets and imbalance, models, losses, per-class dynamics, the loop.

No Textual here; the store is reached only through the sink interface (trainer.sink).
"""

"""QLoRA fine-tuning, generation and evaluation of structured summaries of long psychological-counselling case reports (LongEmotion Emotion Summary).

Modules:

- `emosum.experiments`: Cross-validated recipes: k-fold out-of-fold predictions for every record, metrics with bootstrap CIs, a paired comparison between recipes, and a leaderboard of what has been tried.
- `emosum.training`: LoRA on a 4-bit (or 8-bit, or unquantised) base: model preparation, supervised examples, the `Trainer` loop with resumable checkpoints, the answer-only fast path, and the adapter export."""

__version__ = "0.0.1"
